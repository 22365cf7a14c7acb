import wrapAnsi from 'wrap-ansi';
import type { RolloutSummary } from '../../../shared/messages.js';
import { isOutcome, type RolloutStatus } from '../../../shared/states.js';
import { attentionRank } from '../../rollout/attention-order.js';
import type { RolloutDeviceView, RolloutStatusResult } from '../../rollout/types.js';
import type { Session } from '../connection.js';
import { EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK } from '../exit.js';
import type { CliIo } from '../io.js';
import { nextSteps, paint, renderSummary, summaryLine, table } from '../render.js';

/** Devices of the current wave shown under the summary; the rest are counted (a wave can be 9,000). */
const MAX_DEVICE_ROWS = 15;

/** Argo's convention: completed 0; halted or aborted non-zero; anything else keeps watching. */
export function exitCodeFor(status: RolloutStatus): number | null {
  switch (status) {
    case 'completed':
      return EXIT_OK;
    case 'halted':
    case 'aborted':
      return EXIT_FAILURE;
    default:
      return null;
  }
}

/** What a device reports now for the model, in a few words: "downloading 45%", "healthy 2.0.0". */
export function nowCell(d: RolloutDeviceView): string {
  const n = d.now;
  if (!n) return '-';
  const progress =
    n.state === 'downloading' && n.progress && n.progress.total > 0
      ? ` ${Math.floor((n.progress.bytes / n.progress.total) * 100)}%`
      : '';
  const version = n.state === 'idle' || isOutcome(n.state) ? ` ${n.current ?? '-'}` : ` ${n.version ?? '-'}`;
  return `${n.state}${progress}${version}`;
}

function errorCell(d: RolloutDeviceView, full: boolean): string {
  const e = d.error ?? d.now?.error ?? null;
  if (!e) return '-';
  return full ? `${e.code}: ${e.message}` : e.code;
}

/**
 * Every device of a rollout: wave (from 1), its state in the rollout, presence, what it reports
 * now (state, progress, the version it runs), where an abort sent it, and its error.
 */
export function devicesTable(io: CliIo, devices: readonly RolloutDeviceView[], fullErrors = true): string {
  return table(
    io,
    ['DEVICE', 'WAVE', 'STATE', 'ONLINE', 'NOW', 'REVERTED TO', 'ERROR'],
    [...devices]
      .sort((a, b) => a.wave - b.wave || a.id.localeCompare(b.id))
      .map((d) => [
        d.id,
        String(d.wave),
        paint(io, d.state),
        paint(io, d.online ? 'online' : 'offline'),
        nowCell(d),
        d.revertedTo ? (d.revertedTo.version ?? '(none: keeps what it runs)') : '-',
        errorCell(d, fullErrors),
      ]),
  );
}

/**
 * The current wave's devices, the failed and unfinished ones first (what an operator watches),
 * at most MAX_DEVICE_ROWS of them. `waveTotal`: the wave's device count when `devices` is only
 * the first page of it (the watch asks the coordinator for that page).
 */
export function currentWaveDevices(
  summary: RolloutSummary,
  devices: readonly RolloutDeviceView[],
  waveTotal?: number,
): { shown: RolloutDeviceView[]; more: number } {
  const wave = devices
    .filter((d) => d.wave === summary.currentWave)
    .sort((a, b) => attentionRank(a.state) - attentionRank(b.state) || a.id.localeCompare(b.id));
  const shown = wave.slice(0, MAX_DEVICE_ROWS);
  return { shown, more: Math.max(0, (waveTotal ?? wave.length) - shown.length) };
}

/** The current wave's devices as the watch last fetched them: the first page, and the wave's count. */
export interface WaveDevices {
  devices: readonly RolloutDeviceView[];
  total: number;
}

/** The whole picture for a terminal: summary, then the current wave's devices; wrapped at words. */
export function renderWatch(
  io: CliIo,
  summary: RolloutSummary,
  devices: readonly RolloutDeviceView[] | WaveDevices | null,
  columns: number,
): string {
  const parts = [renderSummary(io, summary)];
  if (devices) {
    const { shown, more } = waveRows(summary, devices);
    parts.push('', `wave ${summary.currentWave} devices`);
    parts.push(shown.length === 0 ? '  none' : devicesTable(io, shown, false));
    if (more > 0) parts.push(`  ... and ${more} more (otactl rollout status ${summary.id})`);
  }
  return fitWidth(parts.join('\n'), columns);
}

/** One line for pipes and logs: the summary line plus the current wave's devices, bounded. */
export function watchLine(summary: RolloutSummary, devices: readonly RolloutDeviceView[] | WaveDevices | null): string {
  const line = summaryLine(summary);
  if (!devices) return line;
  const { shown, more } = waveRows(summary, devices);
  const cells = shown.map((d) => `${d.id}=${nowCell(d).replaceAll(' ', ':')}${d.error ? `!${d.error.code}` : ''}`);
  return `${line} devices=${cells.join(',')}${more > 0 ? `,+${more}` : ''}`;
}

