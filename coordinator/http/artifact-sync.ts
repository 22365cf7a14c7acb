import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { OtaError } from '../../shared/errors.js';
import { fsyncDir } from '../../shared/fs-atomic.js';
import { isSha256 } from './artifact-store.js';

/**
 * Copies the coordinator's artifacts (`<data>/artifacts/sha256/<hex>`) into the directory an HTTP
 * origin or CDN serves (`<to>/artifacts/sha256/<hex>`, the path devices ask for under
 * `--artifacts-url`). Content addressing makes this simple and safe to repeat: a name always
 * means the same bytes, so a file already there with the right size is left alone, and a new one
 * appears only complete and checked (copied to a temporary name, hashed, then renamed).
 */
export async function syncArtifacts(
  dataDir: string,
  to: string,
  onCopied?: (sha256: string, size: number) => void,
): Promise<{ copied: number; present: number; bytes: number }> {
  const from = path.join(dataDir, 'artifacts', 'sha256');
  const target = path.join(to, 'artifacts', 'sha256');
  let names: string[];
  try {
    names = (await fs.readdir(from)).filter(isSha256).sort();
  } catch (err) {
    throw new OtaError(
      'E_IO',
      `cannot read ${from}: ${(err as Error).message} (--data must be the coordinator's data directory)`,
    );
  }
  // Readable by the web server that serves them (the coordinator keeps its own copies private).
  await fs.mkdir(target, { recursive: true, mode: 0o755 });
  let copied = 0;
  let present = 0;
  let bytes = 0;
  for (const hex of names) {
    const source = path.join(from, hex);
    const { size } = await fs.stat(source);
    const there = await fs.stat(path.join(target, hex)).catch(() => null);
    if (there?.size === size) {
      present++;
      continue;
    }
    const tmp = path.join(target, `.sync-${hex.slice(0, 16)}-${process.pid}.tmp`);
    try {
      const hash = createHash('sha256');
      await fs.copyFile(source, tmp);
      await pipeline(createReadStream(tmp), hash);
      const got = hash.digest('hex');
      if (got !== hex) {
        throw new OtaError('E_IO', `the copy of ${hex} hashes to ${got}: the source or the target disk is damaged`);
      }
      const handle = await fs.open(tmp, 'r');
      await handle.sync();
      await handle.close();
      await fs.chmod(tmp, 0o644);
      await fs.rename(tmp, path.join(target, hex));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    copied++;
    bytes += size;
    onCopied?.(hex, size);
  }
  if (copied > 0) await fsyncDir(target);
  return { copied, present, bytes };
}
