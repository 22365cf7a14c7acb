import { existsSync, readFileSync } from 'node:fs';

/**
 * The project version from package.json. Found relative to this file both when run compiled
 * (dist/shared/) and from source (shared/).
 */
export function readPackageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(url)) {
      const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'ota-models' && pkg.version) return pkg.version;
    }
  }
  return '0.0.0-unknown';
}
