import type { AuditEvent } from '../../shared/messages.js';
import type { FleetState } from './fleet-state.js';

/**
 * What the experiment views show (docs/experiments.md, docs/dashboard.md), computed by pure
 * functions from the replies of `experiment.ls`, `experiment.status` and `experiment.compare` (the
 * node tests check them; the views only lay them out). The result types are the page's copies of
 * the coordinator's: test/dashboard-experiments-model.test.ts assigns the coordinator's types to
 * them, so `npm run typecheck` fails when a result changes shape under the page.
 */

export type Arm = 'control' | 'candidate';
export const ARMS: readonly Arm[] = ['control', 'candidate'];

/** A row of `experiment.ls` (the coordinator's ExperimentView). */
export interface ExperimentRow {
  id: string;
  model: string;
  status: string;
  control: string;
  candidate: string;
  group: string;
  /** Percent of the group in the candidate arm. */
  split: number;
  arms: { control: number; candidate: number };
  metrics: string[];
  minDurationMs: number;
  minDevices: number;
  alpha: number;
  startedAt: string;
  endedAt: string | null;
  endReason: string | null;
  looksDone: number;
  lastLook: { look: number; at: string; outcome: string; detail: string } | null;
  nextLookAt: string | null;
  promotedTo: { rolloutId: string } | { channel: string } | null;
  createdBy: string;
}

export interface ExperimentDeviceRow {
  id: string;
  arm: Arm;
  state: string | null;
  current: string | null;
  online: boolean;
}

/** The result of `experiment.status`. */
export interface ExperimentStatusRow extends ExperimentRow {
  devices: ExperimentDeviceRow[];
}

export interface LatencyQuantiles {
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

/** One arm in `experiment.compare`. */
export interface ArmRow {
  arm: Arm;
  version: string;
  devices: number;
  reporting: number;
  samples: number;
  errors: number;
  latencyMs: LatencyQuantiles | null;
  /** Counts per confidence bin of width 0.1 over [0, 1]. */
  confidence: number[] | null;
}

export type Verdict = 'better' | 'worse' | 'inconclusive';

export interface Threshold {
  kind: 'relative' | 'absolute';
  value: number;
}

export interface MetricRow {
  spec: string;
  metric: string;
  direction: 'lower_is_better' | 'higher_is_better';
  threshold: Threshold;
  control: number | null;
  candidate: number | null;
  devices: { control: number; candidate: number };
  difference: { kind: 'relative' | 'absolute'; estimate: number; low: number | null; high: number | null } | null;
  p: number | null;
  verdict: Verdict;
  meetsThreshold: boolean;
  note: string | null;
}

/** The result of `experiment.compare`. */
export interface ComparisonRow {
  experiment: string;
  model: string;
  status: string;
  at: string;
  elapsedMs: number;
  look: { index: number; level: number; nextAt: string };
  control: ArmRow;
  candidate: ArmRow;
  srm: { observed: [number, number]; expected: [number, number]; chi2: number; p: number; flagged: boolean };
  ready: boolean;
  notReady: string[];
  metrics: MetricRow[];
}

// ---- the list ----

/** Running experiments first, then the most recently started. */
export function sortedExperiments(list: readonly ExperimentRow[]): ExperimentRow[] {
  return [...list].sort((a, b) => {
    const running = Number(b.status === 'running') - Number(a.status === 'running');
    return running || (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : a.id < b.id ? -1 : 1);
  });
}

/** `50/50 · 12 / 12`: the split (control/candidate percent) and the devices each arm holds. */
export function splitText(e: Pick<ExperimentRow, 'split' | 'arms'>): string {
  return `${100 - e.split}/${e.split} · ${e.arms.control} / ${e.arms.candidate}`;
}

/** `2: continue`, or `none yet`. */
export function lastLookText(e: Pick<ExperimentRow, 'lastLook'>): string {
  return e.lastLook ? `${e.lastLook.look}: ${e.lastLook.outcome.replace(/_/g, ' ')}` : 'none yet';
}

/** Whether an audit event is about this experiment (the coordinator's subjects are `experiment:<id>`). */
export function isExperimentEvent(e: Pick<AuditEvent, 'subject'>, id: string): boolean {
  return e.subject === `experiment:${id}`;
}

/** Whether an audit event changes what the experiments list shows (created, looked at, ended). */
export function changesExperiments(e: Pick<AuditEvent, 'action'>): boolean {
  return e.action.startsWith('experiment.');
}

// ---- numbers as an operator reads them (the same as otactl experiment compare) ----

/** `1h30m`, `45s` (coordinator/experiments/compare.ts formatDuration). */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const parts = [d ? `${d}d` : '', h ? `${h}h` : '', m ? `${m}m` : '', sec && !d && !h ? `${sec}s` : ''];
  return parts.join('') || '0s';
}

