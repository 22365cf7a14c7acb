import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { encodePayload } from '../../shared/payload.js';
import { type AgentConfig, MAX_SOCKET_PATH_BYTES } from '../config.js';
import { MetricsOutbox } from './metrics-outbox.js';
import { listenMetricsSocket, type MetricsSocket } from './metrics-socket.js';
import { WindowAggregator } from './window-aggregator.js';

/** After a summary was not acknowledged, the next try waits this long, doubling up to the max. */
export const SEND_RETRY_MIN_MS = 30_000;
export const SEND_RETRY_MAX_MS = 30 * 60_000;

export interface MetricsTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers, unref'd: a pending window or retry never keeps a stopping agent alive. */
const REAL_TIMERS: MetricsTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface AgentMetricsDeps {
  config: AgentConfig['metrics'];
  stateDir: string;
  logger: Logger;
  now: () => Date;
  /** Versions of a model an application may be running now (AgentRuntime.knownVersions). */
  knownVersions: (model: string) => ReadonlySet<string> | undefined;
  /** Publishes a summary; resolves on the broker's PUBACK (AgentRuntime.publishMetrics). */
  publish: (payload: Buffer) => Promise<void>;
  isConnected: () => boolean;
  timers?: MetricsTimers;
  /** In [0, 1): the retry jitter (Math.random by default). */
  random?: () => number;
}

/**
 * Device metrics on the agent (docs/metrics.md): the socket applications report to, the window
 * they are summarised over, and the durable outbox the summaries leave through.
 *
 * - A window closes every `windowSeconds`, aligned to the wall clock (a device's windows start on
 *   the same seconds as the fleet's), whatever the sending does: its summary goes to the outbox
 *   (tmp, fsync, rename) before anything is sent, so a kill -9 loses at most the open window.
 * - The oldest summary is published and removed from the outbox only once the broker acknowledged
 *   it; the coordinator acknowledges after it stored it.
 * - A summary that was not acknowledged (the link dropped, or the coordinator refused it, which
 *   closes the connection: MQTT 3.1.1 has no negative PUBACK) is tried again after a backoff of
 *   its own, 30 s doubling to 30 min (each +-50%), reset by the next acknowledgement: a coordinator that cannot
 *   store metrics must not cut a fleet's control channel once a second.
 * - A clean stop closes the open window into the outbox and does not wait for a publish.
 */
export class AgentMetrics {
  private readonly aggregator = new WindowAggregator();
  private readonly outbox: MetricsOutbox;
  private socket: MetricsSocket | null = null;
  private windowStart: Date;
  private windowTimer: unknown = null;
  private retryTimer: unknown = null;
  private retryMs = SEND_RETRY_MIN_MS;
  private sending = false;
  private stopped = false;
  private readonly timers: MetricsTimers;
  private readonly random: () => number;

  constructor(private readonly deps: AgentMetricsDeps) {
    this.outbox = new MetricsOutbox({
      dir: path.join(deps.stateDir, 'metrics-outbox'),
      maxWindows: deps.config.maxPendingWindows,
      logger: deps.logger,
    });
    this.windowStart = deps.now();
    this.timers = deps.timers ?? REAL_TIMERS;
    this.random = deps.random ?? Math.random;
  }

  async start(): Promise<void> {
    // A default under a deep state directory can be too long for sun_path (unix(7)); say so
    // instead of letting the kernel refuse it with EINVAL.
    if (Buffer.byteLength(this.deps.config.socket) > MAX_SOCKET_PATH_BYTES) {
      throw new OtaError(
        'E_CONFIG',
        `metrics socket ${this.deps.config.socket} is longer than a Unix socket path may be (${MAX_SOCKET_PATH_BYTES} bytes); set "metrics.socket" in the agent config to a shorter path`,
      );
    }
    await this.outbox.init();
    this.socket = await listenMetricsSocket({
      path: this.deps.config.socket,
      context: {
        knownVersions: (model) => this.deps.knownVersions(model),
        declaredValues: new Set(this.deps.config.values),
      },
      sink: this.aggregator,
      logger: this.deps.logger,
    });
    this.windowStart = this.deps.now();
    this.scheduleWindow();
    this.deps.logger.info(
      { socket: this.deps.config.socket, windowSeconds: this.deps.config.windowSeconds },
      'metrics socket listening',
    );
    this.send();
  }

