import type { Logger } from '../../shared/logger.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  retain: boolean;
}

/**
 * Messages made one at a time as they take their slots: a wave's signed desired states
 * (desired-publisher.ts). The publisher holds the list as one object, asks a message's topic when
 * the list is handed over (for its topic's order) and its payload when the message takes a slot,
 * so a queued wave costs what the list keeps per device (its id, seq and shared models), not a
 * queue entry, a closure and an assembled state each (~0.5 KB a device, 22 MB of a 50,000-device
 * wave in a heap snapshot: BENCHMARKS.md, 2026-12-07 "the wave in its own lane").
 */
export interface DeferredMessages {
  readonly length: number;
  /** Every message of the list is retained, or none. */
  readonly retain: boolean;
  topic(index: number): string;
  /** Asked once per index, when that message takes its slot (any order); throws: the message failed, logged. */
  payload(index: number): Buffer;
}

/** What publish() handed over together, resolved once its last message settled. */
interface Batch {
  left: number;
  resolve: () => void;
}

/** A message waiting for a slot: given whole, or the `index`-th of a deferred list. */
class Entry {
  constructor(
    readonly batch: Batch,
    readonly message: OutgoingPublish | null,
    readonly list: DeferredMessages | null,
    readonly index: number,
  ) {}

  get topic(): string {
    return this.message ? this.message.topic : (this.list as DeferredMessages).topic(this.index);
  }

  get retain(): boolean {
    return this.message ? this.message.retain : (this.list as DeferredMessages).retain;
  }
}

/** A large deferred list in the wave lane: taken from `next` on, except what waits behind its topic. */
interface Run {
  list: DeferredMessages;
  batch: Batch;
  next: number;
  /** Messages not taken yet and not waiting behind their topic. */
  left: number;
  /**
   * Indexes not to take from the list: handed over behind an earlier message of their topic (they
   * go out from there), or whose topic could not be named (failed at handover).
   */
  skip: Set<number> | null;
}

/**
 * A deferred list at least this long goes into the wave lane (order 'connection'); a shorter one
 * is queued message by message with everything else, so a single device's desired state never
 * waits behind a wave.
 */
export const WAVE_LANE_MIN = 256;

/**
 * The coordinator's own publishes: messages to different topics go out concurrently (at most
 * `window` at once), messages to the same topic strictly in the order they were handed over.
 *
 * Why both: a 9,000-device wave is 9,000 desired states, and awaiting each before the next took
 * 99 s at 10,000 devices (BENCHMARKS.md); but a retained topic keeps the LAST message the broker
 * stored, so an older rollout summary must never land after a newer one (decisions publish after
 * their commit without waiting for each other), and audit events keep their chain order.
 * A failed publish is logged and does not hold back later messages of its topic.
 *
 * Why a window of 10,000 (a whole 9,000-device wave at once): a slot frees only on the turn of
 * the event loop after the write (Aedes completes a delivery with setImmediate), and every turn
 * between two slot refills also ingests the reports that arrived meanwhile: at 50 a 9,000-device
 * wave took 5.6 s to go out while its devices reported, at 3,000 (three turns) 3.3 s, at once
 * 1.2-1.4 s (BENCHMARKS.md, "bigwave"). The window bounds what is in flight for larger fleets:
 * messages beyond it wait unmade (their deferred payloads not signed yet: a small entry each, or
 * a wave's list), taken in handover order as slots free. The answers of a wave's devices are
 * taken in bounded turns by the broker (IngestGate, service.ts), which is what keeps sending it
 * all at once within the memory budget. mqemitter runs without a queue (create-broker.ts), so no
 * window is needed against its queue's recursion.
 *
 * Two lanes: a large deferred list (a wave) waits in its own lane, and slots go to the two lanes
 * in turn. Everything else (rollout summaries, audit events, a single device's desired state) is
 * handed over while a wave goes out, most of it caused by the wave's own answers; in one queue
 * behind a 45,000-device wave it waited the ~30 s the wave takes through Mosquitto, 31,000 audit
 * events deep (31 MB of payloads, a heap snapshot found: BENCHMARKS.md, 2026-12-07 "the wave in
 * its own lane"). A topic's order holds across the lanes: it is registered when the message is
 * handed over, whichever lane it waits in. Across topics nothing is promised, so a wave's own
 * summary and audit events may go out before its last desired states. Through an external broker
 * only (`order: 'connection'`): with the embedded broker a topic's messages go one at a time
 * anyway (the audit topic too), and the lane raised the coordinator's peak at 10,000 devices by
 * ~10 MB (394.7-402.9 MB in 4 runs, 380.7 and 389.1 without it) for no faster wave; there a
 * wave's messages are queued one small entry each, in handover order with the rest.
 *
 * `order: 'connection'` (an external broker, the coordinator one client of it): the order of a
 * topic's messages that are not retained is kept by the protocol, not by waiting. They are written
 * in handover order onto one connection, which the broker must deliver in that order to a topic's
 * subscribers (MQTT 3.1.1 section 4.6, "Ordered Topic"), and the client re-sends unacknowledged ones
 * in their original order after a reconnect (same section). Waiting for each PUBACK before the
 * next message of the topic held the audit topic to one event per round trip: a 45,000-device
 * wave's `rollout.device_outcome` events queued ~50,000 deep (~50 MB) behind Mosquitto's answers.
 * Retained messages still wait for the one before on their topic: section 4.6 speaks of delivery
 * to subscribers, not of which message a broker (or a cluster's nodes) keeps as the retained one;
 * a wave has one message per desired topic, so that costs it nothing. (No topic of ours carries
 * both.) And a retained message still waiting for the one before is replaced by a newer one of its
 * topic (waitBehind), in either order.
 */