/** A difference: `+21.3%`, `+0.62pp`, `-0.031` (coordinator/experiments/compare.ts formatDifference). */
export function formatDifference(v: number, spec: { metric: string; threshold: Threshold }): string {
  const sign = v >= 0 ? '+' : '-';
  const abs = Math.abs(v);
  if (spec.threshold.kind === 'relative') return `${sign}${(abs * 100).toFixed(1)}%`;
  if (spec.metric === 'error_rate') return `${sign}${(abs * 100).toFixed(2)}pp`;
  return `${sign}${abs.toPrecision(3)}`;
}

/** An arm's value of a metric: `1.25%` for an error rate, `12.3` or `128.4` otherwise, `–` for none. */
export function formatValue(v: number | null, metric: string): string {
  if (v === null) return '–';
  if (metric === 'error_rate') return `${(v * 100).toFixed(2)}%`;
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
}

/** `+21.3%`, or `–` without a difference. */
export function estimateText(m: MetricRow): string {
  return m.difference ? formatDifference(m.difference.estimate, m) : '–';
}

/** `[+15.2%, +27.9%]`; `?` for a bound too few devices allow; `–` without a difference. */
export function intervalText(m: MetricRow): string {
  const d = m.difference;
  if (!d) return '–';
  const f = (v: number | null) => (v === null ? '?' : formatDifference(v, m));
  return `[${f(d.low)}, ${f(d.high)}]`;
}

/** `<= +10.0%`: the direction and the allowed difference. */
export function limitText(m: Pick<MetricRow, 'metric' | 'direction' | 'threshold'>): string {
  return `${m.direction === 'lower_is_better' ? '≤' : '≥'} ${formatDifference(m.threshold.value, m)}`;
}

const VERDICT_SYMBOLS: Record<Verdict, string> = { better: '▲', worse: '▼', inconclusive: '≈' };

/** A verdict's symbol: with its word and colour, never the colour alone. */
export function verdictSymbol(v: Verdict): string {
  return VERDICT_SYMBOLS[v] ?? '•';
}

/** `98.33%`: the level of the look's intervals. */
export function levelText(level: number): string {
  return `${(level * 100).toFixed(2)}%`;
}

/** A p-value: `0.87`, `3.1e-5`. */
export function pText(p: number): string {
  return p >= 0.001 ? p.toPrecision(2) : p.toExponential(1);
}

export interface SrmLine {
  flagged: boolean;
  text: string;
  /** Why no decision is taken, from `notReady`, when the mismatch is one of the reasons. */
  reason: string | null;
}

/** The sample-ratio check in a line, red with its reason when it flags. */
export function srmLine(c: Pick<ComparisonRow, 'srm' | 'notReady'>): SrmLine {
  const [control, candidate] = c.srm.observed;
  const [ec, ek] = c.srm.expected;
  const text = `reporting devices control ${control}, candidate ${candidate} (expected ${ec.toFixed(1)} / ${ek.toFixed(1)}), χ² ${c.srm.chi2.toFixed(2)}, p = ${pText(c.srm.p)}: ${c.srm.flagged ? 'sample ratio mismatch' : 'ok'}`;
  const reason = c.notReady.find((r) => r.startsWith('sample ratio mismatch')) ?? null;
  return { flagged: c.srm.flagged, text, reason: c.srm.flagged ? reason : null };
}

