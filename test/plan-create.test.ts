import t from 'tap';
import { type CreateSnapshot, planRolloutCreate } from '../coordinator/rollout/plan-create.js';
import { versionOfRelease } from '../shared/release-id.js';

// The rollout-create planner (design section 2): a snapshot and `now` in, one write plan out,
// every refusal with the problem and the fix, and nothing written on a refusal (it throws before
// any plan exists).

const NOW = '2026-12-05T10:00:00.000Z';

function snapshot(patch: Partial<CreateSnapshot> = {}): CreateSnapshot {
  return {
    releaseExists: true,
    eligibility: { eligible: true },
    rolloutExists: false,
    deviceIds: ['a', 'b', 'c', 'd'],
    online: (id) => id !== 'd',
    busyIn: () => [],
    desiredBefore: () => 'det@1.0.0',
    inputs: { revertTargetOf: (id) => (id === 'a' ? 'det@1.5.0' : id === 'b' ? null : undefined) },
    ...patch,
  };
}

const input = { id: 'r1', model: 'det', version: '2.0.0', strategy: { waves: [{ percent: 50 }, { percent: 100 }] } };

t.test('refusals name the problem and the fix', async (t) => {
  const cases: [string, Partial<CreateSnapshot>, object, RegExp, string][] = [
    ['release not published', { releaseExists: false }, {}, /no release det@2\.0\.0: publish it first/, 'E_NOT_FOUND'],
    ['id taken', { rolloutExists: true }, {}, /rollout r1 already exists/, 'E_CONFLICT'],
    ['no devices', { deviceIds: [] }, {}, /the target resolves to no devices/, 'E_NOT_FOUND'],
    [
      'devices busy in another rollout',
      { busyIn: (id) => (id === 'b' ? ['r0'] : []) },
      {},
      /1 device\(s\) are already in an active rollout or running experiment of det: b \(in r0\); finish or abort that rollout \(stop that experiment\) first/,
      'E_CONFLICT',
    ],
    [
      'many busy devices are listed up to 20',
      { deviceIds: Array.from({ length: 25 }, (_, i) => `x${i}`), busyIn: () => ['r0'] },
      {},
      /25 device\(s\) .*x19 \(in r0\), \.\.\./,
      'E_CONFLICT',
    ],
    ['bad strategy', {}, { strategy: { waves: [] } }, /waves is empty/, 'E_STRATEGY'],
  ];
  for (const [name, patch, inputPatch, message, code] of cases) {
    t.throws(
      () => planRolloutCreate({ ...input, ...inputPatch }, snapshot(patch), 'alice', NOW),
      { code, message },
      name,
    );
  }
});

t.test('a plan: the rollout, its rows with revert targets, wave 1 started, audit rows in order', async (t) => {
  const { rollout, devices, plan } = planRolloutCreate(input, snapshot(), 'alice', NOW);
  t.match(rollout, { id: 'r1', releaseId: 'det@2.0.0', channel: 'stable', status: 'running', currentWave: 0 });
  t.strictSame(
    devices.map((d) => [d.deviceId, d.online, d.previousReleaseId, d.state]),
    [
      ['a', true, 'det@1.5.0', 'pending'],
      ['b', true, null, 'pending'],
      ['c', true, 'det@1.0.0', 'pending'],
      ['d', false, 'det@1.0.0', 'pending'],
    ],
    'what it runs; runs nothing: null; never reported: its desired state before',
  );
  t.equal(plan.createRollout?.rollout, rollout);
  t.ok(plan.durable, 'a create is durable');
  t.strictSame(
    plan.audit.map((a) => [a.action, a.details.wave ?? null]),
    [
      ['rollout.created', null],
      ['rollout.wave_started', 1],
    ],
  );
  const wave1 = (plan.rolloutDevices?.devices ?? []).map((d) => d.deviceId);
  t.ok(wave1.length >= 1 && wave1.length <= 2, 'wave 1 (50%) assigned in the same plan');
  t.strictSame(
    plan.desired.map((d) => d.kind === 'set' && [d.deviceId, d.releaseId, d.rolloutId, d.source]),
    wave1.map((id) => [id, 'det@2.0.0', 'r1', 'rollout']),
  );
  const again = planRolloutCreate(input, snapshot(), 'alice', NOW);
  t.strictSame(
    again.devices.map((d) => d.wave),
    devices.map((d) => d.wave),
    'the split is a pure function of the rollout id and the devices',
  );
});

t.test('release ids', async (t) => {
  t.equal(versionOfRelease('det@2.0.0'), '2.0.0');
  t.equal(versionOfRelease('2.0.0'), '2.0.0', 'no model part: the whole text');
});
