import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import { ioError } from '../../shared/fs-atomic.js';

export interface DownloadRequest {
  /** http:// or https:// URL of the artifact (e.g. http://127.0.0.1:PORT/artifacts/sha256/<hex>). */
  url: string;
  /** Path of the resumable partial file, e.g. <state>/staging/<sha256>.part (its directory exists). */
  partFile: string;
  /** Signed size from the verified manifest: never keep more than this many bytes. */
  expectedSize: number;
  /** Overall deadline for this call, in milliseconds. */
  deadlineMs: number;
  /** Abort when no byte arrives for this long, in milliseconds. */
  stallTimeoutMs: number;
  /** Extra request headers, e.g. { authorization: 'Bearer ...' }. Their values are never logged. */
  headers?: Record<string, string>;
  /** Extra CA for https. */
  ca?: string | Buffer;
  /** Caller abort (agent shutdown). */
  signal?: AbortSignal;
  /** Called at most every ~250 ms and once at the end of a successful call. */
  onProgress?: (bytes: number, total: number) => void;
  /** Called every SCAVENGE_EVERY bytes received (youngGenerationGc in scavenge.ts: bounded RSS). */
  scavenge?: () => void;
}

export interface DownloadResult {
  /** Bytes in partFile at the end (== expectedSize on success). */
  size: number;
  /** Lowercase hex sha256 of the whole partFile content. */
  sha256: string;
  /** Bytes already in partFile before this call. */
  resumedFrom: number;
  /** Bytes received over the network in this call. */
  bytesFetched: number;
}

const PROGRESS_INTERVAL_MS = 250;
/** 4 MiB: the agent's RSS grew by ~20 MB during a download instead of ~45 (measured, 400 MB). */
const SCAVENGE_EVERY = 4 << 20;
/** Reads of an existing part file and writes of received bytes, 1 MiB at a time. */
const WRITE_CHUNK = 1 << 20;
// setTimeout fires at once (with a warning) for delays above 2^31-1 ms; clamp instead.
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Downloads `url` into `partFile`, resuming from the bytes already there (RFC 9110 section 14,
 * `Range: bytes=N-`), hashing with sha256 while streaming and never keeping more than
 * `expectedSize` bytes. Memory stays bounded: received bytes go through two reused 1 MiB
 * buffers (PartFile), and reading waits whenever a full buffer waits for the previous write.
 *
 * Every failure is an OtaError (E_DOWNLOAD, E_DOWNLOAD_TIMEOUT, E_DOWNLOAD_STALLED, E_SIZE, E_IO,
 * E_CONFIG for a URL that is not http(s)); the bytes already written stay in `partFile`, since
 * they are a prefix of what the server sent, so the next call resumes after them. The sha256 of
 * the result is NOT compared with anything here: the caller verifies it against the signed
 * manifest (a part file made from a wrong server response is complete but fails that check).
 *
 * Calls for the same `partFile` run one after the other in this process: a new call waits until
 * the previous one has stopped writing (an aborted call first finishes its in-flight write), so
 * two writers never interleave bytes in the same file (two models with the same artifact share
 * one part file; the second call then finds it complete).
 */
export async function downloadArtifact(req: DownloadRequest): Promise<DownloadResult> {
  const url = parseUrl(req.url);
  const where = describeUrl(url);
  if (!Number.isSafeInteger(req.expectedSize) || req.expectedSize < 0) {
    throw new OtaError('E_INTERNAL', `expectedSize must be a non-negative integer, got ${req.expectedSize}`);
  }
  const dog = new Watchdog(req, where);
  const key = path.resolve(req.partFile);
  const previous = queue.get(key) ?? Promise.resolve();
  let release = (): void => {};
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  // The next caller waits for the previous ones and this one, even if this one stops waiting early.
  const tail = previous.then(() => mine);
  queue.set(key, tail);
  try {
    await Promise.race([previous, dog.failed]);
    dog.throwIfFailed(); // an abort or deadline that came first: do not even open the file
    return await download(req, url, where, dog);
  } finally {
    dog.dispose();
    release();
    if (queue.get(key) === tail) queue.delete(key);
  }
}

