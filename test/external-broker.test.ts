import path from 'node:path';
import t from 'tap';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';
import { connackCode, grantOf, openSession } from './helpers/mqtt-session.js';

// Issue 16: the coordinator as a client of a real Mosquitto 2 (Debian's), whose dynamic security
// plugin it manages. Enrolment creates the device's client there, its messages reach the
// coordinator (checked by it), and removal cuts the session and refuses the next CONNECT.

const topics = createTopics();
const ts = () => new Date().toISOString();
const FACTS = { arch: 'x64', cpuCores: 2, memoryMB: 512, freeDiskMB: 100, os: 'linux', kernel: '6', accelerators: [] };
const status = (online: boolean) =>
  encodePayload(online ? { online, ts: ts(), agentVersion: 'x', facts: FACTS } : { online, ts: ts() });
const reported = (deviceId: string, seq: number) => encodePayload({ deviceId, seq, ts: ts(), models: {} });

type Shown = { lastReport: { seq: number } | null; online: boolean };

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  for (let i = 0; ; i++) {
    const v = await read();
    if (ok(v) || i === 300) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('enrol, ingest and remove through Mosquitto', { skip: mosquittoSkip() }, async (t) => {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const { admin, running } = await startInProcessCoordinator(t, path.join(dir, 'data'), {}, broker.env);
  t.equal(running.mqttUrl, broker.url, 'otactl and agent configs point at the broker');

  const added = await admin.call<{ token: string; agentConfig: { broker: { url: string } } }>('device.add', {
    id: 'cam-01',
    labels: {},
  });
  t.equal(added.agentConfig.broker.url, broker.url);
  const other = await admin.call<{ token: string }>('device.add', { id: 'cam-02', labels: {} });

  const will = { topic: topics.status('cam-01'), payload: status(false), qos: 1 as const, retain: true };
  const cam = await openSession(t, broker.url, 'cam-01', added.token, 'cam-01', { will });
  await cam.client.publishAsync(topics.status('cam-01'), status(true), { qos: 1, retain: true });
  await cam.client.publishAsync(topics.reported('cam-01'), reported('cam-01', 0), { qos: 1, retain: true });
  // Another device's topic: Mosquitto drops it (its ACL), so cam-02 never gets this report.
  await cam.client.publishAsync(topics.reported('cam-02'), reported('cam-02', 7), { qos: 1, retain: true });
  const shown = await until(
    () => admin.call<Shown>('device.show', { id: 'cam-01' }),
    (d) => d.online && d.lastReport !== null,
  );
  t.ok(shown.online, 'online from its status');
  t.equal(shown.lastReport?.seq, 0, 'its report stored');
  t.equal(
    (await admin.call<Shown>('device.show', { id: 'cam-02' })).lastReport,
    null,
    "another device's topic refused",
  );

  t.equal(await connackCode(openSession(t, broker.url, 'cam-01', 'wrong', 'cam-01')), 5, 'a wrong token is refused');
  t.not(
    await connackCode(openSession(t, broker.url, 'cam-01', added.token, 'cam-99')),
    0,
    'another client id is refused',
  );

  // The desired state reaches the device (published by the coordinator, retained in the broker).
  const sub = await cam.client.subscribeAsync(topics.desired('cam-01'), { qos: 1 });
  t.equal(sub[0]?.qos, 1, 'its own desired topic granted');
  t.equal(await grantOf(cam.client, topics.desired('cam-02')), 128, "another device's desired refused");

  await admin.call('device.rm', { id: 'cam-01' });
  await cam.closed;
  t.pass('removal ended the session');
  t.not(
    await connackCode(openSession(t, broker.url, 'cam-01', added.token, 'cam-01')),
    0,
    'and refuses the next CONNECT',
  );
  const cam2 = await openSession(t, broker.url, 'cam-02', other.token, 'cam-02');
  await cam2.client.publishAsync(topics.reported('cam-02'), reported('cam-02', 1), { qos: 1, retain: true });
  const two = await until(
    () => admin.call<Shown>('device.show', { id: 'cam-02' }),
    (d) => d.lastReport !== null,
  );
  t.equal(two.lastReport?.seq, 1, 'cam-02 is unaffected');
});
