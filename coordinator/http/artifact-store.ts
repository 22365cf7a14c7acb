import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { OtaError } from '../../shared/errors.js';
import { fsyncDir, ioError } from '../../shared/fs-atomic.js';

/**
 * Content-addressed artifact files: `<dir>/<hex>`, where the coordinator passes
 * `<dataDir>/artifacts/sha256` as `dir`. A file only ever appears under its name complete and fsynced: uploads
 * stream into a temporary file in the same directory while they are hashed, and `commit` renames
 * it into place once the release is accepted. Files are never modified or deleted afterwards, so a
 * name always means the same bytes (which is what lets HTTP mark them immutable).
 */

const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const TMP_PREFIX = '.upload-';
const TMP_SUFFIX = '.tmp';
const TMP_PATTERN = /^\.upload-[0-9a-f]{16}\.tmp$/;

export function isSha256(value: unknown): value is string {
  return typeof value === 'string' && SHA256_PATTERN.test(value);
}

export function assertSha256(value: unknown): string {
  if (isSha256(value)) return value;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
  throw new OtaError('E_USAGE', `invalid sha256 ${shown}: must be 64 lowercase hex characters`);
}

export interface IngestOptions {
  /** The most bytes accepted; one more and the upload stops with E_SIZE (an endless body is cut). */
  maxBytes: number;
  /** Fails with E_TIMEOUT (and destroys the stream) when no data arrives for this long. */
  idleTimeoutMs?: number;
  /** Called with each number of bytes written to the temporary file (the upload metric). */
  onWrite?: (bytes: number) => void;
}

export interface Ingested {
  tmpFile: string;
  sha256: string;
  size: number;
}

export interface OpenedArtifact {
  handle: FileHandle;
  size: number;
}

export class ArtifactStore {
  private ready: Promise<void>;

  /** `dir` holds the `<hex>` files and the upload temporaries (same filesystem, so rename is atomic). */
  constructor(readonly dir: string) {
    this.ready = this.prepare();
    // Awaited by every operation (and by init()); this only keeps an early failure from being
    // reported as an unhandled rejection before anyone asks.
    this.ready.catch(() => {});
  }

  /**
   * Creates the directory and removes temporaries left by a crash or a killed process mid-upload.
   * Started by the constructor; a failed attempt is retried on the next call.
   */
  async init(): Promise<void> {
    try {
      await this.ready;
    } catch {
      this.ready = this.prepare();
      await this.ready;
    }
  }

  private async prepare(): Promise<void> {
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o755 });
      for (const name of await fs.readdir(this.dir)) {
        if (TMP_PATTERN.test(name)) await fs.rm(path.join(this.dir, name), { force: true });
      }
    } catch (err) {
      throw ioError(err, this.dir);
    }
  }

  path(sha256: string): string {
    return path.join(this.dir, assertSha256(sha256));
  }

  async has(sha256: string): Promise<boolean> {
    const file = this.path(sha256);
    await this.init();
    try {
      return (await fs.stat(file)).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw ioError(err, file);
    }
  }

  /**
   * Opens an artifact for reading, or returns null when there is none. The caller owns the handle
   * (a read stream created from it closes it). Size comes from the open file, so it matches the
   * bytes the handle reads.
   */
  async open(sha256: string): Promise<OpenedArtifact | null> {
    const file = this.path(sha256);
    await this.init();
    let handle: FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw ioError(err, file);
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new OtaError('E_IO', `${file} is not a regular file`);
      return { handle, size: stat.size };
    } catch (err) {
      await handle.close();
      throw ioError(err, file);
    }
  }

  /**
   * Streams `stream` into a new temporary file while hashing it, then fsyncs it. On any failure the
   * temporary file is removed before the error is thrown, so a caller holds a tmp file only when
   * this resolves. When `maxBytes` is exceeded the stream is left paused, not destroyed: an HTTP
   * server can still answer on the same connection.
   */
  async ingest(stream: Readable, opts: IngestOptions): Promise<Ingested> {
    await this.init();
    const tmpFile = path.join(this.dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}${TMP_SUFFIX}`);
    let handle: FileHandle;
    try {
      handle = await fs.open(tmpFile, 'wx', 0o644);
    } catch (err) {
      throw ioError(err, tmpFile);
    }
    const hash = createHash('sha256');
    let size = 0;
    let timer: NodeJS.Timeout | undefined;
    const idleMs = opts.idleTimeoutMs;
    const arm = () => {
      if (idleMs === undefined || idleMs <= 0) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        stream.destroy(new OtaError('E_TIMEOUT', `no upload data for ${idleMs} ms; upload abandoned`));
      }, idleMs);
    };
    try {
      try {
        arm();
        for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
          arm();
          const buf: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          size += buf.length;
          if (size > opts.maxBytes) {
            throw new OtaError('E_SIZE', `upload is larger than the ${opts.maxBytes} bytes expected; cut off`);
          }
          hash.update(buf);
          await writeAll(handle, buf, tmpFile);
          opts.onWrite?.(buf.length);
        }
        clearTimeout(timer);
        await handle.sync().catch((err: unknown) => {
          throw ioError(err, tmpFile);
        });
      } finally {
        clearTimeout(timer);
        await handle.close().catch(() => {});
      }
    } catch (err) {
      await fs.rm(tmpFile, { force: true });
      if (err instanceof OtaError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new OtaError('E_IO', `upload stream failed after ${size} bytes: ${message}`, { cause: err });
    }
    return { tmpFile, sha256: hash.digest('hex'), size };
  }

  /**
   * Moves an ingested file to its content address and makes the rename durable. Idempotent: when
   * the artifact is already there (same digest, so same bytes) the temporary file is dropped.
   */
  async commit(tmpFile: string, sha256: string): Promise<void> {
    const target = this.path(sha256);
    this.assertTmp(tmpFile);
    await this.init();
    try {
      if (await this.has(sha256)) {
        await fs.rm(tmpFile, { force: true });
        return;
      }
      await fs.rename(tmpFile, target);
      await fsyncDir(this.dir);
    } catch (err) {
      await fs.rm(tmpFile, { force: true });
      throw ioError(err, target);
    }
  }

  /** Removes an ingested file that will not be committed (no error when it is gone already). */
  async discard(tmpFile: string): Promise<void> {
    this.assertTmp(tmpFile);
    await fs.rm(tmpFile, { force: true });
  }

  /** Only temporaries this store created can be committed or discarded. */
  private assertTmp(tmpFile: string): void {
    if (path.dirname(tmpFile) !== this.dir || !TMP_PATTERN.test(path.basename(tmpFile))) {
      throw new OtaError('E_INTERNAL', `${tmpFile} is not an upload temporary of ${this.dir}`);
    }
  }
}

async function writeAll(handle: FileHandle, buf: Buffer, file: string): Promise<void> {
  let offset = 0;
  try {
    while (offset < buf.length) {
      const { bytesWritten } = await handle.write(buf, offset, buf.length - offset);
      offset += bytesWritten;
    }
  } catch (err) {
    throw ioError(err, file);
  }
}