export type PublishOrder = 'per-topic' | 'connection';

/**
 * Whether the transport under `send` takes another message now (an external broker's socket:
 * socket-flow.ts). While it does not, messages wait here as small entries (their deferred
 * payloads not made) instead of as the socket's buffered chunks, where a heap snapshot at 50,000
 * devices found 72 MB of heap and 41 MB of Buffers (BENCHMARKS.md, 2026-12-07 "memory at 50,000").
 */
export interface PublishFlow {
  open(): boolean;
  /** Calls `resume` once, later (never synchronously), when `open()` may have turned true. */
  whenOpen(resume: () => void): void;
}

export class OrderedPublisher {
  /** Entries whose topic has nothing before them, in the order they may take a slot. */
  private ready: Entry[] = [];
  private readyHead = 0;
  /** The wave lane: large deferred lists, in handover order. */
  private readonly runs: Run[] = [];
  /** Whether the wave lane has the next slot when both lanes have a message. */
  private runsNext = false;
  /**
   * Per topic with a message queued or in flight, in per-topic order: the later ones, waiting for
   * it (FIFO); null while there are none (a wave registers every one of its topics).
   */
  private readonly behind = new Map<string, Entry[] | null>();
  private active = 0;
  private flow: PublishFlow | null = null;
  private waitingForFlow = false;

  /**
   * `send` hands a message to the broker and calls `done` once, when the broker has it (QoS 1:
   * its PUBACK) or it failed. A callback, not a promise: a message in flight then costs one
   * closure here, where mqtt.js's publishAsync and two chained promises held four promises, three
   * reactions and six closures each, ~1.1 KB of heap (14 MB for a window of 10,000 in a snapshot
   * at 50,000 devices: BENCHMARKS.md, 2026-12-07 "the wave in its own lane").
   */
  constructor(
    private readonly send: (message: OutgoingPublish, done: (err?: Error | null) => void) => void,
    private readonly logger: Logger,
    private readonly window = 10_000,
    private readonly order: PublishOrder = 'per-topic',
  ) {}

  /** From now on, messages take their slots only while `flow` is open (null: whenever a slot is free). */
  useFlow(flow: PublishFlow | null): void {
    this.flow = flow;
    this.pump();
  }

