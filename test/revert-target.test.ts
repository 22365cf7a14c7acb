import t from 'tap';
import { revertTarget, runningRelease } from '../coordinator/rollout/revert-target.js';
import type { ReportedModel } from '../shared/messages.js';
import { MODEL_STATES } from '../shared/states.js';

// The revert target (design section 6, "a revert goes back to the release the device last ran
// healthy, never to one that failed on it"), for every reported state.

function report(
  state: ReportedModel['state'],
  version: string | null,
  current: string | null,
  previous: string | null,
) {
  return {
    state,
    version,
    current,
    previousVersion: previous,
    rolloutId: null,
    progress: null,
    attempt: 0,
    error: null,
    updatedAt: '2026-12-05T00:00:00.000Z',
  } satisfies ReportedModel;
}

t.test('what a device runs, per reported state', async (t) => {
  // [state, version the state is about, current, previousVersion, expected]
  const table: [ReportedModel['state'], string | null, string | null, string | null, string | null][] = [
    ['idle', null, '2.0.0', '1.0.0', 'det@2.0.0'],
    ['idle', null, null, null, null],
    ['downloading', '3.0.0', '2.0.0', '1.0.0', 'det@2.0.0'],
    ['verifying', '3.0.0', '2.0.0', '1.0.0', 'det@2.0.0'],
    // The swap may have happened: `current` can be the unproven candidate.
    ['applying', '3.0.0', '3.0.0', '2.0.0', 'det@2.0.0'],
    ['probing', '3.0.0', '3.0.0', '2.0.0', 'det@2.0.0'],
    ['probing', '3.0.0', '3.0.0', null, null],
    ['healthy', '3.0.0', '3.0.0', '2.0.0', 'det@3.0.0'],
    // Rolled back from 3.0.0: the agent swapped back to 2.0.0, which is what it runs.
    ['rolled_back', '3.0.0', '2.0.0', '1.0.0', 'det@2.0.0'],
    ['failed', '3.0.0', '2.0.0', '1.0.0', 'det@2.0.0'],
    // The rollback itself failed (E_ROLLBACK): the failed version may still be linked.
    ['failed', '3.0.0', '3.0.0', '2.0.0', 'det@2.0.0'],
    ['rolled_back', '3.0.0', '3.0.0', '2.0.0', 'det@2.0.0'],
  ];
  const covered = new Set(table.map(([s]) => s));
  t.strictSame(
    [...MODEL_STATES].filter((s) => !covered.has(s)),
    [],
    'every model state is in the table',
  );
  for (const [state, version, current, previous, expected] of table) {
    t.equal(runningRelease('det', report(state, version, current, previous)), expected, `${state} ${current}`);
  }
  t.equal(runningRelease('det', undefined), undefined, 'never reported: unknown');
});

t.test('the target must be published here', async (t) => {
  // Never reported (fall back to the desired state before) is the planner's case: plan-create.test.ts.
  const published = (id: string) => id !== 'det@9.9.9-sideloaded';
  t.equal(revertTarget('det@2.0.0', published), 'det@2.0.0', 'what it runs');
  t.equal(revertTarget(null, published), null, 'runs nothing: remove the entry');
  t.equal(revertTarget('det@9.9.9-sideloaded', published), null, 'not published here: remove, it keeps what it runs');
});
