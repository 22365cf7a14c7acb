import net from 'node:net';

/**
 * The client a Node application uses to report its inferences to the OTA agent's metrics socket
 * (docs/metrics.md). It never throws into the application and never blocks it: observations are
 * buffered and written in batch lines (every `flushIntervalMs`, or at `batchSize`); while the
 * agent is down they wait in a bounded buffer (beyond it they are dropped and counted) and the
 * client reconnects with backoff. Answers the agent sends back (refused observations) are
 * counted in `stats.refused` and handed to `onRefused`.
 *
 * @example
 * ```ts
 * import { MetricsClient } from 'ota-models/dist/shared/metrics/client.js';
 *
 * const metrics = new MetricsClient({ socketPath: process.env.OTA_METRICS_SOCKET ?? '/run/ota-agent/metrics.sock' });
 * const t0 = performance.now();
 * const out = await session.run(feeds);
 * metrics.report({ model: 'detector', version: loadedVersion, latencyMs: performance.now() - t0, confidence: 0.93 });
 * // at exit:
 * await metrics.close();
 * ```
 */

export interface MetricsObservation {
  model: string;
  /** The version the application actually loaded and ran. */
  version: string;
  latencyMs: number;
  /** In [0, 1]. */
  confidence?: number;
  error?: boolean;
  /** Custom values, names declared in the agent config (`metrics.values`). */
  values?: Record<string, number>;
}

/** What the agent answers for a refused observation or line. */
export interface MetricsRefusal {
  ok: false;
  code: string;
  message: string;
  line: number;
  index?: number;
}

export interface MetricsClientOptions {
  socketPath: string;
  /** Default 100 ms. */
  flushIntervalMs?: number;
  /** Observations per line and the count that triggers a flush (default 500; the agent takes up to 1000). */
  batchSize?: number;
  /** Observations kept while the agent is unreachable (default 10,000); more are dropped and counted. */
  maxBuffered?: number;
  /** First reconnect delay, doubled up to maxBackoffMs (defaults 100 ms and 5 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  onRefused?: (refusal: MetricsRefusal) => void;
}

export interface MetricsClientStats {
  /** Observations written to the socket. */
  sent: number;
  /** Observations dropped by the client (agent unreachable and buffer full, or not serializable). */
  dropped: number;
  /** Refusal answers read back from the agent. */
  refused: number;
}

/** A batch line stays under the agent's 64 KiB line limit. */
const MAX_LINE_CHARS = 60_000;
/** Bytes waiting in the socket beyond which the client drops instead of queueing more. */
const MAX_SOCKET_BACKLOG = 1024 * 1024;

export class MetricsClient {
  readonly stats: MetricsClientStats = { sent: 0, dropped: 0, refused: 0 };
  private buffer: string[] = [];
  private socket: net.Socket | null = null;
  private connected = false;
  private closed = false;
  private backoffMs: number;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private answers = '';
  private readonly flushIntervalMs: number;
  private readonly batchSize: number;
  private readonly maxBuffered: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly options: MetricsClientOptions) {
    this.flushIntervalMs = options.flushIntervalMs ?? 100;
    this.batchSize = Math.max(1, Math.min(1000, options.batchSize ?? 500));
    this.maxBuffered = options.maxBuffered ?? 10_000;
    this.minBackoffMs = options.minBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
    this.backoffMs = this.minBackoffMs;
  }

  /** Queues one observation; never throws. */
  report(observation: MetricsObservation): void {
    if (this.closed) {
      this.stats.dropped++;
      return;
    }
    let json: string;
    try {
      json = JSON.stringify(observation);
    } catch {
      this.stats.dropped++;
      return;
    }
    if (this.buffer.length >= this.maxBuffered) {
      this.stats.dropped++;
      return;
    }
    this.buffer.push(json);
    if (!this.socket && !this.reconnectTimer) this.connect();
    if (this.buffer.length >= this.batchSize) this.writeBuffered();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.writeBuffered();
      }, this.flushIntervalMs);
      this.flushTimer.unref();
    }
  }

  /** Writes what is buffered now (if connected) and resolves once the socket took it. */
  async flush(): Promise<void> {
    const connecting = this.socket;
    if (connecting && !this.connected)
      await new Promise<void>((resolve) => {
        connecting.once('connect', () => resolve());
        connecting.once('close', () => resolve());
      });
    this.writeBuffered();
    const socket = this.socket;
    if (!socket || !this.connected || socket.writableLength === 0) return;
    await new Promise<void>((resolve) => socket.write('', () => resolve()));
  }

  /** Flushes, then closes the connection; later reports are dropped. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.flushTimer = null;
    this.reconnectTimer = null;
    this.stats.dropped += this.buffer.length;
    this.buffer = [];
    const socket = this.socket;
    this.socket = null;
    if (!socket || socket.destroyed) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.end();
    });
  }

  private connect(): void {
    if (this.closed) return;
    const socket = net.connect(this.options.socketPath);
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      this.connected = true;
      this.backoffMs = this.minBackoffMs;
      this.writeBuffered();
    });
    socket.on('data', (text: string) => this.readAnswers(text));
    socket.on('drain', () => this.writeBuffered());
    socket.on('error', () => {
      // ENOENT, ECONNREFUSED (agent down), EPIPE/ECONNRESET (agent restarted): 'close' follows.
    });
    socket.on('close', () => {
      if (this.socket === socket) {
        this.socket = null;
        this.connected = false;
        this.scheduleReconnect();
      }
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.buffer.length > 0) this.connect();
    }, this.backoffMs);
    this.reconnectTimer.unref();
    this.backoffMs = Math.min(this.maxBackoffMs, this.backoffMs * 2);
  }

  private readAnswers(text: string): void {
    this.answers += text;
    let nl = this.answers.indexOf('\n');
    while (nl >= 0) {
      const line = this.answers.slice(0, nl);
      this.answers = this.answers.slice(nl + 1);
      nl = this.answers.indexOf('\n');
      this.stats.refused++;
      try {
        this.options.onRefused?.(JSON.parse(line) as MetricsRefusal);
      } catch {
        // A callback that throws, or an answer that is not JSON: counted, nothing else to do.
      }
    }
    // An agent never sends a line this long; keep memory bounded anyway.
    if (this.answers.length > 1024 * 1024) this.answers = '';
  }

  private writeBuffered(): void {
    const socket = this.socket;
    if (!socket || !this.connected || this.buffer.length === 0) return;
    if (socket.writableLength > MAX_SOCKET_BACKLOG) return; // the buffer bounds the wait
    const items = this.buffer;
    this.buffer = [];
    let i = 0;
    while (i < items.length) {
      let line = '[';
      let n = 0;
      while (i < items.length && n < this.batchSize) {
        const item = items[i] as string;
        if (n > 0 && line.length + item.length + 2 > MAX_LINE_CHARS) break;
        line += n > 0 ? `,${item}` : item;
        n++;
        i++;
      }
      socket.write(`${line}]\n`);
      this.stats.sent += n;
    }
  }
}