/** Why no automatic decision is taken now, without the mismatch (the SRM line says that one). */
export function otherNotReady(c: Pick<ComparisonRow, 'notReady'>): string[] {
  return c.notReady.filter((r) => !r.startsWith('sample ratio mismatch'));
}

/**
 * Whether `experiment.compare` is worth asking again: always while the experiment runs (its
 * devices' summaries keep arriving), once more after it ended (the comparison it ended on), then
 * never: an ended experiment's comparison no longer changes.
 */
export function needsComparison(status: string | null, last: Pick<ComparisonRow, 'status'> | null): boolean {
  if (last === null || status === null) return true;
  return status === 'running' || last.status !== status;
}

// ---- devices ----

export interface ArmDevices {
  /** Devices the arm holds (as of the last `experiment.status`). */
  devices: number;
  online: number;
  /** Devices whose last report says they run the arm's version. */
  onVersion: number;
}

/** Per arm: how many devices, how many online, how many run the arm's version (from `experiment.status`). */
export function armDevices(s: Pick<ExperimentStatusRow, 'devices' | 'control' | 'candidate'>): Record<Arm, ArmDevices> {
  const out: Record<Arm, ArmDevices> = {
    control: { devices: 0, online: 0, onVersion: 0 },
    candidate: { devices: 0, online: 0, onVersion: 0 },
  };
  for (const d of s.devices) {
    const a = out[d.arm];
    if (!a) continue;
    a.devices++;
    if (d.online) a.online++;
    if (d.current === (d.arm === 'control' ? s.control : s.candidate)) a.onVersion++;
  }
  return out;
}

export interface ExperimentDevicePage {
  rows: ExperimentDeviceRow[];
  total: number;
  page: number;
  pages: number;
}

/** The experiment's devices in the order the page lists them: control first, then by id. */
export function sortExperimentDevices(rows: readonly ExperimentDeviceRow[]): ExperimentDeviceRow[] {
  return [...rows].sort((a, b) =>
    a.arm !== b.arm ? (a.arm === 'control' ? -1 : 1) : a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
  );
}

/**
 * One page of the experiment's devices (`sorted`: sortExperimentDevices, once per
 * `experiment.status`, not at every render); each row as the device's own live topics have it when
 * the page follows them (the rows on screen), else as `experiment.status` had it.
 */
export function experimentDevicePage(
  state: FleetState,
  model: string,
  sorted: readonly ExperimentDeviceRow[],
  page: number,
  pageSize = 50,
): ExperimentDevicePage {
  const pages = Math.max(1, Math.ceil(sorted.length / pageSize));
  const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
  const onScreen = sorted.slice((p - 1) * pageSize, p * pageSize).map((row) => {
    const report = state.reports.get(row.id);
    const m = report && Object.hasOwn(report.models, model) ? report.models[model] : undefined;
    const status = state.statuses.get(row.id);
    return {
      ...row,
      state: m ? m.state : row.state,
      current: m ? m.current : row.current,
      online: status ? status.online : row.online,
    };
  });
  return { rows: onScreen, total: sorted.length, page: p, pages };
}

// ---- actions ----

export type ExperimentAction = 'stop' | 'stop-revert' | 'promote';

export const ACTION_OPS: Record<ExperimentAction, string> = {
  stop: 'experiment.stop',
  'stop-revert': 'experiment.stop',
  promote: 'experiment.promote',
};

/** The actions a running experiment allows that the operator's role may call (an ended one allows none). */
export function experimentActions(e: Pick<ExperimentRow, 'status'>, ops: ReadonlySet<string>): ExperimentAction[] {
  if (e.status !== 'running') return [];
  return (['promote', 'stop', 'stop-revert'] as const).filter((a) => ops.has(ACTION_OPS[a]));
}

const plural = (n: number) => `${n} device${n === 1 ? '' : 's'}`;