/** Tail of the chain of calls per resolved part file path (see downloadArtifact). */
const queue = new Map<string, Promise<void>>();

async function download(req: DownloadRequest, url: URL, where: string, dog: Watchdog): Promise<DownloadResult> {
  const { partFile, expectedSize } = req;
  let handle: FileHandle;
  try {
    // Append mode: every write lands at the current end of the file, even right after a
    // truncate, so there is no file position to keep in step. `+` allows hashing what is there.
    handle = await open(partFile, 'a+');
  } catch (err) {
    throw ioError(err, partFile);
  }
  // An exception from onProgress is the caller's own: it is rethrown unchanged, not as E_DOWNLOAD.
  let callbackError: { err: unknown } | undefined;
  const part = new PartFile(handle, partFile);
  try {
    let have = await part.statSize();
    if (have > expectedSize) {
      // More bytes than the signed size cannot be a prefix of the artifact.
      await part.truncate();
      have = 0;
    }
    await part.hashExisting(have, dog);
    const resumedFrom = have;
    let bytesFetched = 0;
    let sinceScavenge = 0;
    let lastProgress = Date.now();
    let lastReported = -1;
    const progress = (): void => {
      // Never the same count twice: the last chunk may already have been reported by the loop.
      if (part.length === lastReported) return;
      lastReported = part.length;
      try {
        req.onProgress?.(part.length, expectedSize);
      } catch (err) {
        callbackError = { err };
        throw err;
      }
    };

    // When the file is already complete nothing is requested: a Range starting at the end would
    // only earn a 416 (RFC 9110 section 15.5.17).
    let useRange = have > 0 && have < expectedSize;
    while (part.length < expectedSize) {
      const headers = requestHeaders(req.headers, useRange ? part.length : 0);
      const res = await dog.request(url, headers, req.ca);
      const status = res.statusCode ?? 0;
      const encoding = res.headers['content-encoding'];
      if (encoding !== undefined && encoding.toLowerCase() !== 'identity' && (status === 200 || status === 206)) {
        // We asked for identity (RFC 9110 section 12.5.3); encoded bytes are not the artifact's.
        throw new OtaError('E_DOWNLOAD', `${where} answered with content-encoding ${encoding}, expected identity`);
      }
      if (status === 206 && useRange) {
        // RFC 9110 sections 15.3.7 and 14.4: a single-part 206 carries
        // `Content-Range: bytes first-last/complete`, which must start where our file ends.
        const range = parseContentRange(res.headers['content-range']);
        if (range && range.complete !== null && range.complete !== expectedSize) {
          throw sizeMismatch(where, range.complete, expectedSize);
        }
        if (!range || range.first !== part.length) {
          // Bytes from another offset cannot be appended; start over with a plain GET.
          res.destroy();
          await part.truncate();
          useRange = false;
          continue;
        }
      } else if (status === 200) {
        // The server ignored or did not support Range (RFC 9110 section 14.2 allows that): the
        // body is the whole representation, so the file starts over from byte 0.
        const declared = contentLength(res.headers['content-length']);
        if (declared !== null && declared !== expectedSize) throw sizeMismatch(where, declared, expectedSize);
        if (part.length > 0) await part.truncate();
      } else if (status === 416 && useRange) {
        // RFC 9110 section 15.5.17: our start offset lies past the end of the server's
        // representation (`Content-Range: bytes */complete`). We never ask from the end, so the
        // server holds fewer bytes than our part file: either another size, or an inconsistent
        // server that a plain GET settles.
        res.destroy();
        const complete = parseUnsatisfiedRange(res.headers['content-range']);
        if (complete !== null && complete !== expectedSize) throw sizeMismatch(where, complete, expectedSize);
        await part.truncate();
        useRange = false;
        continue;
      } else {
        res.destroy();
        throw new OtaError('E_DOWNLOAD', `HTTP ${status} for ${where}`);
      }

      for await (const chunk of res as AsyncIterable<Buffer>) {
        dog.touch();
        const room = expectedSize - part.length;
        if (chunk.length > room) {
          // Stop at the signed size (design section 4: endless data must not fill the disk).
          // Only the bytes up to expectedSize are written, so the file never grows past it.
          res.destroy();
          await part.append(chunk.subarray(0, room));
          bytesFetched += room;
          throw new OtaError(
            'E_SIZE',
            `${where} sent more than the signed size of ${expectedSize} bytes; stopped reading at that size`,
          );
        }
        await part.append(chunk);
        bytesFetched += chunk.length;
        sinceScavenge += chunk.length;
        if (req.scavenge && sinceScavenge >= SCAVENGE_EVERY) {
          sinceScavenge = 0;
          req.scavenge();
        }
        // A slow disk write is not a network stall: count the stall from the end of the write.
        dog.touch();
        const now = Date.now();
        if (now - lastProgress >= PROGRESS_INTERVAL_MS) {
          lastProgress = now;
          progress();
        }
      }
      if (part.length < expectedSize) {
        throw new OtaError(
          'E_DOWNLOAD',
          `${where} ended after ${part.length} of ${expectedSize} bytes; the next attempt resumes from there`,
        );
      }
    }
    dog.stop();
    // Reported complete means durable: the caller may move the file into place right after.
    await part.sync();
    progress();
    return { size: part.length, sha256: part.digest(), resumedFrom, bytesFetched };
  } catch (err) {
    // Bytes received before the failure are a prefix of the artifact: keep them for the resume.
    await part.flushQuietly();
    if (callbackError) throw callbackError.err;
    // A timeout, stall or abort surfaces inside the loop as a destroyed stream; report its cause.
    throw dog.failure ?? (err instanceof OtaError ? err : networkError(err, where));
  } finally {
    // A close error cannot lose data: success was fsynced first, and on failure the error
    // already being thrown is the one that matters.
    await handle.close().catch(() => {});
  }
}

