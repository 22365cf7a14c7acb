import Table from 'cli-table3';
import type { RolloutSummary } from '../../shared/messages.js';
import type { CliIo } from './io.js';

/** Human output: borderless tables (easy to grep), states in colour on a terminal. */

export function table(io: CliIo, head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = new Table({
    head: head.map((h) => io.color.bold(h)),
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
    style: { 'padding-left': 0, 'padding-right': 0, head: [], border: [], compact: true },
  });
  for (const row of rows) t.push([...row]);
  return t
    .toString()
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n');
}

/** Prints a table, or a hint on stderr when there is nothing to show. */
export function printTable(
  io: CliIo,
  head: readonly string[],
  rows: readonly (readonly string[])[],
  emptyHint: string,
): void {
  if (rows.length === 0) {
    io.err(emptyHint);
    return;
  }
  io.out(table(io, head, rows));
}

export function printJson(io: CliIo, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

/** "12s ago", "3m ago", "2h ago", "4d ago"; "never" for null. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

const GOOD = new Set(['healthy', 'completed', 'online', 'ok']);
const BAD = new Set(['failed', 'rolled_back', 'halted', 'aborted', 'offline', 'revoked']);
const WAITING = new Set(['waiting_approval', 'pending', 'idle', 'assigned']);

/** A state word in the colour of its meaning: green good, red bad, yellow waiting, cyan busy. */
export function paint(io: CliIo, word: string): string {
  if (GOOD.has(word)) return io.color.green(word);
  if (BAD.has(word)) return io.color.red(word);
  if (WAITING.has(word)) return io.color.yellow(word);
  return io.color.cyan(word);
}

export function formatLabels(labels: Record<string, string> | null | undefined): string {
  const entries = Object.entries(labels ?? {});
  return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${v}`).join(',');
}

export function shortHash(hex: string, n = 12): string {
  return hex.length > n ? hex.slice(0, n) : hex;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function percent(rate: number): string {
  return `${(rate * 100).toFixed(rate === 0 || rate >= 0.1 ? 0 : 1)}%`;
}

function counts(io: CliIo, c: Partial<Record<string, number>>): string {
  const entries = Object.entries(c).filter(([, n]) => (n ?? 0) > 0);
  return entries.length === 0 ? '-' : entries.map(([state, n]) => `${paint(io, state)} ${n}`).join(', ');
}

/** failures vs tolerance: "1 of 4 assigned (25%) > tolerance 5%: halts". */
export function failureLine(io: CliIo, s: RolloutSummary): string {
  const f = s.failures;
  const over = f.rate > s.maxFailureRate;
  const rate = `${percent(f.rate)} ${over ? '>' : '<='} tolerance ${percent(s.maxFailureRate)}`;
  const acknowledged = f.acknowledged > 0 ? `, ${f.acknowledged} acknowledged by resume` : '';
  const text = `${f.count} of ${f.assigned} assigned${acknowledged}: rate ${rate}`;
  return f.count - f.acknowledged > 0 ? (over ? io.color.red(text) : io.color.yellow(text)) : text;
}

/** The rollout summary as a block: header, failures, halt reason, abort, one row per wave (numbered from 1). */
export function renderSummary(io: CliIo, s: RolloutSummary): string {
  const lines = [
    `${io.color.bold(`rollout ${s.id}`)}  ${s.model} ${s.version}  ${paint(io, s.status)}  (wave ${s.currentWave} of ${s.waves.length}, updated ${s.updatedAt})`,
    `failures  ${failureLine(io, s)}`,
  ];
  if (s.haltReason) lines.push(`reason    ${io.color.red(s.haltReason)}`);
  if (s.analysis) lines.push(`analysis  ${analysisLine(io, s.analysis)}`);
  if (s.abortPolicy) {
    lines.push(
      `aborted   policy ${s.abortPolicy}: ${s.reverted} device(s) sent back to the release they ran before (see REVERTED TO below)`,
    );
  }
  lines.push(
    table(
      io,
      ['WAVE', 'UP TO', 'GATE', 'STATE', 'DEVICES', 'BY STATE'],
      s.waves.map((w) => [
        String(w.wave),
        `${w.percent}%`,
        w.analysis ? `${w.approval}, analysis after` : w.approval,
        paint(io, w.state),
        String(w.devices),
        counts(io, w.counts) + (w.reverted > 0 ? `; sent back ${w.reverted}` : ''),
      ]),
    ),
  );
  return lines.join('\n');
}

/** The analysis gate: "wave 1 baking since T (0 of 3 measurements, failures 0, limit 0): detail". */
export function analysisLine(io: CliIo, a: NonNullable<RolloutSummary['analysis']>): string {
  const word =
    a.state === 'passed'
      ? io.color.green(a.state)
      : a.state === 'failed'
        ? io.color.red(a.state)
        : io.color.yellow(a.state);
  const head = `wave ${a.wave} ${word} since ${a.startedAt} (${a.measurements} of ${a.maxMeasurements} measurements, bake ${Math.round(a.bakeTimeMs / 60_000)}m, failures ${a.failures}, limit ${a.failureLimit})`;
  return a.detail ? `${head}: ${a.detail}` : head;
}

/** One line per change, for logs and pipes. */
export function summaryLine(s: RolloutSummary): string {
  const waves = s.waves
    .map((w) => {
      const c = Object.entries(w.counts)
        .filter(([, n]) => (n ?? 0) > 0)
        .map(([state, n]) => `${state}=${n}`)
        .join(',');
      return `w${w.wave}(${w.percent}%,${w.approval},${w.state},${w.devices}${c ? `:${c}` : ''})`;
    })
    .join(' ');
  const f = s.failures;
  const halt = s.haltReason ? ` reason=${JSON.stringify(s.haltReason)}` : '';
  const abort = s.abortPolicy ? ` abort=${s.abortPolicy} reverted=${s.reverted}` : '';
  return `${s.updatedAt} ${s.id} ${s.status} wave=${s.currentWave} ${waves} failures=${f.count}/${f.assigned} ack=${f.acknowledged} rate=${f.rate.toFixed(3)} max=${s.maxFailureRate}${halt}${abort}`;
}

/** What an operator can do next with a rollout in this status. */
export function nextSteps(s: RolloutSummary): string | null {
  const id = s.id;
  switch (s.status) {
    case 'waiting_approval':
      if (s.analysis?.state === 'baking' && s.analysis.wave === s.currentWave) {
        return `next: the analysis of wave ${s.currentWave} decides (pass: wave ${s.currentWave + 1} starts; fail: halt); \`otactl rollout approve ${id}\` overrides it`;
      }
      if (s.analysis?.state === 'inconclusive' && s.analysis.wave === s.currentWave) {
        return `next: the analysis was inconclusive: \`otactl rollout approve ${id}\` starts wave ${s.currentWave + 1}, or \`halt\` / \`abort\``;
      }
      return `next: \`otactl rollout approve ${id}\` starts wave ${s.currentWave + 1} (\`promote\` approves every remaining gate)`;
    case 'halted':
      // A halt by hand with no failures has nothing to inspect but its reason.
      return s.failures.count - s.failures.acknowledged > 0
        ? `next: inspect the failures (\`otactl rollout status ${id}\` lists each device's error), then \`otactl rollout resume ${id}\` or \`otactl rollout abort ${id} --policy revert\``
        : `next: halted by hand with no new failures; \`otactl rollout resume ${id}\` continues, \`otactl rollout abort ${id} --policy keep|revert\` ends it`;
    case 'running':
      return `follow it with \`otactl rollout status ${id} --watch\``;
    default:
      return null;
  }
}
