import { type Command, Option } from 'commander';
import type { OperatorView } from '../../commands/views.js';
import type { Role } from '../../store/records.js';
import { remoteCommand, withSession } from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { printJson, printTable } from '../render.js';

export function registerOperator(program: Command, io: CliIo): void {
  const operator = program.command('operator').description('operator accounts: admin, operator or viewer');

  remoteCommand(operator, 'add <name>', 'create an operator account; prints its token once')
    .addOption(
      new Option('--role <role>', 'viewer: reads; operator: also releases, channels, rollouts; admin: everything')
        .choices(['admin', 'operator', 'viewer'])
        .makeOptionMandatory(),
    )
    .action(async (name: string, opts: { role: Role; json?: boolean }, cmd: Command) => {
      const result = await withSession(io, cmd, (s) =>
        s.call<{ id: string; role: Role; token: string }>('operator.add', { name, role: opts.role }),
      );
      if (opts.json) return printJson(io, result);
      for (const line of keyValueLines([
        ['operator', result.id],
        ['role', result.role],
        ['token', result.token],
      ])) {
        io.out(line);
      }
      io.err(
        `the token is shown only once: save it to a file (mode 0600) and use \`otactl --user ${result.id} --token-file FILE\`, or OTA_USER/OTA_TOKEN`,
      );
    });

  remoteCommand(operator, 'rm <name>', 'remove an operator account (its token stops working, its sessions end)').action(
    async (name: string, opts: { json?: boolean }, cmd: Command) => {
      const result = await withSession(io, cmd, (s) =>
        s.call<{ id: string; removed: boolean }>('operator.rm', { name }),
      );
      if (opts.json) return printJson(io, result);
      io.out(`removed operator ${result.id}`);
    },
  );

  remoteCommand(
    operator,
    'role <name>',
    "change an operator's role (its sessions end; it reconnects with the new role)",
  )
    .addOption(
      new Option('--role <role>', 'viewer: reads; operator: also releases, channels, rollouts; admin: everything')
        .choices(['admin', 'operator', 'viewer'])
        .makeOptionMandatory(),
    )
    .action(async (name: string, opts: { role: Role; json?: boolean }, cmd: Command) => {
      const result = await withSession(io, cmd, (s) =>
        s.call<{ id: string; role: Role }>('operator.role', { name, role: opts.role }),
      );
      if (opts.json) return printJson(io, result);
      io.out(`operator ${result.id} is now ${result.role}`);
    });

  remoteCommand(operator, 'ls', 'list operator accounts').action(async (opts: { json?: boolean }, cmd: Command) => {
    const operators = await withSession(io, cmd, (s) => s.call<OperatorView[]>('operator.ls'));
    if (opts.json) return printJson(io, operators);
    printTable(
      io,
      ['NAME', 'ROLE', 'CREATED'],
      operators.map((o) => [o.id, o.role, o.createdAt]),
      'no operators',
    );
  });
}
