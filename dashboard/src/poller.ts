import type { Timers } from './render-batcher.js';

/**
 * Runs a task now and then again `intervalMs` after each run settles, until stopped: what a view
 * that has no live topic to follow (an experiment's comparison, which the coordinator computes on
 * request) uses while it is on screen. Never two runs at once: a run slower than the interval
 * delays the next one rather than stacking requests on a slow coordinator. `poke` runs it at once
 * (an audit event said something changed), or right after the run on its way. The timers are
 * passed in so the node tests drive it with a fake clock.
 *
 * One use: `start` once, `stop` once (a view makes a new one when it mounts).
 */
export class Poller {
  private timer: unknown = null;
  private running = false;
  private again = false;
  private state: 'new' | 'started' | 'stopped' = 'new';

  constructor(
    private readonly task: () => Promise<void>,
    private readonly timers: Timers,
    readonly intervalMs: number,
  ) {}

  start(): void {
    if (this.state !== 'new') return;
    this.state = 'started';
    this.run();
  }

  /** Runs the task now, or as soon as the run on its way settles. */
  poke(): void {
    if (this.state !== 'started') return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.clear();
    this.run();
  }

  /** No run after this one; a run on its way settles without a successor. */
  stop(): void {
    this.state = 'stopped';
    this.again = false;
    this.clear();
  }

  /** Whether a run is on its way (for the tests). */
  get busy(): boolean {
    return this.running;
  }

  private clear(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private run(): void {
    this.running = true;
    let settled: Promise<void>;
    try {
      settled = this.task();
    } catch (err) {
      settled = Promise.reject(err);
    }
    // The task reports its own errors (the view shows them); a failed run is retried like any.
    settled
      .catch(() => {})
      .then(() => {
        this.running = false;
        if (this.state !== 'started') return;
        if (this.again) {
          this.again = false;
          this.run();
          return;
        }
        this.timer = this.timers.setTimeout(() => {
          this.timer = null;
          this.run();
        }, this.intervalMs);
      });
  }
}
