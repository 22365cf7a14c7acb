import type { Command } from 'commander';
import type { GroupView } from '../../commands/views.js';
import { remoteCommand, withSession } from '../connection.js';
import { usageError } from '../exit.js';
import type { CliIo } from '../io.js';
import { commaList, labelPairs } from '../options.js';
import { formatLabels, printJson, printTable } from '../render.js';

function members(g: GroupView): string {
  return g.devices ? g.devices.join(',') : `selector ${formatLabels(g.selector)}`;
}

export function registerGroup(program: Command, io: CliIo): void {
  const group = program.command('group').description('named sets of devices, to target rollouts');

  remoteCommand(group, 'create <name>', 'a group: a device list (--devices) or a label selector (--selector)')
    .option('--devices <a,b,c>', 'the devices (repeatable)', commaList)
    .option('--selector <k=v>', 'devices with all these labels (repeatable, or k=v,k2=v2)', labelPairs)
    .action(
      async (
        name: string,
        opts: { devices?: string[]; selector?: Record<string, string>; json?: boolean },
        cmd: Command,
      ) => {
        if ((opts.devices === undefined) === (opts.selector === undefined)) {
          usageError(cmd, 'give either --devices a,b,c or --selector k=v (exactly one)');
        }
        const created = await withSession(io, cmd, (s) =>
          s.call<GroupView>('group.create', {
            name,
            ...(opts.devices ? { devices: opts.devices } : {}),
            ...(opts.selector ? { selector: opts.selector } : {}),
          }),
        );
        if (opts.json) return printJson(io, created);
        io.out(`group ${created.id}: ${members(created)}`);
      },
    );

  remoteCommand(group, 'ls', 'list groups').action(async (opts: { json?: boolean }, cmd: Command) => {
    const groups = await withSession(io, cmd, (s) => s.call<GroupView[]>('group.ls'));
    if (opts.json) return printJson(io, groups);
    printTable(
      io,
      ['NAME', 'MEMBERS', 'CREATED'],
      groups.map((g) => [g.id, members(g), g.createdAt]),
      'no groups: create one with `otactl group create NAME --selector site=hall-a`',
    );
  });
}
