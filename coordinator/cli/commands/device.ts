import { promises as fs } from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { ListedDevice } from '../../../shared/device-row.js';
import { OtaError } from '../../../shared/errors.js';
import { writeFileAtomic } from '../../../shared/fs-atomic.js';
import { ownEntry } from '../../../shared/id-record.js';
import { probePublicTrust, tlsEndpoint } from '../../client/tls-trust.js';
import type { DesiredRecord, DeviceRecord, HistoryRecord } from '../../store/records.js';
import {
  type Connection,
  connectionFlags,
  remoteCommand,
  resolveConnection,
  Session,
  withSession,
} from '../connection.js';
import { type CliIo, keyValueLines } from '../io.js';
import { labelPairs, nonNegativeInt, positiveInt } from '../options.js';
import { ago, formatLabels, paint, printJson, printTable, table } from '../render.js';

/** A row of `device.ls` and `device.find` (shared/device-row.ts). */
type DeviceRow = ListedDevice;

interface AddResult {
  device: DeviceRecord;
  token: string;
  agentConfig: { trustedKeys: unknown[]; broker: { url: string; caFile?: string } } & Record<string, unknown>;
}

/** `--agent-ca-file`: a path on the device, absolute as the agent config requires (agent/config.ts). */
function devicePath(value: string): string {
  if (!path.posix.isAbsolute(value)) {
    throw new InvalidArgumentError(
      'expected the absolute path of the CA certificate on the device, e.g. /etc/ota-agent/ca.pem',
    );
  }
  return value;
}

/**
 * Before enrolling with --agent-config and no --agent-ca-file: an agent without `broker.caFile`
 * trusts only the public CAs bundled with Node. When otactl reaches the coordinator over TLS and
 * its certificate does not verify against those alone (self-signed, a private CA: what otactl
 * needs --ca for), the written config could not connect; refuse while nothing is enrolled yet.
 */
async function checkAgentTrust(conn: Connection): Promise<void> {
  const endpoint = tlsEndpoint(conn.url);
  if (!endpoint) return;
  const probe = await probePublicTrust(endpoint);
  // Unreachable: enrolling fails on its own, with the connection error.
  if (probe.verdict !== 'untrusted') return;
  throw new OtaError(
    'E_USAGE',
    `the coordinator's certificate at ${conn.url} is not publicly trusted (${probe.reason}), so an agent needs its CA certificate and the agent config would be incomplete; nothing was enrolled: copy the CA certificate (the one otactl gets with --ca) to the device and pass its path there with --agent-ca-file, e.g. --agent-ca-file /etc/ota-agent/ca.pem`,
  );
}

