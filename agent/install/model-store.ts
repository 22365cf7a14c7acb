import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fsyncDir } from '../../shared/fs-atomic.js';
import { isSafeVersion } from '../../shared/names.js';
import type { Links, Target } from '../core/agent-state.js';

/**
 * The on-disk layout of design section 5:
 *   models/<name>/<version>/model.onnx + envelope.json
 *   models/<name>/current  -> <version>     (applications load current/model.onnx)
 *   models/<name>/previous -> <version>
 *   staging/<sha256>.part                    (resumable download)
 * Every change is made so that a crash at any instant leaves `current` pointing at a complete
 * version directory: version directories appear by one rename, symlinks change by one rename.
 */
export class ModelStore {
  readonly modelsDir: string;
  readonly stagingDir: string;

  constructor(readonly stateDir: string) {
    this.modelsDir = path.join(stateDir, 'models');
    this.stagingDir = path.join(stateDir, 'staging');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.modelsDir, { recursive: true, mode: 0o755 });
    await fs.mkdir(this.stagingDir, { recursive: true, mode: 0o700 });
  }

  modelDir(model: string): string {
    return path.join(this.modelsDir, model);
  }

  versionDir(model: string, version: string): string {
    return path.join(this.modelsDir, model, version);
  }

  modelFile(model: string, version: string): string {
    return path.join(this.versionDir(model, version), 'model.onnx');
  }

  stagedFile(sha256: string): string {
    return path.join(this.stagingDir, `${sha256}.part`);
  }

  async listModels(): Promise<string[]> {
    try {
      return (await fs.readdir(this.modelsDir, { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return [];
    }
  }

  async readLinks(model: string): Promise<Links> {
    const read = async (name: string) => {
      try {
        const target = await fs.readlink(path.join(this.modelDir(model), name));
        return isSafeVersion(target) ? target : null;
      } catch {
        return null;
      }
    };
    return { current: await read('current'), previous: await read('previous') };
  }

  /** True when the version directory exists with a model of the signed size. */
  async isInstalled(model: string, target: Pick<Target, 'version' | 'size'>): Promise<boolean> {
    try {
      return (await fs.stat(this.modelFile(model, target.version))).size === target.size;
    } catch {
      return false;
    }
  }

  /** The file whose bytes the verify step hashes: the installed copy if there is one, else the staged download. */
  async artifactFile(model: string, target: Target): Promise<string> {
    return (await this.isInstalled(model, target))
      ? this.modelFile(model, target.version)
      : this.stagedFile(target.sha256);
  }

  /**
   * Moves the verified staged file into models/<name>/<version>/ (idempotent: a complete version
   * directory is left as it is). The directory is assembled under a temporary name, fsynced, then
   * renamed into place, so it is either absent or complete.
   */
  async install(model: string, target: Target): Promise<void> {
    if (await this.isInstalled(model, target)) return;
    const dir = this.modelDir(model);
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    const tmp = path.join(dir, `.${target.version}.tmp-${randomBytes(4).toString('hex')}`);
    await fs.mkdir(tmp, { mode: 0o755 });
    try {
      await fs.rename(this.stagedFile(target.sha256), path.join(tmp, 'model.onnx'));
      await fs.chmod(path.join(tmp, 'model.onnx'), 0o644);
      await writeSynced(path.join(tmp, 'envelope.json'), `${JSON.stringify(target.envelope, null, 2)}\n`);
      await syncFile(path.join(tmp, 'model.onnx'));
      await fsyncDir(tmp);
      // A leftover directory of the same version (not complete, or it would have been kept) goes.
      await fs.rm(this.versionDir(model, target.version), { recursive: true, force: true });
      await fs.rename(tmp, this.versionDir(model, target.version));
      await fsyncDir(dir);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Points the symlinks at `links`. Each link changes atomically (a new symlink under a
   * temporary name renamed over the old one); `first` decides which link changes first so the
   * application-visible `current` is always valid.
   */
  async setLinks(model: string, links: Links, first: 'current' | 'previous'): Promise<void> {
    const dir = this.modelDir(model);
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    const order: (keyof Links)[] = first === 'current' ? ['current', 'previous'] : ['previous', 'current'];
    for (const name of order) {
      const value = links[name];
      const link = path.join(dir, name);
      if (value === null) {
        await fs.rm(link, { force: true });
        continue;
      }
      const tmp = path.join(dir, `.${name}.tmp-${randomBytes(4).toString('hex')}`);
      await fs.symlink(value, tmp);
      await fs.rename(tmp, link);
    }
    await fsyncDir(dir);
  }

  /** Removes version directories not in `keep`, and leftovers of interrupted installs. */
  async gc(model: string, keep: readonly string[]): Promise<string[]> {
    const removed: string[] = [];
    let entries: string[];
    try {
      entries = await fs.readdir(this.modelDir(model));
    } catch {
      return removed;
    }
    for (const name of entries) {
      if (name === 'current' || name === 'previous' || keep.includes(name)) continue;
      await fs.rm(path.join(this.modelDir(model), name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Removes staged downloads that belong to no assignment in progress. */
  async gcStaging(activeSha256: readonly string[]): Promise<void> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.stagingDir);
    } catch {
      return;
    }
    for (const name of entries) {
      if (!activeSha256.some((sha) => name === `${sha}.part`)) {
        await fs.rm(path.join(this.stagingDir, name), { force: true });
      }
    }
  }

  async discardStaged(sha256: string): Promise<void> {
    await fs.rm(this.stagedFile(sha256), { force: true });
  }

  /** Free bytes on the filesystem of the state directory. */
  async freeBytes(): Promise<number> {
    const s = await fs.statfs(this.stateDir);
    return s.bavail * s.bsize;
  }
}

async function writeSynced(file: string, data: string): Promise<void> {
  const handle = await fs.open(file, 'w', 0o644);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
