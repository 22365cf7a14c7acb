import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { goodModel, wrongOutputsModel } from '../scripts/tiny-models.js';
import type { RolloutSummary } from '../shared/messages.js';
import { FleetFixture } from './helpers/fleet-fixture.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';

// Issue 16, end to end through a real Mosquitto 2: a coordinator process as the broker's client,
// real agents connected to Mosquitto with the configs device.add returned (their broker URL is
// Mosquitto's). Waves with a manual gate, a bad model that halts, abort with revert while a
// device is offline, and kill -9 of the coordinator and a broker restart in the middle of a
// rollout, after which it completes with every report accounted for.

// Agents reconnect to a restarted broker with backoff (up to 60 s, full jitter).
t.setTimeout(600_000);

const DEVICES = ['edge-1', 'edge-2', 'edge-3', 'edge-4'];

async function fleetOnV1(t: Test) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-ext-broker-'));
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const f = await FleetFixture.create(t, { env: broker.env, dir });
  t.equal(f.coordinator.mqttUrl, broker.url, 'the coordinator names the broker as its MQTT URL');
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  for (const id of DEVICES) await f.enrol(id);
  for (const id of DEVICES) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
  return { f, broker };
}

const dump = async (f: FleetFixture, id: string, broker: TestMosquitto) => {
  console.error(JSON.stringify(await f.admin.call('rollout.status', { id }), null, 1));
  for (const d of DEVICES) console.error(`--- agent ${d}\n${f.agents.get(d)?.tail(30)}`);
  console.error(f.coordinator.tail(60));
  console.error((await broker.log()).slice(-3000));
};

t.test(
  'through Mosquitto: waves, a manual gate, completion; a bad model halts',
  { skip: mosquittoSkip() },
  async (t) => {
    const { f } = await fleetOnV1(t);
    await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
    const created = await f.admin.call<RolloutSummary>('rollout.create', {
      id: 'r-v2',
      model: 'det',
      version: '2.0.0',
      devices: DEVICES,
      waves: '25,50:manual,100',
      maxFailureRate: 0,
    });
    t.equal(created.waves[0]?.devices, 1, 'one canary');
    await f.waitForRollout('r-v2', (s) => s.status === 'waiting_approval', 'at the gate');
    t.equal(DEVICES.filter((d) => f.lastReport(d)?.models.det?.version === '2.0.0').length, 1, 'only the canary');
    await f.admin.call('rollout.approve', { id: 'r-v2' });
    const done = await f.waitForRollout('r-v2', (s) => s.status === 'completed', 'completed');
    t.equal(done.failures.count, 0);
    for (const id of DEVICES) t.equal(await f.link(id, 'det'), '2.0.0', `${id} on 2.0.0`);

    await f.publish('det', '3.0.0', wrongOutputsModel(), { counter: 3 });
    await f.admin.call('rollout.create', {
      id: 'r-v3',
      model: 'det',
      version: '3.0.0',
      devices: DEVICES,
      waves: '25,100',
      maxFailureRate: 0,
    });
    const halted = await f.waitForRollout('r-v3', (s) => s.status === 'halted', 'halted');
    t.match(halted.haltReason, /exceeds/, 'the halt says why');
    const status = await f.admin.call<{ devices: { id: string; wave: number; state: string }[] }>('rollout.status', {
      id: 'r-v3',
    });
    t.same(
      status.devices.filter((d) => d.wave !== 1 && d.state !== 'pending'),
      [],
      'wave 2 never assigned after the halt',
    );
    const canary = status.devices.find((d) => d.wave === 1)?.id as string;
    await f.waitFor(`${canary} rolled back`, () => {
      const s = f.lastReport(canary)?.models.det;
      return s?.state === 'rolled_back' ? s : undefined;
    });
    t.equal(await f.link(canary, 'det'), '2.0.0', 'the canary rolled back to 2.0.0');
    t.match(await f.admin.call('audit.verify'), { ok: true });
  },
);

t.test('through Mosquitto: abort with revert, one device offline', { skip: mosquittoSkip() }, async (t) => {
  const { f } = await fleetOnV1(t);
  await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
  await f.admin.call('rollout.create', {
    id: 'r-abort',
    model: 'det',
    version: '2.0.0',
    devices: DEVICES,
    waves: '50,100:manual',
  });
  await f.waitForRollout('r-abort', (s) => s.status === 'waiting_approval', 'wave 1 done');
  const touched = DEVICES.filter((d) => f.lastReport(d)?.models.det?.version === '2.0.0');
  t.equal(touched.length, 2);
  const [offline, online] = touched as [string, string];
  // Killed: Mosquitto publishes its will (offline), which the coordinator reads.
  await f.agents.get(offline)?.kill9();
  for (let i = 0; (await f.admin.call<{ online: boolean }>('device.show', { id: offline })).online; i++) {
    if (i === 300) throw new Error(`${offline} still online in the coordinator after its kill`);
    await new Promise((r) => setTimeout(r, 50));
  }
  t.pass(`${offline} offline (its will, published by the broker)`);
  await f.admin.call('rollout.abort', { id: 'r-abort', policy: 'revert' });
  await f.waitForRollout('r-abort', (s) => s.status === 'aborted', 'aborted');
  await f.waitForDevice(online, 'det', 'healthy', '1.0.0');
  t.equal(await f.link(online, 'det'), '1.0.0', `${online} reverted`);
  t.equal(await f.link(offline, 'det'), '2.0.0', 'the offline device still on 2.0.0');
  f.startAgent(offline);
  await f.waitForDevice(offline, 'det', 'healthy', '1.0.0');
  t.equal(await f.link(offline, 'det'), '1.0.0', `${offline} reverted once back (its retained desired state)`);
});

t.test(
  'through Mosquitto: coordinator kill -9 and a broker restart mid-rollout',
  { skip: mosquittoSkip() },
  async (t) => {
    const { f, broker } = await fleetOnV1(t);
    await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
    await f.admin.call('rollout.create', {
      id: 'r-crash',
      model: 'det',
      version: '2.0.0',
      devices: DEVICES,
      waves: '25,50:manual,100',
    });
    await f.waitForRollout('r-crash', (s) => s.status === 'waiting_approval', 'at the gate');
    await f.admin.call('rollout.approve', { id: 'r-crash' });
    // Killed while wave 2 runs: the devices keep reporting to the broker, which keeps their
    // reports for the coordinator's session until it is back.
    await f.waitFor('wave 2 assigned', () => {
      const s = f.lastSummary('r-crash');
      return s && s.currentWave >= 2 ? s : undefined;
    });
    await f.restartCoordinator('SIGKILL');
    t.pass('coordinator killed with SIGKILL and restarted');
    // And the broker restarts (persistence on: retained state and the coordinator's session kept).
    await broker.restart();
    t.pass('broker restarted');
    // The test's own admin connection went down with the broker (otactl connects per command).
    await f.reconnectAdmin();
    const done = await f
      .waitForRollout('r-crash', (s) => s.status === 'completed', 'completed after the restarts', 180_000)
      .catch(async (err) => {
        await dump(f, 'r-crash', broker);
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
      'every device row healthy: no report lost',
    );
    t.match(await f.admin.call('audit.verify'), { ok: true });
  },
);
