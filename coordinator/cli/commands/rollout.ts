import { readFile } from 'node:fs/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { RolloutSummary } from '../../../shared/messages.js';
import { ROLLOUT_DEVICE_STATES } from '../../../shared/states.js';
import { parseWaves } from '../../rollout/strategy.js';
import type { RolloutStatusResult } from '../../rollout/types.js';
import { remoteCommand, type Session, withSession } from '../connection.js';
import { CliExit, EXIT_OK, usageError } from '../exit.js';
import type { CliIo } from '../io.js';
import { commaList, failureRate, labelPairs, nonNegativeInt, positiveInt } from '../options.js';
import { nextSteps, paint, printJson, printTable, renderSummary, table } from '../render.js';
import { devicesTable, watchRollout } from './rollout-watch.js';

/** `--waves 1,10:manual,50,100`, checked here so a typo is a usage error with the help. */
export function wavesOption(value: string): string {
  try {
    parseWaves(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return value;
}

/** The --analysis file: JSON, checked by the coordinator (rollout/analysis-spec.ts); unreadable or not JSON is a usage error. */
export async function readAnalysisFile(cmd: Command, file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    usageError(
      cmd,
      `--analysis ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    usageError(
      cmd,
      `--analysis ${file} is not JSON (${(err as Error).message}): e.g. {"metrics": ["latency_ms p95 <= +10%"], "bakeTime": "30m"}`,
    );
  }
}

/** Device ids shown per wave when a rollout is created; the rest are counted. */
const IDS_SHOWN = 8;

/** The first ids of a wave and how many it has. */
function idsCell(ids: readonly string[], total: number): string {
  if (total === 0) return '-';
  const shown = ids.slice(0, IDS_SHOWN);
  return total > shown.length ? `${shown.join(',')} (+${total - shown.length} more)` : shown.join(',');
}

function printNext(io: CliIo, s: RolloutSummary): void {
  const next = nextSteps(s);
  if (next) io.err(next);
}

/** approve | promote | resume: `id` only; halt and abort add their argument. */
function registerAction(
  rollout: Command,
  io: CliIo,
  name: 'approve' | 'promote' | 'halt' | 'resume' | 'abort',
  description: string,
  extra: (cmd: Command) => Command = (c) => c,
  args: (opts: Record<string, unknown>) => Record<string, unknown> = () => ({}),
): void {
  extra(remoteCommand(rollout, `${name} <id>`, description)).action(
    async (id: string, opts: Record<string, unknown> & { json?: boolean }, cmd: Command) => {
      const summary = await withSession(io, cmd, (s) =>
        s.call<RolloutSummary>(`rollout.${name}`, { id, ...args(opts) }),
      );
      if (opts.json) return printJson(io, summary);
      io.out(renderSummary(io, summary));
      printNext(io, summary);
    },
  );
}

export function registerRollout(program: Command, io: CliIo): void {
  const rollout = program
    .command('rollout')
    .description('roll a release out in waves with a failure tolerance; approve, promote, halt, resume, abort');

  remoteCommand(rollout, 'create', 'start a rollout of a published release to a group, device list or label selector')
    .requiredOption('--model <name>', 'the model')
    .requiredOption('--version <version>', 'the release version to roll out (published first)')
    .option('--group <name>', 'target: a group')
    .option('--devices <a,b,c>', 'target: these devices (repeatable)', commaList)
    .option('--selector <k=v>', 'target: devices with all these labels (repeatable, or k=v,k2=v2)', labelPairs)
    .requiredOption(
      '--waves <spec>',
      'cumulative percents ending at 100, each auto (default) or :manual, e.g. 1,10:manual,50,100',
      wavesOption,
    )
    .option('--max-failure-rate <rate>', 'halt when the failure rate exceeds this, in [0, 1) (default 0)', failureRate)
    .option('--channel <channel>', 'channel moved to the release when the rollout completes (default stable)')
    .option(
      '--analysis <file>',
      'what analysis gates (a wave marked :analysis, e.g. --waves 5:analysis,25,100) check: a JSON file (docs/rollouts.md)',
    )
    .option('--id <id>', 'the rollout id (default generated)')
    .action(
      async (
        opts: {
          model: string;
          version: string;
          group?: string;
          devices?: string[];
          selector?: Record<string, string>;
          waves: string;
          maxFailureRate?: number;
          channel?: string;
          analysis?: string;
          id?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const analysis = opts.analysis === undefined ? undefined : await readAnalysisFile(cmd, opts.analysis);
        const targets = [opts.group, opts.devices, opts.selector].filter((x) => x !== undefined).length;
        if (targets !== 1) usageError(cmd, 'give exactly one target: --group G, --devices a,b or --selector k=v');
        const { summary, waveIds } = await withSession(io, cmd, async (s) => {
          const created = await s.call<RolloutSummary>('rollout.create', {
            model: opts.model,
            version: opts.version,
            waves: opts.waves,
            ...(opts.group ? { group: opts.group } : {}),
            ...(opts.devices ? { devices: opts.devices } : {}),
            ...(opts.selector ? { selector: opts.selector } : {}),
            ...(opts.maxFailureRate !== undefined ? { maxFailureRate: opts.maxFailureRate } : {}),
            ...(opts.channel ? { channel: opts.channel } : {}),
            ...(analysis !== undefined ? { analysis } : {}),
            ...(opts.id ? { id: opts.id } : {}),
          });
          if (opts.json) return { summary: created, waveIds: null };
          // The split, by name: which devices are the canaries. The first ids of each wave only
          // (a rollout of 50,000 devices is a ~15 MB list).
          const waveIds = await Promise.all(
            created.waves.map((w) =>
              s
                .call<RolloutStatusResult>('rollout.status', { id: created.id, wave: w.wave, limit: IDS_SHOWN })
                .then((r) => r.devices.map((d) => d.id)),
            ),
          );
          return { summary: created, waveIds };
        });
        if (opts.json || !waveIds) return printJson(io, summary);
        const total = summary.waves.reduce((n, w) => n + w.devices, 0);
        io.out(
          `rollout ${io.color.bold(summary.id)} created: ${summary.model} ${summary.version} on ${total} device(s), failure tolerance ${summary.maxFailureRate}, status ${paint(io, summary.status)}`,
        );
        // A small target cut into many waves leaves some empty: they pass at once, gate included.
        const empty = summary.waves.filter((w) => w.devices === 0).map((w) => String(w.wave));
        if (empty.length > 0) {
          io.err(
            `note: wave${empty.length > 1 ? 's' : ''} ${empty.join(', ')} ${empty.length > 1 ? 'are' : 'is'} empty (${total} device(s) in ${summary.waves.length} waves) and pass${empty.length > 1 ? '' : 'es'} at once, manual gates included`,
          );
        }
        io.out(
          table(
            io,
            ['WAVE', 'UP TO', 'GATE', 'DEVICES', 'IDS'],
            summary.waves.map((w, i) => [
              String(w.wave),
              `${w.percent}%`,
              w.approval,
              String(w.devices),
              idsCell(waveIds[i] ?? [], w.devices),
            ]),
          ),
        );
        printNext(io, summary);
      },
    );

  remoteCommand(rollout, 'ls', 'list rollouts').action(async (opts: { json?: boolean }, cmd: Command) => {
    const rollouts = await withSession(io, cmd, (s) => s.call<RolloutSummary[]>('rollout.ls'));
    if (opts.json) return printJson(io, rollouts);
    printTable(
      io,
      ['ID', 'MODEL', 'VERSION', 'STATUS', 'WAVE', 'FAILURES', 'UPDATED'],
      rollouts.map((r) => [
        r.id,
        r.model,
        r.version,
        paint(io, r.status),
        `${r.currentWave}/${r.waves.length}`,
        `${r.failures.count}/${r.failures.assigned} (max ${r.maxFailureRate})`,
        r.updatedAt,
      ]),
      'no rollouts: start one with `otactl rollout create --model M --version V --group G --waves 1,10:manual,50,100`',
    );
  });

  remoteCommand(rollout, 'status <id>', 'a rollout: waves, gates, failures vs tolerance, its devices (all, or a page)')
    .option('--watch', 'follow it until it completes (exit 0), halts or is aborted (exit 1)')
    .option('--interval-ms <ms>', 'with --watch: also poll this often (default 2000)', positiveInt, 2000)
    .option('--wave <n>', 'list only the devices of this wave (from 1)', positiveInt)
    .addOption(
      new Option('--state <state>', 'list only the devices in this state (e.g. failed)').choices(ROLLOUT_DEVICE_STATES),
    )
    .option('--offset <n>', 'list the devices from this one on (0-based, default 0)', nonNegativeInt)
    .option('--limit <n>', 'list at most this many devices (default all; a page of a large rollout)', positiveInt)
    .action(
      async (
        id: string,
        opts: {
          watch?: boolean;
          intervalMs: number;
          json?: boolean;
          wave?: number;
          state?: string;
          offset?: number;
          limit?: number;
        },
        cmd: Command,
      ) => {
        if (opts.watch) {
          if ([opts.wave, opts.state, opts.offset, opts.limit].some((o) => o !== undefined)) {
            usageError(
              cmd,
              '--watch follows the summary; --wave, --state, --offset and --limit choose the devices listed without it',
            );
          }
          const code = await withSession(io, cmd, (s: Session) => watchRollout(io, s, id, opts));
          if (code !== EXIT_OK) throw new CliExit(code);
          return;
        }
        const filter = {
          ...(opts.wave !== undefined ? { wave: opts.wave } : {}),
          ...(opts.state !== undefined ? { state: opts.state } : {}),
        };
        const page = {
          ...(opts.offset !== undefined ? { offset: opts.offset } : {}),
          ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
        };
        const status = await withSession(io, cmd, (s) =>
          s.call<RolloutStatusResult>('rollout.status', { id, ...filter, ...page }),
        );
        if (opts.json) return printJson(io, status);
        io.out(renderSummary(io, status.summary));
        io.out('');
        const from = opts.offset ?? 0;
        const shown = status.devices.length;
        // The filter as typed, for the messages and the next page's flags.
        const flags = `${opts.wave !== undefined ? ` --wave ${opts.wave}` : ''}${opts.state !== undefined ? ` --state ${opts.state}` : ''}`;
        const matching = flags ? `${status.devicesTotal} match${flags}` : `the rollout has ${status.devicesTotal}`;
        if (shown > 0) io.out(devicesTable(io, status.devices));
        else if (status.devicesTotal > 0) io.out(`no devices from --offset ${from}: ${matching}`);
        else io.out(flags ? `no devices match${flags}` : 'no devices');
        if (shown > 0 && shown < status.devicesTotal) {
          const rest = from + shown < status.devicesTotal;
          const next =
            `${flags.trim()} --offset ${from + shown}${opts.limit !== undefined ? ` --limit ${opts.limit}` : ''}`.trim();
          io.out(
            `devices ${from + 1}-${from + shown} of ${status.devicesTotal}${rest ? `; the next page: ${next}` : ''}`,
          );
        }
        printNext(io, status.summary);
      },
    );

  registerAction(rollout, io, 'approve', 'start the next wave of a rollout waiting at a manual gate');
  registerAction(rollout, io, 'promote', 'approve every remaining gate now');
  registerAction(
    rollout,
    io,
    'halt',
    'stop assigning devices, with a reason',
    (c) => c.requiredOption('--reason <text>', 'why (kept in the audit log)'),
    (o) => ({ reason: o.reason }),
  );
  registerAction(rollout, io, 'resume', 'acknowledge the failures so far and go on');
  registerAction(
    rollout,
    io,
    'abort',
    'end a rollout: devices keep what they run, or go back to the release they ran healthy before it',
    (c) =>
      c.addOption(
        new Option(
          '--policy <policy>',
          'keep: each device keeps what it runs (one that rolled back stays on its earlier release); revert: every assigned device goes back to the release it ran healthy before this rollout',
        )
          .choices(['keep', 'revert'])
          .default('keep'),
      ),
    (o) => ({ policy: o.policy }),
  );
}
