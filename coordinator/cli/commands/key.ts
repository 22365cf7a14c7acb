import type { Command } from 'commander';
import { publicKeyToJson, readPublicKeyFile } from '../../../shared/keys.js';
import type { KeyView } from '../../commands/views.js';
import { remoteCommand, withSession } from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { paint, printJson, printTable } from '../render.js';
import { registerKeyRotate } from './trust.js';

interface RevokeResult {
  id: string;
  revoked: boolean;
  affected: { releases: string[]; channels: string[]; devices: number };
}

/** `otactl key add | ls | revoke | rotate`: the release keys the coordinator (and agent configs) trust. */
export function registerKey(program: Command, io: CliIo): void {
  const key = program
    .command('key')
    .description('trusted release keys (the coordinator checks every release against them)');

  remoteCommand(key, 'add <file.pub>', 'trust a release public key (written by `otactl keygen`)')
    .option('--name <name>', 'a name to recognise the key by')
    .action(async (file: string, opts: { name?: string; json?: boolean }, cmd: Command) => {
      // Checked here first: a wrong file is named before anything is sent.
      const pub = publicKeyToJson(await readPublicKeyFile(file));
      const record = await withSession(io, cmd, (s) =>
        s.call<KeyView>('key.add', { key: pub, ...(opts.name ? { name: opts.name } : {}) }),
      );
      if (opts.json) return printJson(io, record);
      for (const line of keyValueLines([
        ['trusted key', record.id],
        ['name', record.name ?? '-'],
      ])) {
        io.out(line);
      }
      io.err('devices enrolled from now on trust it; existing agent configs list their trusted keys themselves');
    });

  remoteCommand(key, 'ls', 'list the trusted release keys').action(async (opts: { json?: boolean }, cmd: Command) => {
    const keys = await withSession(io, cmd, (s) => s.call<(KeyView & { status: string })[]>('key.ls'));
    if (opts.json) return printJson(io, keys);
    printTable(
      io,
      ['KEY ID', 'NAME', 'STATUS', 'ADDED'],
      // `status`: trusted, revoked, or "not in trust version N" after a rotation.
      keys.map((k) => [k.id, k.name ?? '-', paint(io, k.status), k.addedAt]),
      'no trusted release keys: add one with `otactl key add release.key.pub`',
    );
  });

  remoteCommand(
    key,
    'revoke <keyId>',
    'stop trusting a release key: releases no longer signed by enough trusted keys are never assigned again',
  ).action(async (keyId: string, opts: { json?: boolean }, cmd: Command) => {
    const result = await withSession(io, cmd, (s) => s.call<RevokeResult>('key.revoke', { keyId }));
    if (opts.json) return printJson(io, result);
    io.out(`revoked key ${result.id}`);
    const { releases, channels, devices } = result.affected;
    if (releases.length === 0) return;
    // Nothing is re-targeted by itself (docs/security.md): say what is left and how to move on.
    io.err(
      `${releases.length} release(s) are revoked now and will not be assigned again: ${releases.join(', ')}` +
        (channels.length > 0 ? `; channel(s) still pointing at them: ${channels.join(', ')}` : '') +
        `; ${devices} device desired state(s) still name them (devices verify with their own trusted keys).` +
        ' Sign the model again with a trusted key, publish it as a new version and move the channels (`otactl channel set`) or roll it out',
    );
  });

  registerKeyRotate(key, io);
}
