import { promises as fs } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { TestSigners } from './helpers/signing.js';

// The command API of a real coordinator (in process: real Aedes, real SQLite, real HTTP):
// every error names what was wrong, roles are enforced, bad payloads do not stop it, and the
// audit chain notices a row edited behind its back.

const topics = createTopics();
const _silent = createLogger('silent', process.stdout, 'ota-coordinator');

async function coordinator(t: Test) {
  const { running, token, admin, dataDir } = await startInProcessCoordinator(t);
  return { running, token, admin, dataDir };
}

t.test('first start: admin token (0600), coordinator key, readiness; commands validate', async (t) => {
  const { running, admin, token, dataDir } = await coordinator(t);
  t.equal((await fs.stat(running.adminTokenFile)).mode & 0o777, 0o600, 'admin.token is 0600');
  t.equal((await fs.stat(path.join(dataDir, 'coordinator.key'))).mode & 0o777, 0o600, 'coordinator key is 0600');
  t.match(token, { user: 'admin', mqttUrl: running.mqttUrl, httpUrl: running.httpUrl });

  await t.rejects(admin.call('nope.op'), { code: 'E_COMMAND', message: /unknown command "nope.op"/ });
  await t.rejects(admin.call('device.add', { id: '../etc' }), { code: 'E_USAGE', message: /argument id/ });
  await t.rejects(admin.call('device.add', { id: 'cam-1', colour: 'red' }), { code: 'E_USAGE', message: /colour/ });
  const enrolled = await admin.call<{ token: string; agentConfig: Record<string, unknown> }>('device.add', {
    id: 'cam-1',
    labels: { site: 'a' },
  });
  t.match(enrolled.agentConfig, {
    deviceId: 'cam-1',
    broker: { url: running.mqttUrl },
    artifactsUrl: running.httpUrl,
    token: enrolled.token,
    coordinatorKey: { keyId: /^[0-9a-f]{32}$/ },
    trustedKeys: [],
    threshold: 1,
  });
  await t.rejects(admin.call('device.add', { id: 'cam-1' }), { code: 'E_CONFLICT', message: /cam-1 already exists/ });
  await t.rejects(admin.call('device.add', { id: 'admin' }), {
    code: 'E_CONFLICT',
    message: /clashes with operator admin/,
  });
  // Operator client ids are `admin` and `admin@...` (broker/acl.ts): `admin-cam` is nobody's but the device's.
  await admin.call('device.add', { id: 'admin-cam' });
  await admin.call('device.rm', { id: 'admin-cam' });
  await t.rejects(admin.call('rollout.create', { model: 'det', version: '1.0.0', devices: ['cam-1'], waves: '100' }), {
    code: 'E_NOT_FOUND',
    message: /no release det@1.0.0/,
  });

  // A release, then targets with names that do not resolve: listed, never dropped.
  const signers = new TestSigners();
  await t.rejects(admin.call('release.publish', { envelope: signers.release('det', '1.0.0', goodModel(1)) }), {
    code: 'E_NOT_FOUND',
    message: /upload it/,
  });
  await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
  const bytes = goodModel(1);
  // (A second t.testdir() would empty the directory the coordinator's data is in.)
  const file = path.join(dataDir, '..', 'm.onnx');
  await fs.writeFile(file, bytes);
  const envelope = signers.release('det', '1.0.0', bytes, { counter: 1 });
  await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file });
  await t.rejects(
    admin.call('rollout.create', {
      model: 'det',
      version: '1.0.0',
      devices: ['cam-1', 'ghost-1', 'ghost-2'],
      waves: '100',
    }),
    { code: 'E_NOT_FOUND', message: /2 device name\(s\) do not resolve: ghost-1, ghost-2/ },
  );
  for (const [waves, rate, why] of [
    ['50,10,100', 0, /strictly increas/],
    ['10,50', 0, /100/],
    ['100', 1, /\[0, 1\)|0 and 1|below 1/],
    ['100', -0.1, /./],
  ] as const) {
    await t.rejects(
      admin.call('rollout.create', { model: 'det', version: '1.0.0', devices: ['cam-1'], waves, maxFailureRate: rate }),
      { code: 'E_STRATEGY', message: why },
      `waves ${waves}, rate ${rate}`,
    );
  }
  const releases = await admin.call<{ id: string }[]>('release.ls');
  t.same(
    releases.map((r) => r.id),
    ['det@1.0.0'],
  );
});

