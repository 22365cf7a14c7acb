import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRequest {
  path: string;
  range: string | undefined;
  status: number;
  bytesSent: number;
}

/**
 * A small artifact server on 127.0.0.1 with the coordinator's URL layout
 * (`/artifacts/sha256/<hex>`) and Range support (RFC 9110 section 14), plus knobs for failure
 * tests: throttling (bytes per tick) to make a download slow enough to kill mid-way, and a stall.
 */
export class ArtifactServer {
  private readonly blobs = new Map<string, Buffer>();
  readonly requests: ServedRequest[] = [];
  throttle: { bytes: number; everyMs: number } | null = null;
  /** Sends this many bytes of each response, then nothing more, holding the connection open. */
  stallAfter: number | null = null;
  private server!: http.Server;
  port = 0;

  static async start(): Promise<ArtifactServer> {
    const s = new ArtifactServer();
    s.server = http.createServer((req, res) => s.handle(req, res));
    await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', () => r()));
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  add(bytes: Uint8Array): string {
    const sha = createHash('sha256').update(bytes).digest('hex');
    this.blobs.set(sha, Buffer.from(bytes));
    return sha;
  }

  /** Serves other bytes under an existing digest (a tampered artifact store). */
  replace(sha: string, bytes: Uint8Array): void {
    this.blobs.set(sha, Buffer.from(bytes));
  }

  bytesSentFor(sha: string): number {
    return this.requests.filter((r) => r.path.endsWith(sha)).reduce((n, r) => n + r.bytesSent, 0);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = req.url ?? '';
    const record: ServedRequest = { path, range: req.headers.range, status: 200, bytesSent: 0 };
    this.requests.push(record);
    const m = /^\/artifacts\/sha256\/([0-9a-f]{64})$/.exec(path);
    const blob = m ? this.blobs.get(m[1] as string) : undefined;
    if (!blob) {
      record.status = 404;
      res.writeHead(404).end('not found');
      return;
    }
    let start = 0;
    const range = req.headers.range ? /^bytes=(\d+)-$/.exec(req.headers.range) : null;
    if (range) {
      start = Number(range[1]);
      if (start >= blob.length) {
        record.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${blob.length}` }).end();
        return;
      }
      record.status = 206;
      res.writeHead(206, {
        'content-length': blob.length - start,
        'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}`,
      });
    } else {
      res.writeHead(200, { 'content-length': blob.length, 'accept-ranges': 'bytes' });
    }
    const body = blob.subarray(start);
    if (this.stallAfter !== null) {
      const head = body.subarray(0, this.stallAfter);
      record.bytesSent += head.length;
      res.write(head);
      return; // closed by the client's stall timeout, or by stop()
    }
    if (!this.throttle) {
      record.bytesSent += body.length;
      res.end(body);
      return;
    }
    const { bytes, everyMs } = this.throttle;
    let offset = 0;
    const tick = () => {
      if (res.destroyed) return;
      const chunk = body.subarray(offset, offset + bytes);
      offset += chunk.length;
      record.bytesSent += chunk.length;
      if (offset >= body.length) res.end(chunk);
      else res.write(chunk, () => setTimeout(tick, everyMs));
    };
    res.on('close', () => {
      offset = body.length;
    });
    tick();
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
