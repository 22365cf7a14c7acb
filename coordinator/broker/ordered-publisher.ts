import type { Logger } from '../../shared/logger.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  retain: boolean;
}

/**
 * The coordinator's own publishes: messages to different topics go out concurrently, messages to
 * the same topic strictly in the order they were handed over.
 *
 * Why both: a 9,000-device wave is 9,000 desired states, and awaiting each before the next took
 * 99 s at 10,000 devices (BENCHMARKS.md); but a retained topic keeps the LAST message the broker
 * stored, so an older rollout summary must never land after a newer one (decisions publish after
 * their commit without waiting for each other), and audit events keep their chain order.
 * A failed publish is logged and does not hold back later messages of its topic.
 */
export class OrderedPublisher {
  /** The last publish handed over per topic, until it settles. */
  private readonly tails = new Map<string, Promise<void>>();

  constructor(
    private readonly send: (message: OutgoingPublish) => Promise<void>,
    private readonly logger: Logger,
  ) {}

  /** Resolves when every message has been handed to the broker (or its failure logged). */
  publish(messages: readonly OutgoingPublish[]): Promise<void> {
    return Promise.all(messages.map((m) => this.one(m))).then(() => undefined);
  }

  private one(message: OutgoingPublish): Promise<void> {
    const run = (): Promise<void> =>
      this.send(message).catch((err: unknown) => {
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

  /** Topics with a publish in flight (for tests and shutdown diagnostics). */
  get pendingTopics(): number {
    return this.tails.size;
  }
}
