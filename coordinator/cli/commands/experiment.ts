import { type Command, InvalidArgumentError } from 'commander';
import { type Comparison, formatDifference, formatDuration } from '../../experiments/compare.js';
import type { ExperimentStatusResult, ExperimentView } from '../../experiments/experiment-service.js';
import { parseMetricSpec } from '../../experiments/metric-spec.js';
import { remoteCommand, withSession } from '../connection.js';
import type { CliIo } from '../io.js';
import { collect, duration, failureRate, positiveInt } from '../options.js';
import { paint, printJson, printTable, table } from '../render.js';
import { readAnalysisFile, wavesOption } from './rollout.js';

/** `--metric 'latency_ms p95 <= +10%'`, checked here so a typo is a usage error with the help. */
function metricOption(value: string, previous: string[] | undefined): string[] {
  try {
    parseMetricSpec(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return collect(value, previous);
}

function splitOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 99)
    throw new InvalidArgumentError("the candidate arm's percent of the group: a whole number from 1 to 99");
  return n;
}

function alphaOption(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 0.2)) throw new InvalidArgumentError('a false-alarm rate in (0, 0.2], e.g. 0.05');
  return n;
}

/** better green, worse red, inconclusive yellow. */
function verdictCell(io: CliIo, verdict: string): string {
  if (verdict === 'better') return io.color.green(verdict);
  if (verdict === 'worse') return io.color.red(verdict);
  return io.color.yellow(verdict);
}

function value(v: number | null, metric: string): string {
  if (v === null) return '-';
  if (metric === 'error_rate') return `${(v * 100).toFixed(2)}%`;
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
}

/** The comparison as a table: arms, then one row per metric, then why no decision is taken. */
export function renderComparison(io: CliIo, c: Comparison): string {
  const lines: string[] = [];
  lines.push(
    `experiment ${io.color.bold(c.experiment)} (${c.model}) ${paint(io, c.status)} for ${formatDuration(c.elapsedMs)}, look ${c.look.index}, intervals at ${(c.look.level * 100).toFixed(2)}%`,
  );
  lines.push(
    table(
      io,
      ['ARM', 'VERSION', 'DEVICES', 'REPORTING', 'SAMPLES', 'ERRORS'],
      [c.control, c.candidate].map((a) => [
        a.arm,
        a.version,
        String(a.devices),
        String(a.reporting),
        String(a.samples),
        String(a.errors),
      ]),
    ),
  );
  lines.push('');
  lines.push(
    table(
      io,
      ['METRIC', 'CONTROL', 'CANDIDATE', 'DIFFERENCE', 'INTERVAL', 'LIMIT', 'VERDICT'],
      c.metrics.map((m) => {
        const d = m.difference;
        const f = (v: number | null) => (v === null ? '?' : formatDifference(v, m));
        return [
          m.metric,
          value(m.control, m.metric),
          value(m.candidate, m.metric),
          d ? f(d.estimate) : '-',
          d ? `[${f(d.low)}, ${f(d.high)}]` : '-',
          `${m.direction === 'lower_is_better' ? '<=' : '>='} ${formatDifference(m.threshold.value, m)}`,
          verdictCell(io, m.verdict),
        ];
      }),
    ),
  );
  const notes = c.metrics.filter((m) => m.note).map((m) => `${m.metric}: ${m.note}`);
  for (const n of notes) lines.push(`note: ${n}`);
  lines.push(
    `SRM: ${c.control.reporting}/${c.candidate.reporting} reporting devices, p = ${c.srm.p.toPrecision(2)}${c.srm.flagged ? ` ${io.color.red('MISMATCH')}` : ' ok'}`,
  );
  if (!c.ready) lines.push(`no automatic decision now: ${c.notReady.join('; ')}`);
  else if (c.status === 'running') lines.push(`next planned look at ${c.look.nextAt}`);
  return lines.join('\n');
}

