import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import {
  MAX_LINE_BYTES,
  type Observation,
  type ObservationContext,
  parseObservationLine,
  type Refusal,
} from './observation.js';

/**
 * The local Unix socket applications report inferences on (docs/metrics.md, "Wire format"): one
 * JSON line per observation or batch. Good lines get no answer (throughput); each refused
 * observation or line gets one answer line naming the problem and the fix. Bounded whatever a
 * client does: a line over MAX_LINE_BYTES is refused and the rest of it discarded unbuffered, at
 * most `maxConnections` clients, and a client that does not read its answers stops getting them
 * once MAX_PENDING_ANSWER_BYTES wait (they are still counted). Nothing a client sends can throw
 * out of a handler.
 */

export const DEFAULT_MAX_CONNECTIONS = 32;
/** Unread answer bytes on a connection beyond which it gets no more answers. */
export const MAX_PENDING_ANSWER_BYTES = 64 * 1024;
/** Answers written for one line; the rest of its refusals are summed up in one more answer. */
export const MAX_ANSWERS_PER_LINE = 10;

/** Where valid observations go and refused ones are counted (the WindowAggregator). */
export interface ObservationSink {
  add(o: Observation): unknown;
  countDropped(n: number): void;
}

export interface MetricsSocketOptions {
  path: string;
  context: ObservationContext;
  sink: ObservationSink;
  logger: Logger;
  maxConnections?: number;
  /** File mode of the socket (default 0o660: the agent's group may report). */
  mode?: number;
}

export interface MetricsSocket {
  readonly path: string;
  /** Closes the server and every connection, and removes the socket file. */
  close(): Promise<void>;
}

function answer(r: Refusal, line: number): string {
  const out: Record<string, unknown> = { ok: false, code: r.code, message: r.message, line };
  if (r.index !== undefined) out.index = r.index;
  return `${JSON.stringify(out)}\n`;
}

/** True when something accepts connections on the socket path. */
function someoneListens(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

async function clearStaleSocket(socketPath: string): Promise<void> {
  const dir = path.dirname(socketPath);
  const dirStat = await fs.stat(dir).catch(() => null);
  if (!dirStat?.isDirectory())
    throw new OtaError(
      'E_IO',
      `the directory of the metrics socket ${socketPath} does not exist; create ${dir} (systemd: RuntimeDirectory=) or set "metrics.socket" in the agent config`,
    );
  const st = await fs.lstat(socketPath).catch(() => null);
  if (!st) return;
  if (!st.isSocket())
    throw new OtaError(
      'E_IO',
      `${socketPath} exists and is not a socket; refusing to remove it: move it away or set "metrics.socket" to another path`,
    );
  if (await someoneListens(socketPath))
    throw new OtaError(
      'E_IO',
      `another process listens on the metrics socket ${socketPath} (another agent?); stop it or set "metrics.socket" to another path`,
    );
  // A socket left by an agent that did not close (killed, power cut): nobody listens on it.
  await fs.rm(socketPath, { force: true });
}

class Connection {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Inside a line over the limit: bytes up to the next newline are dropped. */
  private discarding = false;
  private lineNo = 0;
  private muted = false;
  private warned = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly options: MetricsSocketOptions,
  ) {}

  onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) {
        this.keep(chunk.subarray(start));
        return;
      }
      this.keep(chunk.subarray(start, nl));
      this.endLine();
      start = nl + 1;
    }
  }

  /** Bytes of the line being read: kept while under the limit, else the line is refused now. */
  private keep(part: Buffer): void {
    if (this.discarding || part.length === 0) return;
    if (this.pendingBytes + part.length > MAX_LINE_BYTES) {
      this.lineNo++;
      this.discarding = true;
      this.pending = [];
      this.pendingBytes = 0;
      this.refuse(
        [{ code: 'E_METRICS_LINE', message: `the line is longer than ${MAX_LINE_BYTES} bytes; send smaller batches` }],
        1,
      );
      return;
    }
    this.pending.push(part);
    this.pendingBytes += part.length;
  }

  private endLine(): void {
    if (this.discarding) {
      // The over-long line ends here; it was refused (and numbered) when it crossed the limit.
      this.discarding = false;
      return;
    }
    const bytes = this.pendingBytes;
    const text =
      this.pending.length === 1
        ? (this.pending[0] as Buffer).toString('utf8')
        : Buffer.concat(this.pending).toString('utf8');
    this.pending = [];
    this.pendingBytes = 0;
    this.lineNo++;
    if (text.trim() === '') return;
    const parsed = parseObservationLine(text, this.options.context, bytes);
    for (const o of parsed.observations) this.options.sink.add(o);
    if (parsed.refused.length > 0) this.refuse(parsed.refused, parsed.dropped);
  }

  private refuse(refused: Refusal[], dropped: number): void {
    this.options.sink.countDropped(dropped);
    if (!this.warned) {
      this.warned = true;
      const first = refused[0] as Refusal;
      this.options.logger.warn(
        { code: first.code, line: this.lineNo },
        `metrics socket: refused an observation: ${first.message} (further refusals on this connection are counted, not logged)`,
      );
    }
    if (this.muted) return;
    if (this.socket.writableLength > MAX_PENDING_ANSWER_BYTES || !this.socket.writable) {
      // The client does not read its answers: stop answering rather than buffer without bound.
      this.muted = true;
      return;
    }
    // At most MAX_ANSWERS_PER_LINE answers per line: a refused batch of 1,000 would otherwise write
    // ~250 KB at once, past the bound above, for each of 32 connections.
    let out = '';
    for (const r of refused.slice(0, MAX_ANSWERS_PER_LINE)) out += answer(r, this.lineNo);
    const more = refused.length - MAX_ANSWERS_PER_LINE;
    if (more > 0) {
      const next = refused[MAX_ANSWERS_PER_LINE] as Refusal;
      out += answer(
        {
          code: next.code,
          message: `${more} more observations of this line were refused (answers stop at ${MAX_ANSWERS_PER_LINE} per line; all are counted)`,
        },
        this.lineNo,
      );
    }
    this.socket.write(out);
  }
}

/** Listens on the metrics socket (the directory must exist; a stale socket file is replaced). */
export async function listenMetricsSocket(options: MetricsSocketOptions): Promise<MetricsSocket> {
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  await clearStaleSocket(options.path);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.on('error', () => {
      // A client that resets or goes away: nothing to do, its observations are in.
    });
    if (sockets.size >= maxConnections) {
      socket.end(
        answer(
          {
            code: 'E_METRICS_LINE',
            message: `the agent serves at most ${maxConnections} metrics connections at once; share one connection per process and retry later`,
          },
          0,
        ),
      );
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const connection = new Connection(socket, options);
    socket.on('data', (chunk: Buffer) => {
      try {
        connection.onData(chunk);
      } catch (err) {
        // A bug, not the client's fault: log it and drop this connection, never the agent.
        options.logger.error({ err }, 'metrics socket: a line could not be handled');
        socket.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new OtaError('E_IO', `cannot listen on the metrics socket ${options.path}: ${err.message}`, { cause: err }),
      ),
    );
    server.listen(options.path, () => resolve());
  });
  server.on('error', (err) => options.logger.error({ err }, 'metrics socket: server error'));
  await fs.chmod(options.path, options.mode ?? 0o660);
  options.logger.info({ path: options.path }, 'metrics socket: listening');
  return {
    path: options.path,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
      await fs.rm(options.path, { force: true });
    },
  };
}