/**
 * The part file, its size and the running sha256 of its content. Received bytes are hashed as
 * they arrive and copied into one of two reused 1 MiB buffers; a full buffer is written while
 * the other fills, one write in flight at a time. One write per MiB instead of one per socket
 * chunk (64 KiB), and no per-chunk Buffers kept alive until their write: the agent's update path
 * and its peak RSS both depended on it (BENCHMARKS.md, agent update path and memory).
 *
 * The hash covers `length` bytes: what was written plus what waits in a buffer. It is only
 * returned after `sync()` wrote everything; when a write fails the call fails, and the next call
 * hashes the file again from disk (hashExisting), so a digest is always of the bytes in the file.
 */
class PartFile {
  private hash: Hash = createHash('sha256');
  /** Bytes received so far: in the file or waiting in the fill buffer. */
  length = 0;
  private buffers: Buffer[] | null = null;
  private filling = 0;
  private filled = 0;
  private inFlight: Promise<void> | null = null;

  constructor(
    private readonly handle: FileHandle,
    private readonly file: string,
  ) {}

  async statSize(): Promise<number> {
    try {
      return (await this.handle.stat()).size;
    } catch (err) {
      throw ioError(err, this.file);
    }
  }

  /** Streams the first `n` bytes through the hash, 1 MiB at a time (bounded memory). */
  async hashExisting(n: number, dog: Watchdog): Promise<void> {
    const buf = Buffer.allocUnsafe(Math.min(WRITE_CHUNK, Math.max(n, 1)));
    let pos = 0;
    while (pos < n) {
      dog.throwIfFailed();
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.handle.read(buf, 0, Math.min(buf.length, n - pos), pos));
      } catch (err) {
        throw ioError(err, this.file);
      }
      if (bytesRead === 0) throw new OtaError('E_IO', `${this.file} shrank while it was being read`);
      this.hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    this.length = n;
  }

  /** Empties the file (and drops buffered bytes): the next byte appended is byte 0. */
  async truncate(): Promise<void> {
    await this.inFlight?.catch(() => {});
    this.inFlight = null;
    this.filled = 0;
    try {
      await this.handle.truncate(0);
    } catch (err) {
      throw ioError(err, this.file);
    }
    this.hash = createHash('sha256');
    this.length = 0;
  }

  /** Hashes `chunk` and queues it for the file; waits only when a full buffer must be written. */
  async append(chunk: Buffer): Promise<void> {
    this.hash.update(chunk);
    this.length += chunk.length;
    this.buffers ??= [Buffer.allocUnsafe(WRITE_CHUNK), Buffer.allocUnsafe(WRITE_CHUNK)];
    let off = 0;
    while (off < chunk.length) {
      const n = chunk.copy(this.buffers[this.filling] as Buffer, this.filled, off);
      this.filled += n;
      off += n;
      if (this.filled === WRITE_CHUNK) await this.rotate();
    }
  }

  /** Starts writing the fill buffer once the previous write finished (its buffer is free again). */
  private async rotate(): Promise<void> {
    await this.inFlight;
    const write = this.writeAll(this.fillBuffer());
    write.catch(() => {}); // awaited by the next rotate or flush; never an unhandled rejection
    this.inFlight = write;
    this.filling ^= 1;
    this.filled = 0;
  }

  /** Everything received is in the file (not yet fsynced). */
  async flush(): Promise<void> {
    await this.inFlight;
    this.inFlight = null;
    if (this.filled > 0) {
      await this.writeAll(this.fillBuffer());
      this.filled = 0;
    }
  }

  private fillBuffer(): Buffer {
    const buffer = this.buffers?.[this.filling];
    return buffer ? buffer.subarray(0, this.filled) : Buffer.alloc(0);
  }

  /** After a failure: keep what was received for the next attempt's Range, if the disk takes it. */
  async flushQuietly(): Promise<void> {
    await this.flush().catch(() => {});
  }

  private async writeAll(bytes: Buffer): Promise<void> {
    let off = 0;
    try {
      while (off < bytes.length) {
        const { bytesWritten } = await this.handle.write(bytes, off, bytes.length - off, null);
        off += bytesWritten;
      }
    } catch (err) {
      throw ioError(err, this.file);
    }
  }

  async sync(): Promise<void> {
    await this.flush();
    try {
      await this.handle.sync();
    } catch (err) {
      throw ioError(err, this.file);
    }
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * Deadline, stall timer and caller abort for one call. The first of them to fire becomes
 * `failure` and destroys the request in flight; the download loop then rethrows `failure`.
 */
class Watchdog {
  failure: OtaError | undefined;
  readonly failed: Promise<never>;
  private rejectFailed: (err: OtaError) => void = () => {};
  private readonly deadline: NodeJS.Timeout;
  private stall: NodeJS.Timeout | undefined;
  private current: { req: http.ClientRequest; res?: http.IncomingMessage } | undefined;
  private readonly onAbort = (): void => this.fail(new OtaError('E_DOWNLOAD', `download of ${this.where} aborted`));

  constructor(
    private readonly opts: Pick<DownloadRequest, 'deadlineMs' | 'stallTimeoutMs' | 'signal'>,
    private readonly where: string,
  ) {
    this.failed = new Promise<never>((_, reject) => {
      this.rejectFailed = reject;
    });
    this.failed.catch(() => {}); // only awaited while waiting for the part file; never unhandled
    this.deadline = setTimeout(
      () =>
        this.fail(
          new OtaError('E_DOWNLOAD_TIMEOUT', `download of ${where} did not finish within ${opts.deadlineMs} ms`),
        ),
      clampDelay(opts.deadlineMs),
    );
    if (opts.signal?.aborted) this.onAbort();
    else opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  fail(err: OtaError): void {
    if (this.failure) return;
    this.failure = err;
    this.rejectFailed(err);
    this.current?.res?.destroy(err);
    this.current?.req.destroy(err);
  }

  throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Restarts the stall timer: called when the request starts and on every chunk received. */
  touch(): void {
    if (this.stall) {
      this.stall.refresh();
      return;
    }
    this.stall = setTimeout(
      () =>
        this.fail(new OtaError('E_DOWNLOAD_STALLED', `no bytes from ${this.where} for ${this.opts.stallTimeoutMs} ms`)),
      clampDelay(this.opts.stallTimeoutMs),
    );
  }

  stop(): void {
    clearTimeout(this.stall);
    this.stall = undefined;
    clearTimeout(this.deadline);
  }

  dispose(): void {
    this.stop();
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    // Never leave a socket open behind us, whatever way the call ended.
    this.current?.req.destroy();
  }

  /** Sends a GET and resolves with the response head; the stall timer covers connect and headers. */
  request(url: URL, headers: Record<string, string>, ca: string | Buffer | undefined): Promise<http.IncomingMessage> {
    this.throwIfFailed();
    this.current?.req.destroy();
    this.touch();
    return new Promise((resolve, reject) => {
      // agent: false, a fresh connection that closes with the download: downloads are rare and
      // long, and a reused keep-alive socket can be reset by the server just as we reuse it.
      const options: https.RequestOptions = { method: 'GET', headers, agent: false };
      if (ca !== undefined) options.ca = ca;
      const req = (url.protocol === 'https:' ? https : http).request(url, options);
      const current: { req: http.ClientRequest; res?: http.IncomingMessage } = { req };
      this.current = current;
      req.on('response', (res) => {
        current.res = res;
        resolve(res);
      });
      // Before the response head this rejects; afterwards the response stream reports the error.
      req.on('error', reject);
      req.end();
    });
  }
}

function clampDelay(ms: number): number {
  return Math.min(Math.max(0, ms), MAX_TIMER_MS);
}

function parseUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // The URL itself is not repeated: it may carry a token in its query string.
    throw new OtaError('E_CONFIG', 'the artifact URL is not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OtaError('E_CONFIG', `the artifact URL must be http:// or https://, not ${url.protocol}//`);
  }
  return url;
}

/** Origin and path only: no user info, query string or fragment, which may hold credentials. */
function describeUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function requestHeaders(extra: Record<string, string> | undefined, from: number): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(extra ?? {})) {
    const lower = name.toLowerCase();
    if (lower !== 'range' && lower !== 'accept-encoding') headers[lower] = value;
  }
  // The sha256 is over the stored bytes: ask for them unencoded (RFC 9110 section 12.5.3).
  headers['accept-encoding'] = 'identity';
  // RFC 9110 section 14.1.2: `bytes=N-` asks for everything from offset N to the end.
  if (from > 0) headers.range = `bytes=${from}-`;
  return headers;
}

