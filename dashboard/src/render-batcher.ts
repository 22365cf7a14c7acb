/**
 * Draws at most once per `intervalMs` (design section 10: a frame at most every 250 ms), however
 * many messages arrive: a wave of thousands of reports becomes a few renders, never a frozen page.
 * Nothing runs while nothing changes (no polling loop): a change schedules one timer, and the
 * render it fires draws everything that changed meanwhile. The timer functions are passed in so
 * the node tests drive it with a fake clock.
 */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The page's own clock and timers, for every batcher and throttle it runs. */
export const REAL_TIMERS: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export class RenderBatcher {
  private timer: unknown = null;
  private last = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly render: () => void,
    private readonly timers: Timers,
    readonly intervalMs = 250,
  ) {}

  /** Something changed: draw soon, and no sooner than `intervalMs` after the last draw. */
  schedule(): void {
    if (this.timer !== null) return;
    const wait = Math.max(0, this.last + this.intervalMs - this.timers.now());
    this.timer = this.timers.setTimeout(() => this.fire(), wait);
  }

  private fire(): void {
    this.timer = null;
    this.last = this.timers.now();
    this.render();
  }

  /** Stops a pending draw (sign-out). */
  cancel(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }
}
