import path from 'node:path';
import t, { type Test } from 'tap';
import type { Experiment } from '../coordinator/experiments/types.js';
import type { Rollout, RolloutDevice } from '../coordinator/rollout/types.js';
import { openStore, type SqliteStore } from '../coordinator/store/sqlite-store.js';
import { rolloutRecord } from './helpers/rollout-record.js';

// The store's reads about a list of devices at once (coordinator/store/target-reads.ts) against
// its per-device reads, on a real SQLite file: the same answer for every device of a list that
// mixes enrolled, unknown and repeated ids, and ids that are names of Object.prototype.

const NOW = '2026-12-08T10:00:00.000Z';

function release(s: SqliteStore, model: string, version: string, counter: number): void {
  const manifest = JSON.stringify({ model, version });
  s.addRelease({
    id: `${model}@${version}`,
    model,
    version,
    counter,
    sha256: 'f'.repeat(64),
    size: 1,
    envelope: { manifest, signatures: [{ keyId: 'a'.repeat(16), sig: 'c2ln' }] },
    publishedBy: 'admin',
    publishedAt: NOW,
  });
}

function rollout(id: string, model: string, status: Rollout['status'], createdAt: string): Rollout {
  const strategy = { waves: [{ percent: 100, approval: 'auto' as const }], maxFailureRate: 0.05 };
  return rolloutRecord({ id, model, version: '2.0.0', strategy, status, createdAt });
}

function member(deviceId: string): RolloutDevice {
  return {
    deviceId,
    wave: 0,
    state: 'pending',
    online: false,
    previousReleaseId: null,
    revertedTo: null,
    assignedAt: null,
    finishedAt: null,
    error: null,
  };
}

function experiment(id: string, model: string, status: Experiment['status'], startedAt: string): Experiment {
  return {
    id,
    model,
    control: { version: '1.0.0', releaseId: `${model}@1.0.0` },
    candidate: { version: '2.0.0', releaseId: `${model}@2.0.0` },
    group: 'g',
    split: 50,
    metrics: [],
    minDurationMs: 0,
    minDevices: 1,
    alpha: 0.05,
    status,
    endReason: null,
    looksDone: 0,
    lastLook: null,
    promotedTo: null,
    createdBy: 'alice',
    startedAt,
    updatedAt: startedAt,
    endedAt: null,
  };
}

/**
 * Devices d0..d5, `constructor` and `valueOf`; models det and seg. Rollouts of det: r-old
 * (running, d1 d2 constructor), r-new (halted, later, d2 valueOf), r-done (completed, d3); of
 * seg: r-seg (running, d1). Experiments of det: x-run (running, d4 constructor), x-end (stopped,
 * d5); of seg: x-seg (running, d4). Desired det for d0, d2, constructor; seg for d1.
 */
