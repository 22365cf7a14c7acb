/**
 * Runs `flush` soon after work was queued, but at most once per `minIntervalMs` (group commit).
 *
 * Why: every flush of queued device events is one SQLite transaction, and most are durable (an
 * fsync on the coordinator's one thread) and publish a rollout summary. Flushing on every turn of
 * the event loop made a 9,000-device wave hundreds of small transactions per second while the
 * wave's desired states were still going out (BENCHMARKS.md, "bigwave"). Spacing them keeps the
 * batches large under load; when the coordinator was quiet for `minIntervalMs` the flush runs on
 * the next turn, so a lone report (a canary failing) is decided as fast as before.
 */
/** The timers PacedFlush waits with (injectable: tests drive time themselves). */
export interface PacedTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const REAL_TIMERS: PacedTimers = {
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export class PacedFlush {
  private timer: unknown = null;
  private immediate: NodeJS.Immediate | null = null;
  private lastStartedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly flush: () => void,
    private readonly minIntervalMs: number,
    private readonly nowMs: () => number,
    private readonly timers: PacedTimers = REAL_TIMERS,
  ) {}

  /**
   * Work was queued: flush on the next turn, or when `minIntervalMs` has passed since the last
   * flush. `urgent` work (a device failing: the halt rule must not wait) goes on the next turn.
   */
  schedule(urgent = false): void {
    if (this.immediate) return;
    if (this.timer) {
      if (!urgent) return;
      this.timers.clearTimeout(this.timer);
      this.timer = null;
    }
    const wait = urgent ? 0 : this.lastStartedAt + this.minIntervalMs - this.nowMs();
    if (wait > 0) {
      this.timer = this.timers.setTimeout(() => this.run(), wait);
    } else {
      this.immediate = setImmediate(() => this.run());
    }
  }

  /** Flushes now (an operator's command must see every queued event; shutdown). */
  run(): void {
    this.cancel();
    this.lastStartedAt = this.nowMs();
    this.flush();
  }

  /** Flushes now if a flush is scheduled (before a read that must see the queued work). */
  runIfScheduled(): void {
    if (this.timer || this.immediate) this.run();
  }

  /** Drops a scheduled flush (the caller flushes itself, or stops). */
  cancel(): void {
    if (this.timer) this.timers.clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
  }
}
