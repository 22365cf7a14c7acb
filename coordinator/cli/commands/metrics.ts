import { type Command, InvalidArgumentError } from 'commander';
import { ownEntry } from '../../../shared/id-record.js';
import { CONFIDENCE_BINS } from '../../../shared/metrics/limits.js';
import { remoteCommand, type Session, withSession } from '../connection.js';
import { CliExit, EXIT_INTERRUPTED, EXIT_OK } from '../exit.js';
import type { CliIo } from '../io.js';
import { commaList, duration, positiveInt } from '../options.js';
import { printJson, table } from '../render.js';
import { fitWidth } from './rollout-watch.js';

/** What `metrics.query` answers (coordinator/metrics/metrics-recorder.ts), as the CLI reads it. */
export interface MetricsRowView {
  version: string;
  device?: string;
  devices: number;
  windows: number;
  samples: number;
  errors: number;
  errorRate: number | null;
  latencyMs: { p50: number; p95: number; p99: number; mean: number; relativeAccuracy: number } | null;
  confidence: { counts: number[]; samples: number } | null;
  values: Record<string, { p50: number; p95: number; p99: number; mean: number; samples: number }>;
}

export interface MetricsQueryView {
  model: string;
  source: string;
  from: string;
  to: string;
  grain: string;
  rows: MetricsRowView[];
}

const SPARKS = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/**
 * The confidence distribution as a small text histogram: one character per bin of width 0.1
 * from 0 to 1, its height relative to the fullest bin (a space for an empty bin).
 */
export function confidenceBars(counts: readonly number[]): string {
  const max = Math.max(0, ...counts);
  if (max === 0) return '-';
  return counts
    .map((c) => (c === 0 ? ' ' : SPARKS[Math.min(SPARKS.length - 1, Math.floor((c / max) * (SPARKS.length - 1e-9)))]))
    .join('');
}

/** The mean confidence from the bins' midpoints (within half a bin width). */
export function confidenceMean(counts: readonly number[]): number | null {
  let n = 0;
  let sum = 0;
  counts.forEach((c, i) => {
    n += c;
    sum += c * ((i + 0.5) / CONFIDENCE_BINS);
  });
  return n === 0 ? null : sum / n;
}

/** Milliseconds with 3 significant digits: 0.412, 12.3, 1,234. */
export function ms(value: number | null | undefined): string {
  if (value === null || value === undefined) return '-';
  if (value >= 1000) return Math.round(value).toLocaleString('en-US');
  return Number(value.toPrecision(3)).toString();
}

function percent(rate: number | null): string {
  if (rate === null) return '-';
  if (rate === 0) return '0%';
  return `${Number((rate * 100).toPrecision(2))}%`;
}

function clock(iso: string): string {
  return `${iso.slice(0, 16).replace('T', ' ')}Z`;
}

/** The table `otactl metrics` prints: one row per version (or device), side by side. */
export function renderMetrics(io: CliIo, r: MetricsQueryView): string {
  const byDevice = r.rows.some((row) => row.device !== undefined);
  const valueNames = [...new Set(r.rows.flatMap((row) => Object.keys(row.values)))].sort();
  const accuracy = Math.max(0, ...r.rows.map((row) => row.latencyMs?.relativeAccuracy ?? 0));
  const head = [
    ...(byDevice ? ['DEVICE'] : []),
    'VERSION',
    ...(byDevice ? [] : ['DEVICES']),
    'SAMPLES',
    'ERRORS',
    'P50 MS',
    'P95 MS',
    'P99 MS',
    'CONFIDENCE 0..1',
    ...valueNames.map((n) => `${n.toUpperCase()} P50/P95`),
  ];
  const rows = r.rows.map((row) => {
    const conf = row.confidence
      ? `${confidenceBars(row.confidence.counts)} ${ms(confidenceMean(row.confidence.counts))}`
      : '-';
    return [
      ...(byDevice ? [row.device ?? '-'] : []),
      row.version,
      ...(byDevice ? [] : [String(row.devices)]),
      row.samples.toLocaleString('en-US'),
      percent(row.errorRate),
      ms(row.latencyMs?.p50),
      ms(row.latencyMs?.p95),
      ms(row.latencyMs?.p99),
      conf,
      ...valueNames.map((n) => {
        // From JSON: a plain object, and a value may be named `constructor`.
        const v = ownEntry(row.values, n);
        return v ? `${ms(v.p50)}/${ms(v.p95)}` : '-';
      }),
    ];
  });
  const title = `model ${r.model}, ${r.source === 'probe' ? 'health probe' : 'application'} metrics, ${clock(r.from)} to ${clock(r.to)} (${r.grain} grain)`;
  if (rows.length === 0) {
    return `${title}\nno summaries in this range: devices send one per window (docs/metrics.md); check the model name and --since`;
  }
  const notes = [
    `latency quantiles within ${Number((accuracy * 100).toPrecision(2))}% (DDSketch); confidence: bins of 0.1 from 0 to 1, then the mean`,
  ];
  return [title, table(io, head, rows), ...notes.map((n) => io.color.dim(n))].join('\n');
}

