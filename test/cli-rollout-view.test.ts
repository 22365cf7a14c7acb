import t from 'tap';
import {
  currentWaveDevices,
  fitWidth,
  nowCell,
  renderWatch,
  watchLine,
} from '../coordinator/cli/commands/rollout-watch.js';
import { nextSteps, renderSummary } from '../coordinator/cli/render.js';
import type { RolloutDeviceView } from '../coordinator/rollout/types.js';
import { type RolloutSummary, RolloutSummarySchema } from '../shared/messages.js';
import { renderIo } from './helpers/render-io.js';

// What `otactl rollout status [--watch]` shows (issue 11 items 3, 6, 13): waves numbered from 1,
// the next step that fits the halt, the current wave's devices under the summary, bounded, and
// lines that wrap at words in a narrow terminal.

const io = renderIo;

function summary(patch: Partial<RolloutSummary> = {}): RolloutSummary {
  return RolloutSummarySchema.parse({
    id: 'ro-mx666bb9-c58d11',
    model: 'detector',
    version: '2.0.0',
    status: 'running',
    currentWave: 2,
    maxFailureRate: 0.05,
    failures: { count: 0, acknowledged: 0, assigned: 41, rate: 0 },
    waves: [
      { wave: 1, percent: 1, approval: 'auto', state: 'completed', devices: 1, counts: { healthy: 1 }, reverted: 0 },
      {
        wave: 2,
        percent: 50,
        approval: 'manual',
        state: 'running',
        devices: 40,
        counts: { downloading: 30, healthy: 9, rolled_back: 1 },
        reverted: 0,
      },
      { wave: 3, percent: 100, approval: 'auto', state: 'pending', devices: 41, counts: { pending: 41 }, reverted: 0 },
    ],
    haltReason: null,
    abortPolicy: null,
    reverted: 0,
    updatedAt: '2026-12-05T10:00:00.000Z',
    ...patch,
  });
}

function device(i: number, state: RolloutDeviceView['state']): RolloutDeviceView {
  return {
    id: `industrial-camera-line-${String(i).padStart(3, '0')}`,
    wave: 2,
    state,
    online: true,
    assignedAt: null,
    finishedAt: null,
    error: state === 'rolled_back' ? { code: 'E_PROBE_FAILED', message: 'output y[0] is NaN' } : null,
    revertedTo: null,
    now:
      state === 'downloading'
        ? {
            state,
            version: '2.0.0',
            current: '1.0.0',
            progress: { bytes: 45, total: 100 },
            error: null,
            updatedAt: '2026-12-05T10:00:00.000Z',
          }
        : null,
  };
}

const devices: RolloutDeviceView[] = [
  ...Array.from({ length: 30 }, (_, i) => device(i, 'downloading')),
  ...Array.from({ length: 9 }, (_, i) => device(30 + i, 'healthy')),
  device(39, 'rolled_back'),
];

t.test('waves are numbered from 1 in the summary block', async (t) => {
  const text = renderSummary(io, summary());
  t.match(text, /\(wave 2 of 3,/);
  t.match(text, /^1\s+1%\s+auto\s+completed/m);
  t.match(text, /^3\s+100%\s+auto\s+pending/m);
  t.notMatch(text, /^0\s/m, 'no wave 0');
});

t.test('the next step fits the halt: failures to inspect, or a halt by hand with none', async (t) => {
  const byRule = nextSteps(
    summary({ status: 'halted', failures: { count: 1, acknowledged: 0, assigned: 41, rate: 1 / 41 } }),
  );
  t.match(byRule, /inspect the failures/);
  const byHand = nextSteps(summary({ status: 'halted', haltReason: 'checking the canary' }));
  t.notMatch(byHand, /inspect the failures/, 'no failures: nothing to inspect (item 6)');
  t.match(byHand, /halted by hand with no new failures/);
  const acknowledged = nextSteps(
    summary({ status: 'halted', failures: { count: 2, acknowledged: 2, assigned: 41, rate: 0 } }),
  );
  t.notMatch(acknowledged, /inspect the failures/, 'acknowledged failures are not new');
  t.match(nextSteps(summary({ status: 'waiting_approval' })), /starts wave 3/);
});

t.test("the watch shows the current wave's devices: failed and unfinished first, bounded", async (t) => {
  const { shown, more } = currentWaveDevices(summary(), devices);
  t.equal(shown.length, 15);
  t.equal(more, 25);
  t.equal(shown[0]?.state, 'rolled_back', 'the failure first');
  t.ok(
    shown.slice(1).every((d) => d.state === 'downloading'),
    'then the unfinished ones',
  );
  t.equal(nowCell(shown[1] as RolloutDeviceView), 'downloading 45% 2.0.0');
  const text = renderWatch(io, summary(), devices, 200);
  t.match(text, /wave 2 devices/);
  t.match(text, /industrial-camera-line-039\s+2\s+rolled_back.*E_PROBE_FAILED/);
  t.match(text, /\.\.\. and 25 more \(otactl rollout status ro-mx666bb9-c58d11\)/);
  const line = watchLine(summary(), devices);
  t.match(line, /devices=industrial-camera-line-039=-!E_PROBE_FAILED,/);
  t.match(line, /,\+25$/);
  // What the watch gets: the coordinator's first rows of the wave and the wave's count.
  const page = { devices: shown, total: 9_000 };
  t.match(renderWatch(io, summary(), page, 200), /\.\.\. and 8985 more \(otactl rollout status ro-mx666bb9-c58d11\)/);
  t.match(watchLine(summary(), page), /,\+8985$/);
  t.equal(currentWaveDevices(summary(), shown, 15).more, 0, 'the whole wave on screen: no more');
});

t.test('a narrow terminal wraps at words, never inside one', async (t) => {
  const wide = renderWatch(
    io,
    summary({ haltReason: 'failure rate 0.024 (1 of 41 assigned) exceeds max 0.000 in wave 2' }),
    devices,
    400,
  );
  const narrow = renderWatch(
    io,
    summary({ haltReason: 'failure rate 0.024 (1 of 41 assigned) exceeds max 0.000 in wave 2' }),
    devices,
    60,
  );
  const longest = Math.max(...narrow.split('\n').map((l) => l.length));
  // A word longer than the line may overflow (the terminal wraps it); nothing else does.
  const words = new Set(wide.split(/\s+/).filter((w) => w.length > 0));
  for (const l of narrow.split('\n')) {
    if (l.length > 59) t.ok(l.trim().split(/\s+/).length === 1, `only a single long word overflows: ${l}`);
  }
  t.ok(longest < 80, `lines fit a 60-column terminal (longest ${longest})`);
  const narrowWords = narrow.split(/\s+/).filter((w) => w.length > 0);
  t.ok(
    narrowWords.every((w) => words.has(w)),
    'every word of the narrow rendering is a whole word of the wide one (no word cut)',
  );
  t.equal(fitWidth('alpha beta gamma', 80), 'alpha beta gamma');
});
