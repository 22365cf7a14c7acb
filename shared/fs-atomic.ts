import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { OtaError } from './errors.js';

export interface AtomicWriteOptions {
  /** File mode of the new file (default 0o644). */
  mode?: number;
  /** Refuse to replace an existing file (E_EXISTS) instead of replacing it atomically. */
  exclusive?: boolean;
}

/**
 * Writes a file so that a crash or power cut leaves either the old content or the new one, never
 * a half-written file: write a temporary file in the same directory, fsync it, move it into place
 * (rename, or link for exclusive creation, which fails if the target exists), then fsync the
 * directory so the new name itself is durable.
 */
export async function writeFileAtomic(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const mode = options.mode ?? 0o644;
  try {
    const handle = await fs.open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      // The umask may have narrowed the mode; set it exactly (it matters for 0600 key files).
      await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.exclusive) {
      await fs.link(tmp, target);
      await fs.unlink(tmp);
    } else {
      await fs.rename(tmp, target);
    }
    await fsyncDir(dir);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw ioError(err, target);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Turns a Node fs error into an OtaError that names the path and what to do. */
export function ioError(err: unknown, file: string): OtaError {
  if (err instanceof OtaError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'EEXIST':
      return new OtaError('E_EXISTS', `${file} already exists; refusing to overwrite it`, { cause: err });
    case 'ENOENT':
      return new OtaError('E_IO', `${file}: no such file or directory`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new OtaError('E_IO', `${file}: permission denied`, { cause: err });
    case 'ENOSPC':
      return new OtaError('E_IO', `${file}: no space left on the device`, { cause: err });
    case 'EISDIR':
      return new OtaError('E_IO', `${file} is a directory, expected a file`, { cause: err });
    default:
      return new OtaError('E_IO', `${file}: ${(err as Error | undefined)?.message ?? String(err)}`, { cause: err });
  }
}

export async function readFileOrThrow(file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw ioError(err, file);
  }
}
