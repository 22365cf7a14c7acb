import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { DynsecClient } from '../coordinator/external-broker/dynsec-client.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';
import { connackCode, grantOf, nextMessage, openSession, type Session } from './helpers/mqtt-session.js';

// Issue 16: the ACL matrix of test/broker-acl.test.ts, run against a real Mosquitto 2 whose
// dynamic security plugin the coordinator manages. Mosquitto refuses differently from the
// embedded broker: a forbidden publish is acknowledged and dropped (MQTT 3.1.1 lets a server do
// either), a forbidden subscription is granted 0x80. A drop is proven without waiting: a watcher
// that may read everything sees the forbidden message or not before a marker the same client
// publishes right after it (Mosquitto forwards one client's QoS 1 messages in order).

const topics = createTopics();
const p = topics.prefix;
const ts = () => new Date().toISOString();
let seq = 0;
const uniq = () => `${process.pid}-${++seq}`;
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const FACTS = { arch: 'x64', cpuCores: 2, memoryMB: 512, freeDiskMB: 100, os: 'linux', kernel: '6', accelerators: [] };
const reported = (deviceId: string, n = 0) => encodePayload({ deviceId, seq: n, ts: ts(), models: {} });
const status = () => encodePayload({ online: true, ts: ts(), agentVersion: `t-${uniq()}`, facts: FACTS });
const command = (user: string, extra: object = {}) =>
  json({ correlationId: uniq(), replyTo: topics.reply(user, 'x'), args: {}, ...extra });
const same = (a: Buffer, b: Buffer) => Buffer.compare(a, b) === 0;

async function setup(t: Test) {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const c = await startInProcessCoordinator(t, path.join(dir, 'data'), {}, broker.env);
  const tokens = new Map<string, string>();
  for (const id of ['dev-a', 'dev-b']) {
    tokens.set(id, (await c.admin.call<{ token: string }>('device.add', { id, labels: {} })).token);
  }
  for (const [name, role] of [
    ['oper', 'operator'],
    ['viewer', 'viewer'],
  ] as const) {
    tokens.set(name, (await c.admin.call<{ token: string }>('operator.add', { name, role })).token);
  }
  tokens.set('admin', c.token.token);
  // A watcher that may read every topic: made in the broker for this test, as an admin of the
  // broker would (not something the coordinator provisions).
  const password = readFileSync(broker.passwordFile, 'utf8').trim();
  const control = await openSession(t, broker.url, 'ota-coordinator', password, 'acl-test-control');
  await new DynsecClient(control.client).runAll(
    [
      {
        command: 'createRole',
        rolename: 'acl-watcher',
        acls: [{ acltype: 'subscribePattern', topic: '#', allow: true }],
      },
      { command: 'createClient', username: 'acl-watcher', password: 'watch', roles: [{ rolename: 'acl-watcher' }] },
    ],
    'watcher',
  );
  const watcher = await openSession(t, broker.url, 'acl-watcher', 'watch', 'acl-watcher');
  await watcher.client.subscribeAsync('#', { qos: 1 });
  const as = (user: string, clientId = user) => openSession(t, broker.url, user, tokens.get(user) as string, clientId);
  return { ...c, broker, tokens, watcher, as };
}

/**
 * Publishes `payload` on `topic`, then an allowed `marker` from the same client, and says whether
 * the watcher saw the first before the marker arrived.
 */
async function delivered(
  watcher: Session,
  from: MqttClient,
  topic: string,
  payload: Buffer,
  marker: { topic: string; payload: Buffer },
  opts: { retain?: boolean } = {},
): Promise<boolean> {
  await from.publishAsync(topic, payload, { qos: 1, retain: opts.retain ?? false });
  await from.publishAsync(marker.topic, marker.payload, { qos: 1 });
  await nextMessage(watcher, (m) => (m.topic === marker.topic && same(m.payload, marker.payload) ? true : undefined));
  return watcher.received.some((m) => m.topic === topic && same(m.payload, payload));
}