function modelsCell(io: CliIo, models: DeviceRow['models']): string {
  const entries = Object.entries(models);
  if (entries.length === 0) return '-';
  return entries
    .map(([model, m]) => {
      const runs = m.current && m.current !== m.version ? ` (runs ${m.current})` : '';
      const error = m.error ? ` ${io.color.red(m.error.code)}` : '';
      return `${model} ${m.version ?? '-'} ${paint(io, m.state)}${runs}${error}`;
    })
    .join('\n');
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

export function registerDevice(program: Command, io: CliIo): void {
  const device = program.command('device').description('enrol, list, inspect and remove devices');

  remoteCommand(device, 'add <id>', 'enrol a device; prints its token once')
    .option('--label <k=v>', 'a label, e.g. site=hall-a (repeatable, or k=v,k2=v2)', labelPairs)
    .option('--channel <channel>', 'the release channel it follows (default stable)')
    .option(
      '--agent-config <file>',
      'write the complete agent config for the device (id, token, broker, keys), mode 0600; never overwrites',
    )
    .option(
      '--agent-ca-file <path>',
      "where the coordinator's CA certificate is ON THE DEVICE (absolute), written as broker.caFile: needed over TLS when the certificate is not from a public CA",
      devicePath,
    )
    .action(
      async (
        id: string,
        opts: {
          label?: Record<string, string>;
          channel?: string;
          agentConfig?: string;
          agentCaFile?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        // Before enrolling: the token is shown once, so the file must be writable afterwards.
        if (opts.agentConfig && (await exists(opts.agentConfig))) {
          throw new OtaError(
            'E_EXISTS',
            `${opts.agentConfig} already exists; refusing to overwrite it (nothing was enrolled): choose another file`,
          );
        }
        const conn = await resolveConnection(connectionFlags(cmd), io);
        if (opts.agentConfig && !opts.agentCaFile) await checkAgentTrust(conn);
        const session = await Session.open(conn);
        let result: AddResult;
        try {
          result = await session.call<AddResult>('device.add', {
            id,
            ...(opts.label ? { labels: opts.label } : {}),
            ...(opts.channel ? { channel: opts.channel } : {}),
          });
        } finally {
          await session.close();
        }
        if (opts.agentCaFile) {
          result.agentConfig.broker = { ...result.agentConfig.broker, caFile: opts.agentCaFile };
        }
        let writeError: unknown = null;
        if (opts.agentConfig) {
          try {
            await writeFileAtomic(opts.agentConfig, `${JSON.stringify(result.agentConfig, null, 2)}\n`, {
              mode: 0o600,
              exclusive: true,
            });
          } catch (err) {
            writeError = err;
          }
        }
        if (opts.json) {
          printJson(io, {
            ...result,
            ...(opts.agentConfig && !writeError ? { agentConfigFile: opts.agentConfig } : {}),
          });
        } else {
          const rows: [string, string][] = [
            ['device', result.device.id],
            ['channel', result.device.channel],
            ['labels', formatLabels(result.device.labels)],
            ['token', result.token],
          ];
          if (opts.agentConfig && !writeError) rows.push(['agent config', `${opts.agentConfig} (mode 0600)`]);
          for (const line of keyValueLines(rows)) io.out(line);
          io.err(
            opts.agentConfig && !writeError
              ? `the token is shown only once and is in ${opts.agentConfig}: copy that file to the device as /etc/ota-agent/config.json`
              : 'the token is shown only once: keep it for the agent config (or enrol with --agent-config FILE)',
          );
        }
        const agentUrl = result.agentConfig.broker.url;
        // With --agent-config over TLS the trust was checked before enrolling. Otherwise: otactl
        // came over plain MQTT (its connection says nothing of the agent's certificate), or it
        // needed --ca itself and the config is only printed.
        const unsure = !tlsEndpoint(conn.url) || (!opts.agentConfig && conn.ca !== undefined);
        if (!opts.agentCaFile && tlsEndpoint(agentUrl) && unsure) {
          io.err(
            io.color.yellow(
              `warning: the agent of ${id} connects to ${agentUrl}: if that certificate is not from a public CA, the agent needs the CA certificate: copy it to the device and add its path as broker.caFile (otactl device add --agent-ca-file PATH)`,
            ),
          );
        }
        if (result.agentConfig.trustedKeys.length === 0) {
          io.err(
            io.color.yellow(
              `warning: the coordinator trusts no release key yet, so the agent config of ${id} lists none and ota-agent refuses it: trust a key first (\`otactl key add release.key.pub\`), then \`otactl device rm ${id}\` and enrol it again`,
            ),
          );
        }
        if (writeError) {
          const e = writeError instanceof OtaError ? writeError : new OtaError('E_IO', String(writeError));
          throw new OtaError(
            e.code,
            `${e.message}; the device is enrolled and its token is printed above: write the agent config by hand`,
          );
        }
      },
    );

  remoteCommand(device, 'ls', 'list devices: online, channel, per model version and state, last seen')
    .option('--limit <n>', 'list at most this many devices (default all; a page of a large fleet)', positiveInt)
    .option('--after <id>', 'list the devices whose id sorts after this one (the next page)')
    .action(async (opts: { json?: boolean; limit?: number; after?: string }, cmd: Command) => {
      // One more than the page, to know whether there is a next one.
      const page = await withSession(io, cmd, (s) =>
        s.call<DeviceRow[]>('device.ls', {
          ...(opts.after !== undefined ? { after: opts.after } : {}),
          ...(opts.limit !== undefined ? { limit: opts.limit + 1 } : {}),
        }),
      );
      const devices = opts.limit !== undefined ? page.slice(0, opts.limit) : page;
      const more = devices.length < page.length;
      if (opts.json) return printJson(io, devices);
      const now = Date.now();
      printTable(
        io,
        ['ID', 'ONLINE', 'CHANNEL', 'MODELS', 'LAST SEEN'],
        devices.map((d) => [
          d.id,
          paint(io, d.online ? 'online' : 'offline'),
          d.channel,
          modelsCell(io, d.models),
          ago(d.lastSeen, now),
        ]),
        opts.after !== undefined
          ? `no devices after ${opts.after}`
          : 'no devices: enrol one with `otactl device add ID --agent-config FILE`',
      );
      const last = devices.at(-1);
      if (more && last) io.out(`the next page: --after ${last.id} --limit ${opts.limit}`);
    });

  remoteCommand(
    device,
    'find [search]',
    "devices matching a search and filters, found by the coordinator (the dashboard's Devices view)",
  )
    .addHelpText(
      'after',
      '\n`search` matches an id or a label value (case ignored), or a label exactly as key=value.\nExamples:\n  otactl device find --state failed\n  otactl device find site=hall-a --model det --version 2.0.0\n  otactl device find cam --limit 100 --offset 100',
    )
    .option(
      '--state <state>',
      'online, offline, or a model state (idle, downloading, healthy, failed, rolled_back, ...)',
    )
    .option('--model <name>', 'devices reporting this model (--state and --version then apply to it)')
    .option('--version <version>', 'devices whose model runs or is installing this version')
    .option('--limit <n>', 'at most this many (default 50, at most 500)', positiveInt)
    .option('--offset <n>', 'skip this many matches (the next page)', nonNegativeInt)
    .action(
      async (
        search: string | undefined,
        opts: { json?: boolean; state?: string; model?: string; version?: string; limit?: number; offset?: number },
        cmd: Command,
      ) => {
        const found = await withSession(io, cmd, (s) =>
          s.call<{ total: number; offset: number; devices: DeviceRow[] }>('device.find', {
            ...(search !== undefined && search.trim() !== '' ? { text: search } : {}),
            ...(opts.state !== undefined ? { state: opts.state } : {}),
            ...(opts.model !== undefined ? { model: opts.model } : {}),
            ...(opts.version !== undefined ? { version: opts.version } : {}),
            ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
            ...(opts.offset !== undefined ? { offset: opts.offset } : {}),
          }),
        );
        if (opts.json) return printJson(io, found);
        const now = Date.now();
        printTable(
          io,
          ['ID', 'ONLINE', 'CHANNEL', 'MODELS', 'LAST SEEN'],
          found.devices.map((d) => [
            d.id,
            paint(io, d.online ? 'online' : 'offline'),
            d.channel,
            modelsCell(io, d.models),
            ago(d.lastSeen, now),
          ]),
          found.total === 0
            ? 'no device matches'
            : `no devices past the first ${found.total} (--offset ${found.offset})`,
        );
        const shown = found.offset + found.devices.length;
        if (found.devices.length > 0) {
          io.err(
            `${found.offset + 1}-${shown} of ${found.total} matching${shown < found.total ? `; the next page: --offset ${shown}${opts.limit !== undefined ? ` --limit ${opts.limit}` : ''}` : ''}`,
          );
        }
      },
    );

  remoteCommand(device, 'show <id>', 'one device: labels, facts, desired releases and its last 50 history rows').action(
    async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const d = await withSession(io, cmd, (s) =>
        s.call<DeviceRecord & { desired: DesiredRecord[]; history: HistoryRecord[] }>('device.show', { id }),
      );
      if (opts.json) return printJson(io, d);
      const facts = d.facts
        ? `${d.facts.arch}, ${d.facts.cpuCores} cores, ${d.facts.memoryMB} MB memory, ${d.facts.freeDiskMB} MB free disk, ${d.facts.os}`
        : '-';
      for (const line of keyValueLines([
        ['device', d.id],
        ['online', `${paint(io, d.online ? 'online' : 'offline')} (last seen ${ago(d.lastSeen)})`],
        ['channel', d.channel],
        ['labels', formatLabels(d.labels)],
        ['agent', d.agentVersion ?? '-'],
        ['trust', trustLine(d.lastReport?.trust)],
        ['facts', facts],
        ['enrolled', d.createdAt],
      ])) {
        io.out(line);
      }
      const reported = d.lastReport?.models ?? {};
      io.out('');
      io.out(io.color.bold('models'));
      const models = new Set([...d.desired.map((x) => x.model), ...Object.keys(reported)]);
      io.out(
        models.size === 0
          ? '-'
          : table(
              io,
              ['MODEL', 'DESIRED', 'BY', 'ROLLOUT', 'STATE', 'VERSION', 'RUNS', 'ERROR'],
              [...models].map((m) => {
                const want = d.desired.find((x) => x.model === m);
                const got = ownEntry(reported, m);
                return [
                  m,
                  want?.releaseId ?? '-',
                  want?.source ?? '-',
                  want?.rolloutId ?? '-',
                  got ? paint(io, got.state) : '-',
                  got?.version ?? '-',
                  got?.current ?? '-',
                  got?.error ? `${got.error.code}: ${got.error.message}` : '-',
                ];
              }),
            ),
      );
      io.out('');
      io.out(io.color.bold('history'));
      io.out(
        d.history.length === 0
          ? '-'
          : table(
              io,
              ['TIME', 'MODEL', 'STATE', 'VERSION', 'ROLLOUT', 'ERROR'],
              d.history.map((h) => [
                h.ts,
                h.model,
                paint(io, h.state),
                h.version ?? '-',
                h.rolloutId ?? '-',
                h.error ? `${h.error.code}: ${h.error.message}` : '-',
              ]),
            ),
      );
    },
  );

  remoteCommand(device, 'rm <id>', 'remove a device (its token stops working, its session ends)').action(
    async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const result = await withSession(io, cmd, (s) => s.call<{ id: string; removed: boolean }>('device.rm', { id }));
      if (opts.json) return printJson(io, result);
      io.out(`removed device ${result.id}`);
    },
  );
}

/** The trust version a device reports it verifies releases with, and the last document it refused. */
function trustLine(trust: NonNullable<DeviceRecord['lastReport']>['trust']): string {
  if (!trust) return '- (not reported)';
  const held = `version ${trust.version}${trust.version === 0 ? " (its config's keys)" : ''}`;
  const refused = trust.rejected
    ? `; refused version ${trust.rejected.version ?? '?'}: ${trust.rejected.error.code}: ${trust.rejected.error.message}`
    : '';
  return held + refused;
}
