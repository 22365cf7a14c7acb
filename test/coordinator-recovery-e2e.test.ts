import t, { type Test } from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import type { RolloutSummary } from '../shared/messages.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// Abort with revert, including a device that is offline during the abort; and kill -9 of the
// coordinator mid-rollout, after which the restarted coordinator continues it.

// Agents reconnect to a restarted coordinator with backoff (up to 60 s, full jitter): give them time.
t.setTimeout(400_000);

const DEVICES = ['edge-1', 'edge-2', 'edge-3', 'edge-4', 'edge-5'];

async function fleetOnV1(t: Test) {
  const f = await FleetFixture.create(t);
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  for (const id of DEVICES) await f.enrol(id);
  for (const id of DEVICES) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
  return f;
}

t.test('abort with revert returns touched devices to the previous version, offline ones when back', async (t) => {
  const f = await fleetOnV1(t);
  await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
  const created = await f.admin.call<RolloutSummary>('rollout.create', {
    id: 'r-abort',
    model: 'det',
    version: '2.0.0',
    devices: DEVICES,
    waves: '40,100:manual',
  });
  t.equal(created.waves[0]?.devices, 2);
  await f.waitForRollout('r-abort', (s) => s.status === 'waiting_approval', 'wave 1 done, at the gate');
  const touched = DEVICES.filter((d) => f.lastReport(d)?.models.det?.version === '2.0.0');
  t.equal(touched.length, 2, 'two devices on 2.0.0');
  const [offline, online] = touched as [string, string];
  // One touched device goes offline (clean stop) before the abort.
  await f.agents.get(offline)?.stop();
  await f.admin.call('rollout.abort', { id: 'r-abort', policy: 'revert' });
  const aborted = await f.waitForRollout('r-abort', (s) => s.status === 'aborted', 'aborted');
  t.equal(aborted.status, 'aborted', 'abort did not wait for the offline device');
  const m = await f.waitForDevice(online, 'det', 'healthy', '1.0.0');
  t.match(m, { current: '1.0.0' }, `${online} reverted to 1.0.0`);
  t.equal(await f.link(online, 'det'), '1.0.0');
  t.equal(await f.link(offline, 'det'), '2.0.0', 'the offline device still runs 2.0.0 while offline');
  f.startAgent(offline);
  await f.waitForDevice(offline, 'det', 'healthy', '1.0.0');
  t.equal(await f.link(offline, 'det'), '1.0.0', `${offline} reverted after reconnecting`);
  for (const id of DEVICES.filter((d) => !touched.includes(d))) {
    t.equal(await f.link(id, 'det'), '1.0.0', `${id} (untouched) kept 1.0.0`);
  }
  await t.rejects(f.admin.call('rollout.approve', { id: 'r-abort' }), { code: 'E_ROLLOUT_STATE' });
});

t.test('kill -9 of the coordinator mid-rollout: the restarted coordinator continues it', async (t) => {
  const f = await fleetOnV1(t);
  await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
  await f.admin.call('rollout.create', {
    id: 'r-crash',
    model: 'det',
    version: '2.0.0',
    devices: DEVICES,
    waves: '20,60:manual,100',
  });
  await f.waitForRollout('r-crash', (s) => s.status === 'waiting_approval', 'at the gate');
  await f.restartCoordinator('SIGKILL');
  t.pass('coordinator killed with SIGKILL and restarted on the same data');
  // The retained summary is back (republished at start) and says where it was.
  const again = await f.waitForRollout('r-crash', (s) => s.status === 'waiting_approval', 'summary republished');
  t.equal(again.currentWave, 1, 'wave 1 (numbered from 1) done, at the gate of wave 2');
  await f.admin.call('rollout.approve', { id: 'r-crash' });
  // Kill it again while wave 1 is running.
  await f.waitFor('wave 2 assigned', () => {
    const s = f.lastSummary('r-crash');
    return s && s.currentWave >= 2 ? s : undefined;
  });
  await f.restartCoordinator('SIGKILL');
  const done = await f
    .waitForRollout('r-crash', (s) => s.status === 'completed', 'completed after the restarts', 120_000)
    .catch(async (err) => {
      console.error(JSON.stringify(await f.admin.call('rollout.status', { id: 'r-crash' }), null, 1));
      for (const d of DEVICES) console.error(d, JSON.stringify(f.lastReport(d)?.models.det));
      for (const d of DEVICES) console.error(`--- agent ${d}\n${f.agents.get(d)?.tail(40)}`);
      console.error(f.coordinator.tail(60));
      throw err;
    });
  t.equal(done.failures.count, 0);
  for (const id of DEVICES) await f.waitForDevice(id, 'det', 'healthy', '2.0.0');
  const status = await f.admin.call<{ devices: { id: string; state: string }[] }>('rollout.status', {
    id: 'r-crash',
  });
  t.same(
    status.devices.map((d) => d.state).sort(),
    DEVICES.map(() => 'healthy'),
    'every device row healthy: no report lost across the restarts',
  );
  t.match(await f.admin.call('audit.verify'), { ok: true });
});