t.test('against Mosquitto: the same access rules', { skip: mosquittoSkip() }, async (t) => {
  const { broker, tokens, watcher, as, admin, running, dataDir } = await setup(t);

  await t.test('connections: credentials and client ids', async (t) => {
    const url = broker.url;
    t.equal(
      await connackCode(openSession(t, url, 'dev-a', tokens.get('dev-a') as string, 'dev-a')),
      0,
      'device: own id',
    );
    t.not(
      await connackCode(openSession(t, url, 'dev-a', tokens.get('dev-a') as string, 'dev-b')),
      0,
      "device: another's id",
    );
    t.not(
      await connackCode(openSession(t, url, 'dev-a', tokens.get('dev-b') as string, 'dev-a')),
      0,
      "another's token",
    );
    t.not(await connackCode(openSession(t, url, 'nobody', 'x', 'nobody')), 0, 'unknown user');
    t.not(await connackCode(openSession(t, url, 'dev-a', '', 'dev-a')), 0, 'no password');
    t.equal(await connackCode(openSession(t, url, 'oper', tokens.get('oper') as string, 'oper@cli')), 0, 'operator');
  });

  await t.test('device publishes: own reported, status, metrics only', async (t) => {
    const dev = await as('dev-a');
    const marker = () => ({ topic: topics.status('dev-a'), payload: status() });
    for (const [topic, payload] of [
      [topics.reported('dev-a'), reported('dev-a')],
      [topics.status('dev-a'), status()],
    ] as const) {
      t.ok(await delivered(watcher, dev.client, topic, payload, marker()), `delivered: ${topic}`);
    }
    const refused: [string, string, Buffer, { retain?: boolean }?][] = [
      ["other device's reported", topics.reported('dev-b'), reported('dev-b', 5)],
      ["other device's status, retained", topics.status('dev-b'), status(), { retain: true }],
      ["other device's metrics", topics.metrics('dev-b'), json({ x: uniq() })],
      ['own desired', topics.desired('dev-a'), json({ d: uniq() }), { retain: true }],
      ["other device's desired", topics.desired('dev-b'), json({ d: uniq() })],
      ['a rollout summary', topics.rollout('r1'), json({ r: uniq() }), { retain: true }],
      ['audit', topics.audit(), json({ a: uniq() })],
      ['the fleet summary', topics.fleet(), json({ f: uniq() }), { retain: true }],
      ['a command, unnamed', topics.cmd('device.ls'), command('admin')],
      ['a command in the name of admin', topics.cmd('device.ls', 'admin'), command('admin')],
      ['a reply to an operator', topics.reply('admin', 'x'), json({ ok: uniq() })],
      ['outside the prefix', 'elsewhere/topic', json({ e: uniq() })],
    ];
    for (const [name, topic, payload, opts] of refused) {
      t.notOk(await delivered(watcher, dev.client, topic, payload, marker(), opts), `dropped: ${name}`);
    }
    t.ok(dev.client.connected, 'Mosquitto keeps the connection (it drops the publish)');
  });

  await t.test('operator publishes: commands in its own name only', async (t) => {
    for (const user of ['admin', 'oper', 'viewer']) {
      const conn = await as(user, `${user}@acl`);
      const marker = () => ({ topic: topics.cmd('operator.whoami', user), payload: command(user) });
      t.ok(
        await delivered(watcher, conn.client, topics.cmd('rollout.ls', user), command(user), marker()),
        `${user}: a command in its own name`,
      );
      const other = user === 'admin' ? 'viewer' : 'admin';
      const refused: [string, string, Buffer][] = [
        ["in another's name", topics.cmd('rollout.ls', other), command(other)],
        ['unnamed', topics.cmd('rollout.ls'), command(user)],
        ['desired', topics.desired('dev-a'), json({ d: uniq() })],
        ['device reported', topics.reported('dev-a'), reported('dev-a', 9)],
        ['device status', topics.status('dev-a'), status()],
        ['rollout summary', topics.rollout('r1'), json({ r: uniq() })],
        ['audit', topics.audit(), json({ a: uniq() })],
        ['fleet summary', topics.fleet(), json({ f: uniq() })],
        ['own reply topic', topics.reply(user, 'x'), json({ ok: uniq() })],
      ];
      for (const [name, topic, payload] of refused) {
        t.notOk(await delivered(watcher, conn.client, topic, payload, marker()), `${user}: dropped: ${name}`);
      }
      await conn.client.endAsync();
    }
  });

  await t.test('what the broker passes, the coordinator refuses', async (t) => {
    // A viewer's change command reaches the coordinator, which answers E_FORBIDDEN.
    const viewer = await as('viewer', 'viewer@acl2');
    const replyTo = topics.reply('viewer', 'acl2');
    await viewer.client.subscribeAsync(replyTo, { qos: 1 });
    const correlationId = uniq();
    await viewer.client.publishAsync(
      topics.cmd('device.rm', 'viewer'),
      json({ correlationId, replyTo, args: { id: 'dev-b' } }),
      { qos: 1 },
    );
    const reply = await nextMessage(viewer, (m) => {
      const r = JSON.parse(m.payload.toString()) as { correlationId: string; ok: boolean; error?: { code: string } };
      return r.correlationId === correlationId ? r : undefined;
    });
    t.equal(reply.error?.code, 'E_FORBIDDEN', 'a viewer may not remove a device');
    t.ok(await admin.call('device.show', { id: 'dev-b' }), 'dev-b is still there');
    // A reported payload naming another device, on the device's own topic: delivered, refused.
    const dev = await as('dev-a');
    await dev.client.publishAsync(topics.reported('dev-a'), reported('dev-b', 42), { qos: 1, retain: true });
    await dev.client.publishAsync(topics.reported('dev-a'), Buffer.from('not json'), { qos: 1 });
    await dev.client.publishAsync(topics.reported('dev-a'), reported('dev-a', 3), { qos: 1, retain: true });
    let shown: { lastReport: { seq: number } | null } = { lastReport: null };
    for (let i = 0; i < 300 && shown.lastReport?.seq !== 3; i++) {
      shown = await admin.call('device.show', { id: 'dev-a' });
      await new Promise((r) => setTimeout(r, 20));
    }
    t.equal(shown.lastReport?.seq, 3, 'the valid report after them is stored');
    const b = await admin.call<{ lastReport: { seq: number } | null }>('device.show', { id: 'dev-b' });
    t.equal(b.lastReport, null, "dev-b has no report: the one naming it on dev-a's topic was refused");
  });

  await t.test('device subscriptions: its own desired only', async (t) => {
    const dev = await as('dev-a');
    t.equal(await grantOf(dev.client, topics.desired('dev-a')), 1, 'own desired');
    for (const filter of [
      topics.desired('dev-b'),
      topics.allDevices('desired'),
      `${p}/devices/dev-a/+`,
      topics.reported('dev-a'),
      topics.status('dev-b'),
      topics.allRollouts(),
      topics.audit(),
      topics.fleet(),
      topics.allCommands(),
      `${p}/reply/dev-a/#`,
      '#',
      `${p}/#`,
      '$SYS/#',
    ]) {
      t.equal(await grantOf(dev.client, filter), 128, `refused: ${filter}`);
    }
  });

  await t.test('operator subscriptions: own replies and the read-only views', async (t) => {
    for (const user of ['admin', 'viewer']) {
      const op = await as(user, `${user}@sub`);
      for (const filter of [
        `${p}/reply/${user}/#`,
        topics.reply(user, 'sub'),
        topics.allRollouts(),
        topics.rollout('r9'),
        topics.audit(),
        topics.fleet(),
        topics.allDevices('reported'),
        topics.allDevices('status'),
        topics.allDevices('metrics'),
        topics.allDevices('desired'),
        topics.status('dev-b'),
      ]) {
        t.equal(await grantOf(op.client, filter), 1, `${user}: granted ${filter}`);
      }
      const other = user === 'admin' ? 'viewer' : 'admin';
      for (const filter of [
        `${p}/reply/${other}/#`,
        `${p}/reply/+/#`,
        `${p}/reply/#`,
        topics.allCommands(),
        topics.cmd('device.ls', user),
        '#',
        `${p}/#`,
        `${p}/devices/#`,
        '$CONTROL/dynamic-security/#',
        '$SYS/#',
      ]) {
        t.equal(await grantOf(op.client, filter), 128, `${user}: refused ${filter}`);
      }
      await op.client.endAsync();
    }
  });

  await t.test('a command sent while the coordinator is away never runs; a retained one is deleted', async (t) => {
    // Its caller gave up waiting (otactl times out): it must not run hours later, nor twice
    // after a retry. The broker keeps no command for the coordinator's session (QoS 0), and the
    // retain flag, which the broker's ACL cannot refuse, gets it deleted at the next subscription.
    await running.stop();
    const oper = await as('oper', 'oper@ret');
    const replyTo = topics.reply('oper', 'ret');
    await oper.client.subscribeAsync(replyTo, { qos: 1 });
    const correlationId = uniq();
    const topic = topics.cmd('operator.whoami', 'oper');
    await oper.client.publishAsync(topic, json({ correlationId, replyTo, args: {} }), { qos: 1, retain: true });
    const again = await startInProcessCoordinator(t, dataDir, {}, broker.env);
    await nextMessage(watcher, (m) => (m.topic === topic && m.payload.length === 0 ? true : undefined));
    t.pass('the retained copy was deleted from the broker');
    const barrier = uniq();
    await oper.client.publishAsync(topic, json({ correlationId: barrier, replyTo, args: {} }), { qos: 1 });
    const ids = (m: { payload: Buffer }) =>
      (JSON.parse(m.payload.toString()) as { correlationId: string }).correlationId;
    await nextMessage(oper, (m) => (m.topic === replyTo && ids(m) === barrier ? true : undefined));
    t.equal(oper.received.filter((m) => m.topic === replyTo && ids(m) === correlationId).length, 0, 'it never ran');
    t.ok(await again.admin.call('device.show', { id: 'dev-a' }), 'the coordinator serves as before');

    // The coordinator's client id is not "ota-coordinator" (nor guessable): an operator that
    // connects with that id, persistent, takes over nothing.
    const squatter = await as('viewer', 'ota-coordinator');
    await squatter.client.subscribeAsync(topics.reply('viewer', 'sq'), { qos: 1 });
    t.ok(await again.admin.call('device.show', { id: 'dev-a' }), 'commands still reach the coordinator');
    t.ok(squatter.client.connected, 'and the squatter holds only its own session');
  });
});
