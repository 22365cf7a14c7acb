import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { encodePayload } from '../../shared/payload.js';
import { type AgentConfig, MAX_SOCKET_PATH_BYTES } from '../config.js';
import { MetricsOutbox } from './metrics-outbox.js';
import { listenMetricsSocket, type MetricsSocket } from './metrics-socket.js';
import { WindowAggregator } from './window-aggregator.js';

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
  /** Timers, injectable for tests. */
  setTimeout?: (fn: () => void, ms: number) => NodeJS.Timeout;
  clearTimeout?: (t: NodeJS.Timeout) => void;
}

/**
 * Device metrics on the agent (docs/metrics.md): the socket applications report to, the window
 * they are summarised over, and the durable outbox the summaries leave through. A window closes
 * every `windowSeconds` (aligned to the wall clock, so a device's windows start on the same
 * seconds as the fleet's); its summary is written to the outbox BEFORE anything is sent, so a
 * kill -9 loses at most the open window; the oldest summary is published and removed from the
 * outbox only once the broker acknowledged it (the coordinator acknowledges after it stored it).
 * A clean stop closes the open window first.
 */
export class AgentMetrics {
  private readonly aggregator = new WindowAggregator();
  private readonly outbox: MetricsOutbox;
  private socket: MetricsSocket | null = null;
  private windowStart: Date;
  private timer: NodeJS.Timeout | null = null;
  private sending = false;
  private stopped = false;
  /** Closing a window and sending are serialised: one outbox operation at a time from here. */
  private chain: Promise<void> = Promise.resolve();
  private readonly setTimer: (fn: () => void, ms: number) => NodeJS.Timeout;
  private readonly clearTimer: (t: NodeJS.Timeout) => void;

  constructor(private readonly deps: AgentMetricsDeps) {
    this.outbox = new MetricsOutbox({
      dir: path.join(deps.stateDir, 'metrics-outbox'),
      maxWindows: deps.config.maxPendingWindows,
      logger: deps.logger,
    });
    this.windowStart = this.deps.now();
    this.setTimer = deps.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = deps.clearTimeout ?? ((t) => clearTimeout(t));
  }

  get socketPath(): string {
    return this.deps.config.socket;
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
    this.schedule();
    this.deps.logger.info(
      { socket: this.deps.config.socket, windowSeconds: this.deps.config.windowSeconds },
      'metrics socket listening',
    );
    this.send();
  }

  /** The health probe's own latency (source `probe`). */
  recordProbe(model: string, version: string, latencyMs: number): void {
    this.aggregator.recordProbe(model, version, latencyMs);
  }

  /** Sends what the outbox holds, oldest first, while connected (also called on every reconnect). */
  send(): void {
    if (this.sending || this.stopped || !this.deps.isConnected()) return;
    this.sending = true;
    const run = async () => {
      try {
        for (;;) {
          if (this.stopped || !this.deps.isConnected()) break;
          const next = await this.outbox.oldest();
          if (!next) break;
          await this.deps.publish(encodePayload(next.message));
          await this.outbox.remove(next.seq);
        }
      } catch (err) {
        this.deps.logger.debug({ err: (err as Error).message }, 'metrics summary not sent yet; kept in the outbox');
      } finally {
        this.sending = false;
      }
    };
    this.chain = this.chain.then(run, run);
  }

  private schedule(): void {
    const windowMs = this.deps.config.windowSeconds * 1000;
    const nowMs = this.deps.now().getTime();
    // To the next multiple of the window on the wall clock (at least a tenth of a window away).
    let due = Math.ceil(nowMs / windowMs) * windowMs - nowMs;
    if (due < windowMs / 10) due += windowMs;
    this.timer = this.setTimer(() => {
      this.timer = null;
      void this.closeWindow().finally(() => {
        if (!this.stopped) this.schedule();
      });
    }, due);
  }

  /** Closes the open window: its summary (if anything was observed or dropped) goes to the outbox. */
  closeWindow(): Promise<void> {
    const run = async () => {
      const now = this.deps.now();
      const start = this.windowStart;
      const seconds = Math.max(1, Math.round((now.getTime() - start.getTime()) / 1000));
      this.windowStart = now;
      const message = this.aggregator.close(start, now, seconds);
      if (!message) return;
      try {
        await this.outbox.add(message);
      } catch (err) {
        this.deps.logger.error(
          { err: (err as Error).message },
          'metrics summary could not be written to the outbox; lost',
        );
      }
    };
    this.chain = this.chain.then(run, run);
    return this.chain.then(() => this.send());
  }

  /** Stops taking observations, closes the open window into the outbox (nothing sent now). */
  async stop(): Promise<void> {
    if (this.timer) this.clearTimer(this.timer);
    this.timer = null;
    await this.socket?.close();
    this.socket = null;
    this.stopped = true;
    const run = async () => {
      const now = this.deps.now();
      const start = this.windowStart;
      const seconds = Math.max(1, Math.round((now.getTime() - start.getTime()) / 1000));
      const message = this.aggregator.close(start, now, seconds);
      if (message) await this.outbox.add(message).catch(() => {});
    };
    this.chain = this.chain.then(run, run);
    await this.chain;
  }
}