t.test('roles: a viewer reads and cannot change anything', async (t) => {
  const { running, admin } = await coordinator(t);
  const viewer = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });
  const operator = await admin.call<{ token: string }>('operator.add', { name: 'otto', role: 'operator' });
  const v = await CommandClient.connect({ url: running.mqttUrl, user: 'vera', token: viewer.token, timeoutMs: 3_000 });
  t.teardown(() => v.close());
  t.same(await v.call('device.ls'), []);
  // The broker refuses the publish itself (MQTT 3.1.1 has no error reply: the client is disconnected).
  await t.rejects(v.call('device.add', { id: 'x-1' }));
  t.same(await admin.call('device.ls'), [], 'nothing was created');
  const o = await CommandClient.connect({ url: running.mqttUrl, user: 'otto', token: operator.token });
  t.teardown(() => o.close());
  await t.rejects(o.call('operator.add', { name: 'eve', role: 'admin' }));
  t.same((await admin.call<{ id: string }[]>('operator.ls')).map((x) => x.id).sort(), ['admin', 'otto', 'vera']);
  await t.rejects(
    CommandClient.connect({ url: running.mqttUrl, user: 'vera', token: 'wrong', connectTimeoutMs: 3_000 }),
    { code: 'E_AUTH' },
  );
});

t.test('malformed and oversize payloads are dropped; the coordinator keeps serving', async (t) => {
  const { running, admin } = await coordinator(t);
  const dev = await admin.call<{ token: string }>('device.add', { id: 'cam-9' });
  const bad: [string, Buffer | string][] = [
    [topics.reported('cam-9'), '{"deviceId":'],
    [topics.reported('cam-9'), JSON.stringify({ deviceId: 'cam-9', seq: 'x' })],
    [topics.status('cam-9'), Buffer.alloc(300_000, 0x20)],
    [topics.metrics('cam-9'), Buffer.from([0xff, 0xfe])],
  ];
  for (const [topic, payload] of bad) {
    const c = await mqtt.connectAsync(running.mqttUrl, {
      clientId: 'cam-9',
      username: 'cam-9',
      password: dev.token,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    // The broker refuses such a publish by closing the connection (MQTT 3.1.1 has no negative
    // acknowledgement): the close is the proof it was handled, no pause needed.
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    await c.publishAsync(topic, payload, { qos: 0 });
    await closed;
    await c.endAsync(true);
  }
  // A command with a garbage payload: dropped by the broker.
  const raw = await mqtt.connectAsync(running.mqttUrl, {
    clientId: 'admin@raw',
    username: 'admin',
    password: JSON.parse(await fs.readFile(running.adminTokenFile, 'utf8')).token,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  await raw.publishAsync(topics.cmd('device.ls'), encodePayload({ nonsense: true }), { qos: 0 });
  await raw.endAsync(true);
  const devices = await admin.call<{ id: string; lastSeen: unknown }[]>('device.ls');
  t.match(devices, [{ id: 'cam-9' }], 'still serving, state intact');
  const health = await fetch(`${running.httpUrl}/healthz`);
  t.equal(health.status, 200);
  const metrics = await (await fetch(`${running.httpUrl}/metrics`)).text();
  t.match(metrics, /ota_auth_failures_total\{transport="mqtt"\}/);
  t.notMatch(metrics, /cam-9/, 'no device ids in metrics');
});

t.test('the audit chain names the first row edited behind its back', async (t) => {
  const { admin, dataDir } = await coordinator(t);
  for (const id of ['a-1', 'a-2', 'a-3']) await admin.call('device.add', { id });
  const before = await admin.call<{ ok: boolean; count: number }>('audit.verify');
  t.match(before, { ok: true });
  // Someone with the database file: drop the trigger, edit a row's details.
  const db = new Database(path.join(dataDir, 'coordinator.db'));
  const triggers = db.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'").all() as {
    name: string;
  }[];
  for (const { name } of triggers) db.exec(`DROP TRIGGER "${name}"`);
  const row = db
    .prepare("SELECT seq FROM audit WHERE action = 'device.enrolled' ORDER BY seq LIMIT 1 OFFSET 1")
    .get() as {
    seq: number;
  };
  db.prepare('UPDATE audit SET actor = ? WHERE seq = ?').run('mallory', row.seq);
  db.close();
  const after = await admin.call<{ ok: boolean; firstBad: number; reason: string }>('audit.verify');
  t.match(after, { ok: false, firstBad: row.seq }, `row ${row.seq} named`);
  const exported = await admin.call<{ events: unknown[]; verdict: { ok: boolean } }>('audit.export');
  t.equal(exported.verdict.ok, false, 'the export carries the verdict');
});
