import path from 'node:path';
import { Command } from 'commander';
import { runSubcommand, type Writer } from '../subcommand.js';
import { syncArtifacts } from './artifact-sync.js';

/**
 * `ota-coordinator sync-artifacts --to DIR`: copies the artifacts not yet there into the directory
 * an HTTP origin or CDN serves for `--artifacts-url` (docs/brokers.md, "Artifacts from an
 * origin"). Safe to run again and from cron. Returns the exit code.
 */
export function syncArtifactsCommand(
  argv: string[],
  out: Writer = process.stdout,
  err: Writer = process.stderr,
): Promise<number> {
  const cmd = new Command('ota-coordinator sync-artifacts')
    .description('copy new artifacts into the directory your HTTP origin or CDN serves (for --artifacts-url)')
    .requiredOption('--to <dir>', "the origin's document root: files go to <dir>/artifacts/sha256/<sha256>")
    .option(
      '--data <dir>',
      "the coordinator's data directory (env OTA_DATA; default ./.ota-data, $STATE_DIRECTORY under systemd)",
    );
  return runSubcommand<{ to: string; data?: string }>(
    'ota-coordinator sync-artifacts',
    cmd,
    argv,
    { out, err },
    async (o) => {
      const data = path.resolve(o.data ?? process.env.OTA_DATA ?? process.env.STATE_DIRECTORY ?? '.ota-data');
      const r = await syncArtifacts(data, path.resolve(o.to), (hex, size) =>
        out.write(`copied ${hex} (${size} bytes)\n`),
      );
      out.write(`${r.copied} copied (${r.bytes} bytes), ${r.present} already there\n`);
    },
  );
}
