import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { OtaError } from './errors.js';
import { ioError } from './fs-atomic.js';

export interface FileDigest {
  size: number;
  sha256: string;
}

const READ_CHUNK = 1 << 20;

/**
 * Reads a file through sha256 (node:crypto: hundreds of MB/s, unlike tweetnacl's hash) and
 * stops with E_SIZE as soon as more than `maxBytes` have been read, so an endless file cannot
 * keep it busy. One 1 MiB buffer is reused for every read: a read stream allocates a new Buffer
 * per chunk, outside the V8 heap, which V8 frees late (it grew the agent's RSS by tens of MB on
 * large models; BENCHMARKS.md, agent memory).
 */
export async function digestFile(file: string, maxBytes = Number.MAX_SAFE_INTEGER): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    const handle = await open(file, 'r');
    try {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      for (;;) {
        const { bytesRead } = await handle.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        size += bytesRead;
        if (size > maxBytes) throw new OtaError('E_SIZE', `${file} is larger than the limit of ${maxBytes} bytes`);
        hash.update(buf.subarray(0, bytesRead));
      }
    } finally {
      await handle.close().catch(() => {});
    }
  } catch (err) {
    throw ioError(err, file);
  }
  return { size, sha256: hash.digest('hex') };
}