interface MetricsOptions {
  model: string;
  version?: string;
  group?: string;
  devices?: string[];
  since: number;
  by: 'version' | 'device';
  source: 'app' | 'probe';
  watch?: boolean;
  intervalMs: number;
  json?: boolean;
}

function byOption(value: string): 'version' | 'device' {
  if (value !== 'version' && value !== 'device') throw new InvalidArgumentError('expected version or device');
  return value;
}

function sourceOption(value: string): 'app' | 'probe' {
  if (value !== 'app' && value !== 'probe') throw new InvalidArgumentError('expected app or probe');
  return value;
}

function argsOf(opts: MetricsOptions) {
  return {
    model: opts.model,
    ...(opts.version ? { version: opts.version } : {}),
    ...(opts.group ? { group: opts.group } : {}),
    ...(opts.devices ? { devices: opts.devices } : {}),
    sinceSeconds: Math.round(opts.since / 1000),
    by: opts.by,
    source: opts.source,
  };
}

/** `--watch`: the same query again every interval, redrawn in place (one JSON line each with --json). */
async function watchMetrics(io: CliIo, session: Session, opts: MetricsOptions): Promise<number> {
  const live = opts.json ? null : await io.live();
  return new Promise<number>((resolve, reject) => {
    let timer: NodeJS.Timeout | null = null;
    let finished = false;
    const stop = io.onInterrupt(() => {
      finished = true;
      if (timer) clearTimeout(timer);
      live?.done();
      resolve(EXIT_INTERRUPTED);
    });
    const tick = () => {
      session.call<MetricsQueryView>('metrics.query', argsOf(opts)).then(
        (r) => {
          if (finished) return;
          if (opts.json) io.out(JSON.stringify(r));
          else live?.update(fitWidth(renderMetrics(io, r), Number(io.env.COLUMNS) || process.stdout.columns || 100));
          timer = setTimeout(tick, opts.intervalMs);
        },
        (err: unknown) => {
          finished = true;
          stop();
          live?.done();
          reject(err);
        },
      );
    };
    tick();
  });
}

export function registerMetrics(program: Command, io: CliIo): void {
  remoteCommand(
    program,
    'metrics',
    "devices' inference metrics per version: latency, confidence, errors (docs/metrics.md)",
  )
    .requiredOption('--model <name>', 'the model')
    .option('--version <v>', 'only this version (default: every version, side by side)')
    .option('--group <name>', 'only the devices of this group')
    .option('--devices <ids>', 'only these devices (comma-separated, at most 1000)', commaList)
    .option('--since <duration>', 'from this long ago until now: 30m, 1h, 24h, 7d (default 1h)', duration, 3_600_000)
    .option('--by <what>', 'one row per version or per device (default version)', byOption, 'version')
    .option(
      '--source <what>',
      "app (the application's inferences) or probe (the agent's health probe)",
      sourceOption,
      'app',
    )
    .option('--watch', 'run the query again every interval and redraw')
    .option('--interval-ms <ms>', 'with --watch: how often (default 5000)', positiveInt, 5000)
    .action(async (opts: MetricsOptions, cmd: Command) => {
      if (opts.watch) {
        const code = await withSession(io, cmd, (s) => watchMetrics(io, s, opts));
        if (code !== EXIT_OK) throw new CliExit(code);
        return;
      }
      const r = await withSession(io, cmd, (s) => s.call<MetricsQueryView>('metrics.query', argsOf(opts)));
      if (opts.json) printJson(io, r);
      else io.out(renderMetrics(io, r));
    });
}
