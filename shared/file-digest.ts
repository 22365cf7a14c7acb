import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { OtaError } from './errors.js';
import { ioError } from './fs-atomic.js';

export interface FileDigest {
  size: number;
  sha256: string;
}

/**
 * Streams a file through sha256 (node:crypto: hundreds of MB/s, unlike tweetnacl's hash) and
 * stops with E_SIZE as soon as more than `maxBytes` have been read, so an endless file cannot
 * keep it busy.
 */
export async function digestFile(file: string, maxBytes = Number.MAX_SAFE_INTEGER): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) throw new OtaError('E_SIZE', `${file} is larger than the limit of ${maxBytes} bytes`);
      hash.update(chunk as Buffer);
    }
  } catch (err) {
    throw ioError(err, file);
  }
  return { size, sha256: hash.digest('hex') };
}
