import type { Logger } from '../../shared/logger.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  retain: boolean;
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
 * 1.2-1.4 s (BENCHMARKS.md, "bigwave"). The window still bounds the memory of what is in flight
 * for larger fleets; the answers of a wave's devices are taken in bounded turns by the broker
 * (IngestGate, service.ts), which is what keeps sending it all at once within the memory budget.
 * mqemitter runs without a queue (create-broker.ts), so no window is needed against its
 * queue's recursion.
 */
export class OrderedPublisher {
  /** The last publish handed over per topic, until it settles. */
  private readonly tails = new Map<string, Promise<void>>();
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly send: (message: OutgoingPublish) => Promise<void>,
    private readonly logger: Logger,
    private readonly window = 10_000,
  ) {}

  /** Resolves when every message has been handed to the broker (or its failure logged). */
  publish(messages: readonly OutgoingPublish[]): Promise<void> {
    return Promise.all(messages.map((m) => this.one(m))).then(() => undefined);
  }

  private one(message: OutgoingPublish): Promise<void> {
    const run = (): Promise<void> =>
      this.withSlot(() => this.send(message)).catch((err: unknown) => {
        this.logger.error({ topic: message.topic, err: (err as Error).message }, 'publish failed');
      });
    const previous = this.tails.get(message.topic);
    const mine = previous ? previous.then(run) : run();
    this.tails.set(message.topic, mine);
    void mine.then(() => {
      if (this.tails.get(message.topic) === mine) this.tails.delete(message.topic);
    });
    return mine;
  }

  /** Runs `fn` when fewer than `window` sends are in flight (first come, first served). */
  private async withSlot(fn: () => Promise<void>): Promise<void> {
    // A finishing send hands its slot straight to the next waiter, so `active` never exceeds
    // `window`, even when new callers arrive before the waiter resumes.
    if (this.active >= this.window) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Topics with a publish in flight (for tests and shutdown diagnostics). */
  get pendingTopics(): number {
    return this.tails.size;
  }
}
