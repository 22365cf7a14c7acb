import type { Logger } from '../../shared/logger.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  retain: boolean;
}

/**
 * A publish handed to OrderedPublisher: its payload, or a function that makes it when the
 * message's turn comes (a wave's signed desired states: desired-publisher.ts). Deferred payloads
 * are made as messages take their slots (at most `window` in flight, plus what waits behind its
 * topic's previous message, plus the rest of the batch of 1,024 being signed), so a wave's memory
 * is bounded by the window, not by the size of the fleet.
 */
export interface QueuedPublish {
  topic: string;
  payload: Buffer | (() => Buffer);
  retain: boolean;
}

/** What publish() handed over together, resolved once its last message settled. */
interface Batch {
  left: number;
  resolve: () => void;
}

interface Entry {
  message: QueuedPublish;
  batch: Batch;
}

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
 * messages beyond it wait as one small entry each (their deferred payloads not yet made), taken
 * in handover order as slots free. The answers of a wave's devices are taken in bounded turns by
 * the broker (IngestGate, service.ts), which is what keeps sending it all at once within the
 * memory budget. mqemitter runs without a queue (create-broker.ts), so no window is needed
 * against its queue's recursion.
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
 * both.)
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
  /** Per topic with a message queued or in flight: the later ones, waiting for it (FIFO). */
  private readonly behind = new Map<string, Entry[]>();
  private active = 0;
  private flow: PublishFlow | null = null;
  private waitingForFlow = false;

  constructor(
    private readonly send: (message: OutgoingPublish) => Promise<void>,
    private readonly logger: Logger,
    private readonly window = 10_000,
    private readonly order: PublishOrder = 'per-topic',
  ) {}

  /** From now on, messages take their slots only while `flow` is open (null: whenever a slot is free). */
  useFlow(flow: PublishFlow | null): void {
    this.flow = flow;
    this.pump();
  }

  /** Resolves when every message has been handed to the broker (or its failure logged). */
  publish(messages: readonly QueuedPublish[]): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const batch: Batch = { left: messages.length, resolve };
      for (const message of messages) {
        const entry = { message, batch };
        if (this.order === 'connection' && !message.retain) {
          this.ready.push(entry);
          continue;
        }
        const later = this.behind.get(message.topic);
        if (later) later.push(entry);
        else {
          this.behind.set(message.topic, []);
          this.ready.push(entry);
        }
      }
      this.pump();
    });
  }

  /** Topics with a publish queued or in flight, in per-topic order (for tests and shutdown diagnostics). */
  get pendingTopics(): number {
    return this.behind.size;
  }

  /** Messages handed over and not settled yet (queued or in flight). */
  get pending(): number {
    return (
      this.active + this.ready.length - this.readyHead + [...this.behind.values()].reduce((n, l) => n + l.length, 0)
    );
  }

  /** Starts ready messages while fewer than `window` are in flight and the flow is open (first come, first served). */
  private pump(): void {
    while (this.active < this.window && this.readyHead < this.ready.length) {
      if (this.flow && !this.flow.open()) {
        this.waitForFlow(this.flow);
        break;
      }
      const entry = this.ready[this.readyHead] as Entry;
      this.readyHead++;
      this.active++;
      this.start(entry);
    }
    // Taken entries are dropped in one step once they are most of the array (amortised O(1)).
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
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
    const { topic, payload, retain } = entry.message;
    let sent: Promise<void>;
    try {
      sent = this.send({ topic, payload: typeof payload === 'function' ? payload() : payload, retain });
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent
      .catch((err: unknown) => {
        this.logger.error({ topic, err: (err as Error).message }, 'publish failed');
      })
      .then(() => this.settled(entry));
  }

  private settled(entry: Entry): void {
    this.active--;
    if (this.order === 'connection' && !entry.message.retain) {
      this.done(entry);
      return;
    }
    const topic = entry.message.topic;
    const later = this.behind.get(topic);
    const next = later?.shift();
    // The next message of this topic queues behind whatever is ready now, as it did when it was
    // handed over behind this one.
    if (next) this.ready.push(next);
    else this.behind.delete(topic);
    this.done(entry);
  }

  private done(entry: Entry): void {
    if (--entry.batch.left === 0) entry.batch.resolve();
    this.pump();
  }
}