interface ContentRange {
  first: number;
  last: number;
  complete: number | null;
}

/** RFC 9110 section 14.4: `bytes first-last/complete` (complete may be `*`). */
export function parseContentRange(value: string | undefined): ContentRange | null {
  const m = value ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim()) : null;
  if (!m) return null;
  const first = Number(m[1]);
  const last = Number(m[2]);
  const complete = m[3] === '*' ? null : Number(m[3]);
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first) return null;
  if (complete !== null && (!Number.isSafeInteger(complete) || last >= complete)) return null;
  return { first, last, complete };
}

/** RFC 9110 section 14.4: a 416 carries `bytes *\/complete`; null when absent or malformed. */
function parseUnsatisfiedRange(value: string | undefined): number | null {
  const m = value ? /^bytes \*\/(\d+)$/i.exec(value.trim()) : null;
  const n = m ? Number(m[1]) : Number.NaN;
  return Number.isSafeInteger(n) ? n : null;
}

function contentLength(value: string | undefined): number | null {
  if (value === undefined || !/^\d+$/.test(value.trim())) return null;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : null;
}

/** A declared size that differs from the signed one: nothing is worth downloading. */
function sizeMismatch(where: string, declared: number, expected: number): OtaError {
  return new OtaError('E_SIZE', `${where} declares ${declared} bytes, the signed size is ${expected}`);
}

/** Connection-level failures: the server was never reached, so no byte or attempt was spent on it. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

function networkError(err: unknown, where: string): OtaError {
  const e = err as NodeJS.ErrnoException | undefined;
  const cause = e?.code && !e.message.includes(e.code) ? `${e.code}: ${e.message}` : (e?.message ?? String(err));
  const code = e?.code && UNREACHABLE.has(e.code) ? 'E_UNREACHABLE' : 'E_DOWNLOAD';
  return new OtaError(code, `download of ${where} failed: ${cause}`, { cause: err });
}