  /** Observations in the open window so far. */
  get openWindowObservations(): number {
    return this.aggregator.observedSinceClose;
  }

  /** The health probe's own latency (source `probe`). */
  recordProbe(model: string, version: string, latencyMs: number): void {
    this.aggregator.recordProbe(model, version, latencyMs);
  }

  /** Called on every (re)connection: sends what the outbox holds, unless a retry is pending. */
  onConnected(): void {
    this.send();
  }

  /** Sends what the outbox holds, oldest first, one at a time, while connected. */
  private send(): void {
    if (this.sending || this.stopped || this.retryTimer !== null || !this.deps.isConnected()) return;
    this.sending = true;
    this.sendAll()
      .catch((err: unknown) => {
        // The outbox could not be read or updated (an I/O error, a read-only file system): the
        // agent goes on managing models; the summaries wait for the next try.
        this.deps.logger.error({ err: (err as Error).message }, 'metrics outbox failed; tried again later');
        this.retryLater();
      })
      .finally(() => {
        this.sending = false;
      });
  }

  private async sendAll(): Promise<void> {
    for (;;) {
      if (this.stopped || !this.deps.isConnected()) return;
      const next = await this.outbox.oldest();
      if (!next) return;
      try {
        await this.deps.publish(encodePayload(next.message));
      } catch (err) {
        if (this.stopped) return;
        this.deps.logger.warn(
          { err: (err as Error).message, windowStart: next.message.windowStart, retryInMs: this.retryMs },
          'metrics summary not acknowledged; kept in the outbox and tried again later',
        );
        this.retryLater();
        return;
      }
      this.retryMs = SEND_RETRY_MIN_MS;
      await this.outbox.remove(next.seq);
      this.deps.logger.debug({ windowStart: next.message.windowStart }, 'metrics summary acknowledged');
    }
  }

  /**
   * The next try after the backoff, jittered by +-50%: windows close on the same seconds across
   * the fleet, so a coordinator that refuses them all would otherwise see the whole fleet retry
   * (and be cut) in the same second at every step.
   */
  private retryLater(): void {
    if (this.stopped || this.retryTimer !== null) return;
    const delay = Math.round(this.retryMs * (0.5 + this.random()));
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.send();
    }, delay);
    this.retryMs = Math.min(SEND_RETRY_MAX_MS, this.retryMs * 2);
  }

  private scheduleWindow(): void {
    const windowMs = this.deps.config.windowSeconds * 1000;
    const nowMs = this.deps.now().getTime();
    // To the next multiple of the window on the wall clock (at least a tenth of a window away).
    let due = Math.ceil(nowMs / windowMs) * windowMs - nowMs;
    if (due < windowMs / 10) due += windowMs;
    this.windowTimer = this.timers.setTimeout(() => {
      this.windowTimer = null;
      if (this.stopped) return;
      this.scheduleWindow();
      void this.closeWindow().then(() => this.send());
    }, due);
  }

  /** Closes the open window: its summary (when anything was observed or dropped) goes to the outbox. */
  private async closeWindow(): Promise<void> {
    const now = this.deps.now();
    const start = this.windowStart;
    this.windowStart = now;
    const seconds = Math.max(1, Math.round((now.getTime() - start.getTime()) / 1000));
    const message = this.aggregator.close(start, now, seconds);
    if (!message) return;
    try {
      await this.outbox.add(message);
    } catch (err) {
      this.deps.logger.error(
        { err: (err as Error).message, windowStart: message.windowStart },
        'metrics summary could not be stored in the outbox',
      );
    }
  }

  /** Stops taking observations and closes the open window into the outbox (sent after the next start). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.windowTimer !== null) this.timers.clearTimeout(this.windowTimer);
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.windowTimer = null;
    this.retryTimer = null;
    await this.socket?.close();
    this.socket = null;
    await this.closeWindow();
  }
}