function seeded(t: Test): SqliteStore {
  const s = openStore(path.join(t.testdir(), 'coordinator.db'));
  t.teardown(() => s.close());
  const ids = ['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'constructor', 'valueOf'];
  for (const id of ids) s.addDevice({ id, labels: {}, channel: 'stable', tokenHash: `h-${id}`, now: NOW });
  for (const id of ['d1', 'constructor']) s.setDevicePresence(id, true, NOW);
  for (const model of ['det', 'seg']) {
    release(s, model, '1.0.0', 1);
    release(s, model, '2.0.0', 2);
  }
  s.createRollout(
    rollout('r-old', 'det', 'running', '2026-12-08T09:00:00.000Z'),
    ['d1', 'd2', 'constructor'].map(member),
  );
  s.createRollout(rollout('r-new', 'det', 'halted', '2026-12-08T09:30:00.000Z'), ['d2', 'valueOf'].map(member));
  s.createRollout(rollout('r-done', 'det', 'completed', '2026-12-08T08:00:00.000Z'), ['d3'].map(member));
  s.createRollout(rollout('r-seg', 'seg', 'running', '2026-12-08T09:00:00.000Z'), ['d1'].map(member));
  const arm = (deviceId: string) => ({ deviceId, arm: 'candidate' as const, previousReleaseId: null });
  s.createExperiment(experiment('x-run', 'det', 'running', '2026-12-08T09:10:00.000Z'), ['d4', 'constructor'].map(arm));
  s.createExperiment(experiment('x-end', 'det', 'stopped', '2026-12-08T09:20:00.000Z'), ['d5'].map(arm));
  s.createExperiment(experiment('x-seg', 'seg', 'running', '2026-12-08T09:20:00.000Z'), ['d4'].map(arm));
  const desired = (deviceId: string, model: string, version: string) =>
    s.setDesired({
      deviceId,
      model,
      releaseId: `${model}@${version}`,
      rolloutId: null,
      source: 'channel',
      updatedAt: NOW,
    });
  desired('d0', 'det', '1.0.0');
  desired('d2', 'det', '2.0.0');
  desired('constructor', 'det', '1.0.0');
  desired('d1', 'seg', '2.0.0');
  return s;
}

const LIST = [
  'd0',
  'd1',
  'd2',
  'd3',
  'd4',
  'd5',
  'constructor',
  'valueOf',
  'nobody',
  '__proto__',
  'toString',
  'd2',
  'd1',
];

t.test('devicesOnline: the enrolled devices of the list and their presence, as getDevice answers', async (t) => {
  const s = seeded(t);
  const online = s.devicesOnline(LIST);
  t.strictSame([...online].sort(), [
    ['constructor', true],
    ['d0', false],
    ['d1', true],
    ['d2', false],
    ['d3', false],
    ['d4', false],
    ['d5', false],
    ['valueOf', false],
  ]);
  for (const id of LIST) t.equal(online.get(id) ?? null, s.getDevice(id)?.online ?? null, id);
  t.equal(s.devicesOnline([]).size, 0, 'an empty list reads nothing');
});

t.test('desiredReleasesOf: per device with a desired state for the model, as getDesired answers', async (t) => {
  const s = seeded(t);
  for (const model of ['det', 'seg', 'none']) {
    const desired = s.desiredReleasesOf(LIST, model);
    for (const id of LIST)
      t.equal(desired.get(id) ?? null, s.getDesired(id, model)?.releaseId ?? null, `${model} ${id}`);
  }
  t.strictSame([...s.desiredReleasesOf(LIST, 'det')].sort(), [
    ['constructor', 'det@1.0.0'],
    ['d0', 'det@1.0.0'],
    ['d2', 'det@2.0.0'],
  ]);
});

t.test(
  'activeRolloutIdsOf: per device, the active rollouts of the model, by creation, as activeRolloutsFor',
  async (t) => {
    const s = seeded(t);
    for (const model of ['det', 'seg', 'none']) {
      const owners = s.activeRolloutIdsOf(LIST, model);
      for (const id of LIST) {
        const one = s.activeRolloutsFor(id, model).map((r) => r.id);
        t.strictSame(owners.get(id) ?? [], one, `${model} ${id}`);
        t.equal(owners.has(id), one.length > 0, `${model} ${id}: absent when in none`);
      }
    }
    t.strictSame(s.activeRolloutIdsOf(['d2'], 'det').get('d2'), ['r-old', 'r-new'], 'halted is active; by creation');
    t.notOk(s.activeRolloutIdsOf(['d3'], 'det').has('d3'), 'a completed rollout owns nothing');
  },
);

t.test(
  'runningExperimentIdsOf: per device, the running experiments of the model, as runningExperimentsFor',
  async (t) => {
    const s = seeded(t);
    for (const model of ['det', 'seg', 'none']) {
      const owners = s.runningExperimentIdsOf(LIST, model);
      for (const id of LIST) {
        const one = s.runningExperimentsFor(id, model).map((e) => e.id);
        t.strictSame(owners.get(id) ?? [], one, `${model} ${id}`);
        t.equal(owners.has(id), one.length > 0, `${model} ${id}: absent when in none`);
      }
    }
    t.strictSame([...s.runningExperimentIdsOf(LIST, 'det')].sort(), [
      ['constructor', ['x-run']],
      ['d4', ['x-run']],
    ]);
  },
);

t.test('a list of 20,000 ids is one statement each, with no limit on bound parameters', async (t) => {
  const s = seeded(t);
  const many = Array.from({ length: 20_000 }, (_, i) => `absent-${i}`).concat(['d1', 'd2']);
  t.strictSame([...s.devicesOnline(many)].sort(), [
    ['d1', true],
    ['d2', false],
  ]);
  t.strictSame(s.activeRolloutIdsOf(many, 'det').get('d2'), ['r-old', 'r-new']);
  t.equal(s.desiredReleasesOf(many, 'det').get('d2'), 'det@2.0.0');
  t.equal(s.runningExperimentIdsOf(many, 'seg').size, 0);
});