  /**
   * Resolves when every message has been handed to the broker (or its failure logged): `deferred`'s
   * (a wave's desired states, made as they take their slots), then `messages`, in that order where
   * they share a topic.
   */
  publish(messages: readonly OutgoingPublish[], deferred?: DeferredMessages): Promise<void> {
    const count = messages.length + (deferred?.length ?? 0);
    if (count === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const batch: Batch = { left: count, resolve };
      if (deferred && deferred.length >= WAVE_LANE_MIN && this.order === 'connection') this.queueRun(deferred, batch);
      else if (deferred) for (let i = 0; i < deferred.length; i++) this.queue(new Entry(batch, null, deferred, i));
      for (const message of messages) this.queue(new Entry(batch, message, null, 0));
      this.pump();
    });
  }

  /** Topics with a publish queued or in flight, in per-topic order (for tests and shutdown diagnostics). */
  get pendingTopics(): number {
    return this.behind.size;
  }

  /** Messages handed over and not settled yet (queued or in flight). */
  get pending(): number {
    let n = this.active + this.ready.length - this.readyHead;
    for (const run of this.runs) n += run.left;
    for (const later of this.behind.values()) n += later?.length ?? 0;
    return n;
  }

  /** Whether `retain`ed messages of a topic wait for the one before (see PublishOrder). */
  private ordered(retain: boolean): boolean {
    return this.order === 'per-topic' || retain;
  }

  /** Into the ready queue, or behind its topic's previous message. */
  private queue(entry: Entry): void {
    if (!this.ordered(entry.retain)) {
      this.ready.push(entry);
      return;
    }
    let topic: string;
    try {
      topic = entry.topic;
    } catch (err) {
      this.unnamed(entry.batch, entry.index, err);
      return;
    }
    if (this.claim(topic)) this.ready.push(entry);
    else this.waitBehind(topic, entry);
  }

  /**
   * Behind the topic's message queued or in flight. A retained message waiting there that was not
   * sent yet is superseded by a newer retained one: dropped (settled), never made or sent. Why: a
   * retained topic carries a state (a rollout's summary, the fleet summary, a device's desired
   * state), and a subscriber needs its newest; each one waited for the PUBACK of the one before,
   * which through a busy external broker comes behind everything written before it (a wave's
   * desired states), so a chain of summaries reached subscribers seconds after the coordinator
   * decided (up to 9 s at 10,000 devices through Mosquitto: BENCHMARKS.md, 2026-12-07 "late
   * night"). Now a topic has at most one message in flight and one waiting, the newest.
   * Messages that are not retained (the audit chain) are never dropped.
   */
  private waitBehind(topic: string, entry: Entry): void {
    const later = this.later(topic);
    const last = later.length - 1;
    const waiting = later[last];
    if (waiting?.retain && entry.retain) {
      later[last] = entry;
      this.finish(waiting.batch);
      return;
    }
    later.push(entry);
  }

  /** Registers a wave's topics now (their order against later messages), its messages stay in the list. */
  private queueRun(list: DeferredMessages, batch: Batch): void {
    const run: Run = { list, batch, next: 0, left: list.length, skip: null };
    const skip = (i: number) => {
      run.skip ??= new Set();
      run.skip.add(i);
      run.left--;
    };
    if (this.ordered(list.retain)) {
      for (let i = 0; i < list.length; i++) {
        let topic: string;
        try {
          topic = list.topic(i);
        } catch (err) {
          skip(i);
          this.unnamed(batch, i, err);
          continue;
        }
        if (this.claim(topic)) continue;
        skip(i);
        this.waitBehind(topic, new Entry(batch, null, list, i));
      }
    }
    if (run.left > 0) this.runs.push(run);
  }

  /** A message whose topic could not be named at handover fails alone, as one whose payload cannot be made does. */
  private unnamed(batch: Batch, index: number, err: unknown): void {
    this.logger.error({ index, err: (err as Error).message }, 'publish failed');
    this.finish(batch);
  }

  /** True when `topic` had nothing queued or in flight (it has now). */
  private claim(topic: string): boolean {
    if (this.behind.has(topic)) return false;
    this.behind.set(topic, null);
    return true;
  }

  private later(topic: string): Entry[] {
    let later = this.behind.get(topic);
    if (!later) {
      later = [];
      this.behind.set(topic, later);
    }
    return later;
  }

  /** Starts ready messages while fewer than `window` are in flight and the flow is open (first come, first served). */
  private pump(): void {
    while (this.active < this.window) {
      const fromRuns = this.runs.length > 0 && (this.runsNext || this.readyHead === this.ready.length);
      if (!fromRuns && this.readyHead === this.ready.length) break;
      if (this.flow && !this.flow.open()) {
        this.waitForFlow(this.flow);
        break;
      }
      let entry: Entry;
      if (fromRuns) entry = this.takeFromRun(this.runs[0] as Run);
      else {
        entry = this.ready[this.readyHead] as Entry;
        this.readyHead++;
      }
      this.runsNext = !fromRuns;
      this.active++;
      this.start(entry);
    }
    // Taken entries are dropped in one step once they are most of the array (amortised O(1)).
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
  }

  private takeFromRun(run: Run): Entry {
    while (run.skip?.has(run.next)) run.next++;
    const entry = new Entry(run.batch, null, run.list, run.next);
    run.next++;
    if (--run.left === 0) this.runs.shift();
    return entry;
  }

  private waitForFlow(flow: PublishFlow): void {
    if (this.waitingForFlow) return;
    this.waitingForFlow = true;
    flow.whenOpen(() => {
      this.waitingForFlow = false;
      this.pump();
    });
  }

  private start(entry: Entry): void {
    let topic = '';
    // A transport that answers at once (a failure, or a test's) is settled on the next microtask,
    // so pump() is never re-entered from inside its own loop. A second call (a transport's bug)
    // is ignored: the slot was freed once.
    let inside = true;
    let called = false;
    const done = (err?: Error | null) => {
      if (called) return;
      called = true;
      if (inside) queueMicrotask(() => this.settled(entry, topic, err));
      else this.settled(entry, topic, err);
    };
    try {
      topic = entry.topic;
      this.send(
        entry.message ?? {
          topic,
          payload: (entry.list as DeferredMessages).payload(entry.index),
          retain: entry.retain,
        },
        done,
      );
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)));
    }
    inside = false;
  }

  private settled(entry: Entry, topic: string, err: Error | null | undefined): void {
    if (err) this.logger.error({ topic, err: err.message }, 'publish failed');
    this.active--;
    if (this.ordered(entry.retain)) {
      const later = this.behind.get(topic);
      const next = later?.shift();
      // The next message of this topic queues behind whatever is ready now, as it did when it was
      // handed over behind this one.
      if (next) {
        this.ready.push(next);
        if (later?.length === 0) this.behind.set(topic, null);
      } else this.behind.delete(topic);
    }
    this.finish(entry.batch);
    this.pump();
  }

  /** One message of `batch` settled (sent, failed, or dropped). */
  private finish(batch: Batch): void {
    if (--batch.left === 0) batch.resolve();
  }

  /**
   * Drops every message not handed to the transport yet, each settled as not published, and says
   * how many in one log line (shutdown: the connection is closing and would fail each of them,
   * after signing it). What is in flight settles as the transport says. Returns the count.
   */
  abandon(why: string): number {
    let dropped = 0;
    const drop = (batch: Batch) => {
      dropped++;
      this.finish(batch);
    };
    // A message that is ready, or in the wave lane, holds its topic's place with nothing of the
    // topic in flight: the topic is free again once it is dropped.
    const free = (topic: () => string) => {
      try {
        this.behind.delete(topic());
      } catch {
        // its topic could not be named at handover either: it was never registered
      }
    };
    for (const [topic, later] of this.behind) {
      if (!later) continue;
      for (const entry of later) drop(entry.batch);
      this.behind.set(topic, null);
    }
    for (let i = this.readyHead; i < this.ready.length; i++) {
      const entry = this.ready[i] as Entry;
      if (this.ordered(entry.retain)) free(() => entry.topic);
      drop(entry.batch);
    }
    this.ready = [];
    this.readyHead = 0;
    for (const run of this.runs.splice(0)) {
      for (let i = run.next; i < run.list.length; i++) {
        if (run.skip?.has(i)) continue;
        if (this.ordered(run.list.retain)) free(() => run.list.topic(i));
        drop(run.batch);
      }
    }
    if (dropped > 0) this.logger.warn({ messages: dropped, why }, 'messages dropped, not published');
    return dropped;
  }
}
