import { encodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import type { OutgoingPublish } from '../broker/ordered-publisher.js';
import { PacedFlush, type PacedTimers } from '../paced-flush.js';
import type { FleetTally } from './fleet-tally.js';

/** The fleet summary goes out at most this often while the fleet changes (docs/protocol.md). */
export const FLEET_SUMMARY_EVERY_MS = 1_000;

export interface FleetSummaryPublisherDeps {
  tally: FleetTally;
  topics: Topics;
  /** Summaries are made when due, never deferred. */
  publish: (messages: OutgoingPublish[]) => Promise<void>;
  now: () => Date;
  /** At most one summary per this many ms (default FLEET_SUMMARY_EVERY_MS); the next turn when quiet. */
  everyMs?: number | undefined;
  timers?: PacedTimers | undefined;
}

/**
 * Publishes the tally's summary retained on `ota/v1/fleet` (FleetSummarySchema) when it changed,
 * at most once per `everyMs`: a wave's 45,000 reports and presence messages become about one
 * message a second for the dashboard, encoded once per publish, never per report.
 */
export class FleetSummaryPublisher {
  private readonly pacer: PacedFlush;
  private publishedVersion = Number.NaN;
  private stopped = false;

  constructor(private readonly deps: FleetSummaryPublisherDeps) {
    this.pacer = new PacedFlush(
      () => void this.send(false),
      deps.everyMs ?? FLEET_SUMMARY_EVERY_MS,
      () => deps.now().getTime(),
      deps.timers,
    );
  }

  /** A count changed (the tally said so): publish soon. */
  changed(): void {
    // After stop: the broker is closing, and its devices' disconnects still move the counts.
    if (!this.stopped) this.pacer.schedule();
  }

  /**
   * Publishes the summary now, changed or not: at start, after the other retained state, so a
   * page that subscribes gets one even when nothing moves (the broker keeps retained messages in
   * memory only).
   */
  publishNow(): Promise<void> {
    this.pacer.cancel();
    return this.send(true);
  }

  /** Drops a scheduled publish and any later one (on the way out: the retained summary dies with the broker). */
  stop(): void {
    this.stopped = true;
    this.pacer.cancel();
  }

  private send(always: boolean): Promise<void> {
    const { tally, topics, publish, now } = this.deps;
    if (!always && tally.version === this.publishedVersion) return Promise.resolve();
    this.publishedVersion = tally.version;
    const summary = tally.summary(now().toISOString());
    return publish([{ topic: topics.fleet(), payload: encodePayload(summary), retain: true }]);
  }
}