function waveRows(
  summary: RolloutSummary,
  devices: readonly RolloutDeviceView[] | WaveDevices,
): { shown: RolloutDeviceView[]; more: number } {
  return 'total' in devices
    ? currentWaveDevices(summary, devices.devices, devices.total)
    : currentWaveDevices(summary, devices);
}

/**
 * Wraps at spaces for a narrow terminal (log-update would cut words at the edge), continuation
 * lines indented; a word longer than the line is left whole (the terminal wraps it).
 */
export function fitWidth(text: string, columns: number): string {
  const width = Math.max(20, columns - 1);
  return text
    .split('\n')
    .map((line) => wrapAnsi(line, width, { hard: false, trim: true, wordWrap: true }).replaceAll('\n', '\n  '))
    .join('\n');
}

function terminalColumns(io: CliIo): number {
  const fromEnv = Number(io.env.COLUMNS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return process.stdout.columns || 80;
}

/**
 * `rollout status ID --watch`: follows the retained summary on `rollouts/{id}` (pushed on every
 * change), fetching `rollout.status` on each change (the current wave's devices) and every
 * `intervalMs` (download progress, and a safety net). Redraws in place on a terminal, one line per
 * change otherwise, one JSON summary per line with --json. Resolves the exit code: 0 completed, 1
 * halted or aborted, 130 on Ctrl-C.
 */
export async function watchRollout(
  io: CliIo,
  session: Session,
  id: string,
  opts: { json?: boolean; intervalMs: number },
): Promise<number> {
  const topic = session.topics.rollout(id);
  const live = opts.json ? null : await io.live();
  let last: RolloutSummary | null = null;
  let lastDevices: WaveDevices | null = null;
  let lastText = '';
  return new Promise<number>((resolve, reject) => {
    let finished = false;
    const finish = (outcome: number | Error) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      stopListening();
      live?.done();
      if (outcome instanceof Error) {
        reject(outcome);
        return;
      }
      if (last) {
        const s = last;
        if (outcome === EXIT_INTERRUPTED) io.err(`stopped watching; rollout ${s.id} is ${s.status} and goes on`);
        else if (s.status === 'completed') io.err(io.color.green(`rollout ${s.id} completed`));
        else {
          io.err(io.color.red(`rollout ${s.id} ${s.status}${s.haltReason ? `: ${s.haltReason}` : ''}`));
          const next = nextSteps(s);
          if (next) io.err(next);
        }
      }
      resolve(outcome);
    };
    const show = (s: RolloutSummary, devices: WaveDevices | null) => {
      if (finished || s.id !== id) return;
      if (last && s.updatedAt < last.updatedAt) return;
      if (devices) lastDevices = devices;
      const text = opts.json
        ? JSON.stringify(s)
        : io.stdoutIsTTY
          ? renderWatch(io, s, lastDevices, terminalColumns(io))
          : watchLine(s, lastDevices);
      last = s;
      if (text !== lastText) {
        lastText = text;
        if (opts.json) io.out(text);
        else live?.update(text);
      }
      const code = exitCodeFor(s.status);
      if (code !== null) finish(code);
    };
    const stopListening = io.onInterrupt(() => finish(EXIT_INTERRUPTED));
    // One status call at a time; a change that arrives meanwhile asks for one more.
    let polling = false;
    let again = false;
    const poll = (): void => {
      if (finished) return;
      if (polling) {
        again = true;
        return;
      }
      polling = true;
      // Only the first rows of the current wave, ranked by the coordinator (a wave can be
      // 45,000 devices: the whole list was ~15 MB a poll). Until the wave is known, or when it
      // moved on since the last summary, the summary alone, and at once another poll.
      const wave = last?.currentWave;
      const args = wave === undefined ? { id, limit: 1 } : { id, wave, order: 'attention', limit: MAX_DEVICE_ROWS };
      session.call<RolloutStatusResult>('rollout.status', args).then(
        (r) => {
          polling = false;
          const current = r.summary.currentWave === wave;
          if (!current) lastDevices = null; // another wave's rows: none until they are fetched
          show(r.summary, current ? { devices: r.devices, total: r.devicesTotal } : null);
          if (!current && !finished) again = true;
          if (again) {
            again = false;
            poll();
          }
        },
        (err: Error) => finish(err),
      );
    };
    const timer = setInterval(poll, opts.intervalMs);
    void session.closed('while watching the rollout').then(finish);
    session
      .subscribe(topic, () => {
        // The summary says something changed: fetch it with the devices.
        poll();
      })
      .then(poll, (err: Error) => finish(err));
  });
}
