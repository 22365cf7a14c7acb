import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { toOtaError } from '../../shared/errors.js';
import { syncArtifacts } from './artifact-sync.js';

/**
 * `ota-coordinator sync-artifacts --to DIR`: copies the artifacts not yet there into the directory
 * an HTTP origin or CDN serves for `--artifacts-url` (docs/brokers.md, "Artifacts from an
 * origin"). Safe to run again and from cron. Returns the exit code.
 */
export async function syncArtifactsCommand(
  argv: string[],
  out: { write(s: string): unknown } = process.stdout,
  err: { write(s: string): unknown } = process.stderr,
): Promise<number> {
  const cmd = new Command('ota-coordinator sync-artifacts')
    .description('copy new artifacts into the directory your HTTP origin or CDN serves (for --artifacts-url)')
    .requiredOption('--to <dir>', "the origin's document root: files go to <dir>/artifacts/sha256/<sha256>")
    .option(
      '--data <dir>',
      "the coordinator's data directory (env OTA_DATA; default ./.ota-data, $STATE_DIRECTORY under systemd)",
    )
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s), writeErr: (s) => err.write(s) });
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  const o = cmd.opts<{ to: string; data?: string }>();
  const data = path.resolve(o.data ?? process.env.OTA_DATA ?? process.env.STATE_DIRECTORY ?? '.ota-data');
  try {
    const r = await syncArtifacts(data, path.resolve(o.to), (hex, size) =>
      out.write(`copied ${hex} (${size} bytes)\n`),
    );
    out.write(`${r.copied} copied (${r.bytes} bytes), ${r.present} already there\n`);
    return 0;
  } catch (e) {
    const error = toOtaError(e);
    err.write(`ota-coordinator sync-artifacts: error ${error.code}: ${error.message}\n`);
    return 1;
  }
}