/** What stop does, in numbers, for its confirmation. */
export function describeStop(
  e: Pick<ExperimentRow, 'id' | 'model' | 'control' | 'candidate' | 'arms'>,
  revert: boolean,
): { title: string; effect: string } {
  if (revert) {
    return {
      title: `Stop ${e.id} and revert`,
      effect: `The experiment ends and the ${plural(e.arms.candidate)} of the candidate arm ${e.arms.candidate === 1 ? 'is' : 'are'} sent back to ${e.model} ${e.control} (the control release); the ${plural(e.arms.control)} of the control arm ${e.arms.control === 1 ? 'keeps' : 'keep'} it. Its devices are free again for rollouts and channel moves.`,
    };
  }
  return {
    title: `Stop ${e.id}`,
    effect: `The experiment ends. Every device keeps its arm's release: ${plural(e.arms.control)} on ${e.model} ${e.control}, ${plural(e.arms.candidate)} on ${e.model} ${e.candidate}. Its devices are free again for rollouts and channel moves.`,
  };
}

/** Why the coordinator would refuse to promote without `force` (docs/experiments.md). */
export function promoteBlockers(c: Pick<ComparisonRow, 'metrics' | 'srm'> | null): string[] {
  if (!c) return [];
  return [
    ...c.metrics.filter((m) => m.verdict === 'worse').map((m) => `${m.metric} is worse than its threshold`),
    ...(c.srm.flagged ? ['the sample ratio is off (SRM)'] : []),
  ];
}

export interface PromoteForm {
  waves: string;
  moveChannel: boolean;
  /** The channel (blank: stable). */
  channel: string;
  force: boolean;
}

export const DEFAULT_PROMOTE_FORM: PromoteForm = { waves: '10,50,100', moveChannel: false, channel: '', force: false };

export type PromotePlan =
  | { ok: true; args: Record<string, unknown>; title: string; effect: string }
  | { ok: false; problem: string };

/**
 * The `experiment.promote` arguments of the form, and what they will do for the confirmation.
 * The coordinator checks everything again (the waves' syntax, the channel's name, the guardrails),
 * and its refusal is shown as it says it; only a blank waves field is caught here.
 */
export function promotePlan(
  e: Pick<ExperimentRow, 'id' | 'model' | 'candidate' | 'group' | 'arms'>,
  form: PromoteForm,
  blockers: readonly string[],
): PromotePlan {
  const channel = form.channel.trim();
  const waves = form.waves.replace(/\s+/g, '');
  if (!form.moveChannel && waves === '') {
    return {
      ok: false,
      problem:
        'Give the waves of the rollout (cumulative percents ending at 100, e.g. 10,50,100), or move the channel.',
    };
  }
  const forced =
    form.force && blockers.length > 0
      ? ` Forced although ${blockers.join(' and ')}: the audit records that you overrode the guardrails.`
      : '';
  const total = e.arms.control + e.arms.candidate;
  const args: Record<string, unknown> = { id: e.id };
  if (channel !== '') args.channel = channel;
  if (form.force) args.force = true;
  if (form.moveChannel) {
    // The confirmation is the "yes" otactl asks for above 5 devices.
    args.moveChannel = true;
    args.yes = true;
    return {
      ok: true,
      args,
      title: `Promote ${e.id}: move channel ${channel || 'stable'} now`,
      effect: `Channel ${channel || 'stable'} of ${e.model} moves to ${e.candidate} now: every device that follows it and no rollout or experiment owns is sent ${e.model} ${e.candidate} at once, without waves. The experiment ends as promoted, with the comparison as evidence in the audit.${forced}`,
    };
  }
  args.waves = waves;
  return {
    ok: true,
    args,
    title: `Promote ${e.id}: a rollout in waves ${waves}`,
    effect: `A rollout of ${e.model} ${e.candidate} over group ${e.group} (${plural(total)}) starts in waves ${waves}; its completion moves channel ${channel || 'stable'}. The experiment ends as promoted, with the comparison as evidence in the audit.${forced}`,
  };
}
