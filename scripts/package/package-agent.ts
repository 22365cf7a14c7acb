#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parseCommand, type Writer } from '../../coordinator/subcommand.js';
import { DEB_ARCH_NAMES, debArch, hostDebArch } from './deb-arch.js';
import { buildAgentDeb } from './deb-build.js';

/**
 * `npm run package:agent -- --arch amd64|arm64`: builds ota-agent_<version>_<arch>.deb from the
 * built project (scripts/package/deb-build.ts says what goes in). Prints the file, its size and
 * the installed size; progress on stderr. Exit 0 built, 1 failed (nothing half-written is
 * left), 2 usage error.
 */

/** The project: two levels up from the source (scripts/package/), three from dist/scripts/package/. */
function projectDir(): string {
  for (const rel of ['../../..', '../..']) {
    const dir = path.resolve(fileURLToPath(new URL(rel, import.meta.url)));
    try {
      if ((JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'ota-models')
        return dir;
    } catch {
      // not this one
    }
  }
  throw new Error('the ota-models project (its package.json) was not found above scripts/package/');
}

const PROJECT = projectDir();

interface Options {
  arch: string;
  out: string;
  version?: string;
  maintainer?: string;
  cacheDir: string;
  xzLevel: string;
}

export async function packageAgentMain(argv: string[], io: { out: Writer; err: Writer }): Promise<number> {
  const cmd = new Command('package:agent')
    .description("builds the device agent's Debian package, with its Node.js runtime, for one architecture")
    .option('--arch <arch>', `target architecture: ${DEB_ARCH_NAMES.join(' or ')}`, hostDebArch() ?? 'amd64')
    .option('--out <dir>', 'directory for the .deb', path.join(PROJECT, 'dist', 'packages'))
    .option('--version <version>', "package version (default: package.json's)")
    .option('--maintainer <who>', 'Maintainer: field, "Name <email>"')
    .option('--xz-level <n>', 'xz compression level, 0 (fastest) to 9 (smallest)', '6')
    .option(
      '--cache-dir <dir>',
      'verified Node.js runtime tarballs, kept between builds',
      path.join(PROJECT, 'node_modules', '.cache', 'ota-agent-package'),
    );
  const parsed = parseCommand(cmd, argv, io);
  if (parsed !== undefined) return parsed;
  const opts = cmd.opts<Options>();
  let arch: ReturnType<typeof debArch>;
  try {
    arch = debArch(opts.arch);
  } catch (e) {
    io.err.write(`package:agent: usage error: ${(e as Error).message}\n`);
    return 2;
  }
  if (!/^[0-9]$/.test(opts.xzLevel)) {
    io.err.write(`package:agent: usage error: --xz-level ${opts.xzLevel}: use 0 (fastest) to 9 (smallest)\n`);
    return 2;
  }
  try {
    const epoch = Number(process.env.SOURCE_DATE_EPOCH);
    const result = await buildAgentDeb({
      arch,
      projectDir: PROJECT,
      outDir: path.resolve(opts.out),
      cacheDir: path.resolve(opts.cacheDir),
      ...(opts.version ? { version: opts.version } : {}),
      ...(opts.maintainer ? { maintainer: opts.maintainer } : {}),
      xzLevel: Number(opts.xzLevel),
      ...(Number.isFinite(epoch) && epoch > 0 ? { sourceDateEpoch: epoch } : {}),
      log: (line) => io.err.write(`package:agent: ${line}\n`),
    });
    const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
    io.out.write(
      `${result.file}\n  ${mb(result.debBytes)} MB (.deb), ${mb(result.installedKiB * 1024)} MB installed, ${result.packages.length} npm packages\n`,
    );
    return 0;
  } catch (e) {
    io.err.write(`package:agent: error: ${(e as Error).message}\n`);
    return 1;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  process.exitCode = await packageAgentMain(process.argv.slice(2), { out: process.stdout, err: process.stderr });
}