function renderView(io: CliIo, e: ExperimentView): string {
  const lines = [
    `experiment ${io.color.bold(e.id)}: ${e.model} ${e.control} (control) vs ${e.candidate} (candidate) on group ${e.group}, status ${paint(io, e.status)}`,
    `split ${100 - e.split}/${e.split}: control ${e.arms.control} device(s), candidate ${e.arms.candidate} device(s)`,
    `metrics: ${e.metrics.join('; ')}`,
    `no automatic decision before ${formatDuration(e.minDurationMs)} and ${e.minDevices} reporting devices per arm; false-alarm rate ${e.alpha}`,
  ];
  if (e.lastLook) lines.push(`look ${e.lastLook.look} (${e.lastLook.at}): ${e.lastLook.outcome}, ${e.lastLook.detail}`);
  if (e.nextLookAt) lines.push(`next planned look at ${e.nextLookAt}`);
  if (e.endReason) lines.push(`ended ${e.endedAt}: ${e.endReason}`);
  return lines.join('\n');
}

export function registerExperiment(program: Command, io: CliIo): void {
  const experiment = program
    .command('experiment')
    .description('A/B experiments: split a group between two releases, compare their metrics, promote or stop');

  remoteCommand(experiment, 'create', 'split a group between a control and a candidate release and compare them')
    .requiredOption('--model <name>', 'the model')
    .requiredOption('--control <version>', 'the control release (published)')
    .requiredOption('--candidate <version>', 'the candidate release (published)')
    .requiredOption('--group <name>', 'the group to split')
    .option('--split <percent>', "the candidate arm's percent of the group (default 50)", splitOption, 50)
    .requiredOption(
      '--metric <spec>',
      "a guardrail, repeatable: METRIC [STAT] <= or >= THRESHOLD, e.g. 'latency_ms p95 <= +10%'",
      metricOption,
    )
    .option('--min-duration <duration>', 'no automatic decision before this, e.g. 30m (default 30m)', duration)
    .option(
      '--min-devices <n>',
      'no automatic decision before each arm has this many reporting devices (default 10)',
      positiveInt,
    )
    .option('--alpha <rate>', 'the chance an equal candidate is ever halted (default 0.05)', alphaOption)
    .option('--id <id>', 'the experiment id (default generated)')
    .action(
      async (
        opts: {
          model: string;
          control: string;
          candidate: string;
          group: string;
          split: number;
          metric: string[];
          minDuration?: number;
          minDevices?: number;
          alpha?: number;
          id?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const created = await withSession(io, cmd, (s) =>
          s.call<ExperimentView>('experiment.create', {
            model: opts.model,
            control: opts.control,
            candidate: opts.candidate,
            group: opts.group,
            split: opts.split,
            metrics: opts.metric,
            ...(opts.minDuration !== undefined ? { minDurationMs: opts.minDuration } : {}),
            ...(opts.minDevices !== undefined ? { minDevices: opts.minDevices } : {}),
            ...(opts.alpha !== undefined ? { alpha: opts.alpha } : {}),
            ...(opts.id ? { id: opts.id } : {}),
          }),
        );
        if (opts.json) return printJson(io, created);
        io.out(renderView(io, created));
        io.err(`next: \`otactl experiment compare ${created.id}\` once devices report metrics`);
      },
    );

  remoteCommand(experiment, 'ls', 'list experiments').action(async (opts: { json?: boolean }, cmd: Command) => {
    const list = await withSession(io, cmd, (s) => s.call<ExperimentView[]>('experiment.ls'));
    if (opts.json) return printJson(io, list);
    printTable(
      io,
      ['ID', 'MODEL', 'CONTROL', 'CANDIDATE', 'GROUP', 'SPLIT', 'STATUS', 'LAST LOOK', 'STARTED'],
      list.map((e) => [
        e.id,
        e.model,
        e.control,
        e.candidate,
        e.group,
        `${e.arms.control}/${e.arms.candidate}`,
        paint(io, e.status),
        e.lastLook ? `${e.lastLook.look}: ${e.lastLook.outcome}` : '-',
        e.startedAt,
      ]),
      "no experiments: start one with `otactl experiment create --model M --control V1 --candidate V2 --group G --metric 'latency_ms p95 <= +10%'`",
    );
  });

  remoteCommand(experiment, 'status <id>', 'an experiment: arms, looks, and what each device runs now').action(
    async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const status = await withSession(io, cmd, (s) => s.call<ExperimentStatusResult>('experiment.status', { id }));
      if (opts.json) return printJson(io, status);
      io.out(renderView(io, status));
      io.out('');
      io.out(
        table(
          io,
          ['DEVICE', 'ARM', 'STATE', 'RUNS', 'ONLINE'],
          status.devices.map((d) => [
            d.id,
            d.arm,
            d.state ? paint(io, d.state) : '-',
            d.current ?? '-',
            d.online ? paint(io, 'online') : paint(io, 'offline'),
          ]),
        ),
      );
    },
  );

  remoteCommand(
    experiment,
    'compare <id>',
    'the arms side by side: each metric, its difference across devices, a verdict',
  ).action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
    const c = await withSession(io, cmd, (s) => s.call<Comparison>('experiment.compare', { id }));
    if (opts.json) return printJson(io, c);
    io.out(renderComparison(io, c));
  });

  remoteCommand(
    experiment,
    'promote <id>',
    'hand the candidate to a rollout over the group (or move a channel), with the comparison as evidence',
  )
    .option('--waves <spec>', 'a rollout over the group in these waves, e.g. 10,50:manual,100', wavesOption)
    .option(
      '--analysis <file>',
      'with --waves: what its analysis gates (:analysis) check, a JSON file (docs/rollouts.md)',
    )
    .option('--max-failure-rate <rate>', 'the rollout halts above this failure rate (default 0)', failureRate)
    .option(
      '--channel <channel>',
      'the channel the rollout moves on completion, or --move-channel moves now (default stable)',
    )
    .option('--move-channel', 'move the channel to the candidate now instead of a rollout')
    .option('--yes', 'with --move-channel: confirm re-targeting more than 5 devices')
    .option('--force', 'promote although a metric is worse or the sample ratio is off')
    .action(
      async (
        id: string,
        opts: {
          waves?: string;
          analysis?: string;
          maxFailureRate?: number;
          channel?: string;
          moveChannel?: boolean;
          yes?: boolean;
          force?: boolean;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const analysis = opts.analysis === undefined ? undefined : await readAnalysisFile(cmd, opts.analysis);
        const promoted = await withSession(io, cmd, (s) =>
          s.call<ExperimentView & { evidence: string }>('experiment.promote', {
            id,
            ...(opts.waves !== undefined ? { waves: opts.waves } : {}),
            ...(analysis !== undefined ? { analysis } : {}),
            ...(opts.maxFailureRate !== undefined ? { maxFailureRate: opts.maxFailureRate } : {}),
            ...(opts.channel !== undefined ? { channel: opts.channel } : {}),
            ...(opts.moveChannel ? { moveChannel: true } : {}),
            ...(opts.yes ? { yes: true } : {}),
            ...(opts.force ? { force: true } : {}),
          }),
        );
        if (opts.json) return printJson(io, promoted);
        const to = promoted.promotedTo;
        io.out(
          `promoted ${promoted.candidate} ${to && 'rolloutId' in to ? `to rollout ${to.rolloutId}` : `to channel ${to && 'channel' in to ? to.channel : '?'}`} ${promoted.evidence}`,
        );
        if (to && 'rolloutId' in to) io.err(`next: \`otactl rollout status ${to.rolloutId} --watch\``);
      },
    );

  remoteCommand(
    experiment,
    'stop <id>',
    'end an experiment: devices keep their arm, or --revert sends the candidate arm back to the control',
  )
    .option('--revert', 'send the candidate arm back to the control release')
    .action(async (id: string, opts: { revert?: boolean; json?: boolean }, cmd: Command) => {
      const stopped = await withSession(io, cmd, (s) =>
        s.call<ExperimentView>('experiment.stop', { id, revert: opts.revert === true }),
      );
      if (opts.json) return printJson(io, stopped);
      io.out(renderView(io, stopped));
    });
}
