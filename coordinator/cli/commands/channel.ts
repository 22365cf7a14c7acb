import type { Command } from 'commander';
import type { ChannelView } from '../../commands/views.js';
import { remoteCommand, withSession } from '../connection.js';
import type { CliIo } from '../io.js';
import { printJson, printTable } from '../render.js';

export function registerChannel(program: Command, io: CliIo): void {
  const channel = program
    .command('channel')
    .description('channel pointers: which release devices following a channel get');

  remoteCommand(
    channel,
    'set <model> <channel> <version>',
    'point a channel at a release: every device following it is re-targeted at once (except devices in a rollout)',
  )
    .option('--yes', 'confirm re-targeting more than 5 devices at once')
    .action(
      async (model: string, name: string, version: string, opts: { yes?: boolean; json?: boolean }, cmd: Command) => {
        const result = await withSession(io, cmd, (s) =>
          s.call<{ channel: ChannelView; retargeted: string[]; skippedInRollout: string[] }>('channel.set', {
            model,
            channel: name,
            version,
            ...(opts.yes ? { yes: true } : {}),
          }),
        );
        if (opts.json) return printJson(io, result);
        io.out(
          `${model}/${result.channel.channel} -> ${result.channel.releaseId}: ${result.retargeted.length} device(s) re-targeted${result.retargeted.length > 0 ? ` (${result.retargeted.slice(0, 20).join(', ')}${result.retargeted.length > 20 ? ', ...' : ''})` : ''}`,
        );
        if (result.skippedInRollout.length > 0) {
          io.out(
            `skipped (in an active rollout of ${model}, which owns them until it ends): ${result.skippedInRollout.join(', ')}`,
          );
        }
      },
    );

  remoteCommand(channel, 'ls', 'list channel pointers').action(async (opts: { json?: boolean }, cmd: Command) => {
    const channels = await withSession(io, cmd, (s) => s.call<ChannelView[]>('channel.ls'));
    if (opts.json) return printJson(io, channels);
    printTable(
      io,
      ['MODEL', 'CHANNEL', 'RELEASE', 'UPDATED'],
      channels.map((c) => [c.model, c.channel, c.releaseId, c.updatedAt]),
      'no channels: `otactl channel set MODEL CHANNEL VERSION`, or `release publish --channel`',
    );
  });
}
