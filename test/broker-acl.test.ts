import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import t, { type Test } from 'tap';
import { canPublish, canSubscribe, checkClientId } from '../coordinator/broker/acl.js';
import { type AuthFailure, attachWebSocket, type Broker, createBroker } from '../coordinator/broker/create-broker.js';
import type { Authenticate, Principal } from '../coordinator/broker/principal.js';
import { CommandClient } from '../coordinator/client/command-client.js';
import { createTopics } from '../shared/topics.js';

// The broker ACL of design section 3, against a real Aedes broker and real mqtt.js clients
// (MQTT 3.1.1). Every refusal is observed: a refused CONNECT by its CONNACK return code, a refused
// PUBLISH by the connection closing and the message never reaching the broker's publish pipeline
// (nor a privileged subscriber, nor the retained store), a refused SUBSCRIBE by granted QoS 128
// and no delivery of what the coordinator publishes on that topic.

const topics = createTopics();
const WAIT_MS = 3000;

const USERS: Record<string, { token: string; principal: Principal }> = {
  'dev-a': { token: 'tok-dev-a', principal: { kind: 'device', deviceId: 'dev-a' } },
  'dev-b': { token: 'tok-dev-b', principal: { kind: 'device', deviceId: 'dev-b' } },
  // A device whose id starts like an operator's client id: an operator must not take its session.
  'admin-box': { token: 'tok-admin-box', principal: { kind: 'device', deviceId: 'admin-box' } },
  admin: { token: 'tok-admin', principal: { kind: 'operator', name: 'admin', role: 'admin' } },
  oper: { token: 'tok-oper', principal: { kind: 'operator', name: 'oper', role: 'operator' } },
  viewer: { token: 'tok-viewer', principal: { kind: 'operator', name: 'viewer', role: 'viewer' } },
  // A username whose account has another name: no client id built on the username is its own.
  alias: { token: 'tok-alias', principal: { kind: 'operator', name: 'someone', role: 'viewer' } },
};
const TOKENS = Object.values(USERS).map((u) => u.token);

const authenticate: Authenticate = (username, password) => {
  const user = USERS[username];
  return user && user.token === password ? user.principal : null;
};

// ---- payloads ----

const now = () => new Date().toISOString();
let seq = 0;
const uniq = () => `${process.pid}-${++seq}`;
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const reported = (deviceId: string, extra: object = {}) =>
  json({ deviceId, seq: 0, ts: now(), models: {}, note: uniq(), ...extra });
const status = (online = true) => json({ online, ts: now(), agentVersion: `t-${uniq()}` });
const threeLatencies = {
  level: 0,
  count: 3,
  sum: 12,
  min: 3,
  max: 5,
  zeros: 0,
  positive: { offset: 56, counts: [1, 0, 2] },
};
const metrics = (model = 'det') =>
  json({
    ts: now(),
    windowStart: now(),
    windowSeconds: 60,
    series: [{ model, version: '1.0.0', source: 'app', count: 3, errors: seq++ % 2, latencyMs: threeLatencies }],
  });
const command = (clientId: string, extra: object = {}) =>
  json({ correlationId: uniq(), replyTo: topics.reply(clientId, `r${seq}`), args: {}, ...extra });
const OVER = 256 * 1024 + 1;

// ---- the broker under test ----

type LogEntry = { level: string; obj: object; msg: string | undefined };
const logs: LogEntry[] = [];
const logger = Object.fromEntries(
  (['info', 'warn', 'error', 'debug'] as const).map((level) => [
    level,
    (obj: object, msg?: string) => logs.push({ level, obj, msg }),
  ]),
) as unknown as Parameters<typeof createBroker>[0]['logger'];
const authFailures: AuthFailure[] = [];

/** Every publish that passed authorization, as seen by the broker (client = the publisher). */
const published: { topic: string; clientId: string | null; payload: Buffer; retain: boolean }[] = [];

let broker: Broker;
let port = 0;
const clients = new Set<MqttClient>();

function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor<T>(what: string, probe: () => T | undefined, ms = WAIT_MS): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Received = { topic: string; payload: Buffer; retain: boolean }[];
type Conn = { client: MqttClient; received: Received; closed: Promise<void> };

/** Connects with MQTT 3.1.1 and no retries; rejects with the CONNACK return code as `code`. */
function connect(
  username: string | undefined,
  password: string | undefined,
  clientId: string,
  extra: Partial<IClientOptions> = {},
  url = `mqtt://127.0.0.1:${port}`,
): Promise<Conn> {
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    clientId,
    username,
    password,
    reconnectPeriod: 0,
    connectTimeout: WAIT_MS,
    clean: true,
    ...extra,
  });
  clients.add(client);
  const received: Received = [];
  client.on('message', (topic, payload, packet) => received.push({ topic, payload, retain: packet.retain }));
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  return within(
    WAIT_MS,
    `connect ${clientId}`,
    new Promise<Conn>((resolve, reject) => {
      client.once('connect', () => resolve({ client, received, closed }));
      client.once('error', (err) => {
        client.end(true);
        reject(err);
      });
      closed.then(() => reject(new Error('closed before CONNACK')));
    }),
  );
}

const as = (user: string, clientId: string = user, extra: Partial<IClientOptions> = {}) =>
  connect(user, USERS[user]?.token, clientId, extra);

/** The CONNACK return code of a refused connection (0 when it was accepted). */
async function connackCode(p: Promise<Conn>): Promise<number> {
  try {
    const conn = await p;
    await conn.client.endAsync();
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

async function retainedPayload(topic: string): Promise<Buffer | undefined> {
  const persistence = (broker.aedes as unknown as { persistence: { createRetainedStream(p: string): Readable } })
    .persistence;
  let found: Buffer | undefined;
  for await (const packet of persistence.createRetainedStream(topic)) {
    found = Buffer.from((packet as { payload: Buffer }).payload);
  }
  return found;
}

const samePayload = (a: Buffer, b: Buffer) => Buffer.compare(a, b) === 0;
const wasPublished = (topic: string, payload: Buffer) =>
  published.some((p) => p.topic === topic && samePayload(p.payload, payload));

/** A device that keeps publishing good messages: proof the broker still serves everybody. */
let control: Conn;
/** A privileged subscriber to everything an operator may read. */
let watcher: Conn;

async function brokerStillServes(t: Test): Promise<void> {
  const payload = metrics();
  await within(WAIT_MS, 'control publish', control.client.publishAsync(topics.metrics('dev-b'), payload, { qos: 1 }));
  await waitFor('the control message at the watcher', () =>
    watcher.received.some((m) => samePayload(m.payload, payload)) ? true : undefined,
  );
  t.pass('the broker still delivers a good publish from another client');
}

/** Publishes and expects the ACL to let it through (QoS 1 acked, seen by the broker, retained if asked). */
async function expectPublished(
  t: Test,
  conn: Conn,
  topic: string,
  payload: Buffer,
  opts: { retain?: boolean; qos?: 0 | 1 } = {},
) {
  const retain = opts.retain ?? false;
  await within(WAIT_MS, `publish ${topic}`, conn.client.publishAsync(topic, payload, { qos: opts.qos ?? 1, retain }));
  await waitFor(`${topic} at the broker`, () => (wasPublished(topic, payload) ? true : undefined));
  t.pass(`published ${topic}${retain ? ' (retained)' : ''}`);
  if (retain) {
    const stored = await retainedPayload(topic);
    t.ok(stored && samePayload(stored, payload), `${topic} retained`);
  }
}

/**
 * Publishes and expects a refusal: Aedes closes the connection (MQTT-3.3.5-2, 3.1.1 has no
 * negative PUBACK), the message never enters the publish pipeline, no subscriber gets it, nothing
 * is retained, and the broker keeps serving others.
 */
async function expectRefused(
  t: Test,
  conn: Conn,
  topic: string,
  payload: Buffer,
  opts: { retain?: boolean; qos?: 0 | 1; reason?: RegExp } = {},
) {
  const logsBefore = logs.length;
  const retainedBefore = await retainedPayload(topic);
  conn.client.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false }, () => {});
  await within(WAIT_MS, `the broker to close the connection after publishing ${topic}`, conn.closed);
  t.pass(`publish to ${topic} refused: connection closed`);
  await brokerStillServes(t);
  t.notOk(wasPublished(topic, payload), 'not in the broker publish pipeline');
  t.notOk(
    watcher.received.some((m) => m.topic === topic && samePayload(m.payload, payload)),
    'not delivered to a privileged subscriber',
  );
  const retainedAfter = await retainedPayload(topic);
  t.ok(
    retainedAfter === retainedBefore || (retainedAfter && retainedBefore && samePayload(retainedAfter, retainedBefore)),
    'retained store unchanged',
  );
  const refusal = logs
    .slice(logsBefore)
    .find((l) => l.level === 'warn' && (l.obj as { topic?: string }).topic === topic.slice(0, 200));
  t.ok(refusal, 'refusal logged with its reason');
  if (opts.reason) t.match((refusal?.obj as { reason?: string } | undefined)?.reason, opts.reason, 'reason');
}

t.before(async () => {
  broker = await createBroker({
    topics,
    authenticate,
    logger,
    onAuthFailure: (info) => authFailures.push(info),
    validate: (topic, payload) =>
      topic.endsWith('/metrics') && payload.includes('blocked-model') ? 'blocked by the coordinator' : null,
  });
  broker.aedes.on('publish', (packet, client) => {
    if (!packet.topic.startsWith('$SYS')) {
      published.push({
        topic: packet.topic,
        clientId: client?.id ?? null,
        payload: Buffer.from(packet.payload),
        retain: packet.retain,
      });
    }
  });
  ({ port } = await broker.listen(0, '127.0.0.1'));
  control = await as('dev-b');
  watcher = await as('admin', 'admin@watch');
  const filters = [
    ...(['reported', 'status', 'metrics', 'desired'] as const).map((k) => topics.allDevices(k)),
    topics.allRollouts(),
    topics.audit(),
    topics.fleet(),
    `${topics.replyPrefix('admin@watch')}#`,
  ];
  const granted = await watcher.client.subscribeAsync(filters, { qos: 1 });
  if (granted.some((g) => g.qos !== 1)) throw new Error(`watcher not granted: ${JSON.stringify(granted)}`);
});

t.teardown(async () => {
  await Promise.all([...clients].map((c) => c.endAsync(true).catch(() => {})));
  await broker?.close();
});

// ---- the pure ACL ----

t.test('pure ACL functions (custom prefix)', async (t) => {
  const tp = createTopics('plant/ota');
  const dev: Principal = { kind: 'device', deviceId: 'd1' };
  const viewer: Principal = { kind: 'operator', name: 'v', role: 'viewer' };
  const pub = { retain: false, will: false };
  t.equal(canPublish(dev, 'd1', tp.reported('d1'), { retain: true, will: false }, tp), true);
  t.equal(canPublish(dev, 'd1', tp.status('d1'), { retain: true, will: true }, tp), true);
  t.type(canPublish(dev, 'd1', tp.metrics('d1'), { retain: false, will: true }, tp), 'string', 'metrics is no will');
  t.type(canPublish(dev, 'd1', tp.metrics('d1'), { retain: true, will: false }, tp), 'string', 'no retained metrics');
  t.type(canPublish(dev, 'd1', 'ota/v1/devices/d1/reported', pub, tp), 'string', 'other prefix');
  t.type(canPublish(dev, 'd2', tp.reported('d1'), pub, tp), 'string', 'client id is not the device id');
  t.equal(canPublish(viewer, 'v@1', tp.cmd('rollout.ls'), pub, tp), true);
  t.match(canPublish(viewer, 'v@1', tp.cmd('rollout.abort'), pub, tp), /viewer may not call rollout\.abort/);
  t.type(canPublish(viewer, 'v@1', tp.cmd('rollout.ls'), { retain: false, will: true }, tp), 'string');
  t.equal(canSubscribe(dev, 'd1', tp.desired('d1'), tp), true);
  t.type(canSubscribe(dev, 'd1', tp.allDevices('desired'), tp), 'string');
  t.equal(canSubscribe(viewer, 'v@1', 'plant/ota/reply/v@1/#', tp), true);
  t.equal(canSubscribe(viewer, 'v@1', 'plant/ota/reply/v@1/a', tp), true);
  t.type(canSubscribe(viewer, 'v@1', 'plant/ota/reply/v@1/+', tp), 'string');
  t.type(canSubscribe(viewer, 'v@1', 'plant/ota/#', tp), 'string');
  // The fleet summary: operators read it, devices neither read nor write it, nobody but the coordinator writes it.
  t.equal(canSubscribe(viewer, 'v@1', tp.fleet(), tp), true);
  t.match(canSubscribe(dev, 'd1', tp.fleet(), tp), /subscribes only to its own desired topic/);
  t.match(canPublish(dev, 'd1', tp.fleet(), { retain: true, will: false }, tp), /may not publish to fleet topics/);
  t.match(canPublish(viewer, 'v@1', tp.fleet(), pub, tp), /may publish only commands, not fleet/);
  t.match(canSubscribe(viewer, 'v@1', 'plant/ota/fleet/x', tp), /expected fleet with nothing after it/);
  t.equal(checkClientId(viewer, 'v'), true);
  t.equal(checkClientId(viewer, 'v@otactl-3f2a'), true);
  t.type(checkClientId(viewer, 'vx'), 'string', 'the name must be followed by "@"');
  t.match(
    checkClientId(viewer, 'v-otactl-3f2a'),
    /old form <name>-<suffix>.*"v@otactl-3f2a"/,
    'the old form is refused, naming the new one',
  );
  t.type(checkClientId(viewer, 'v@a/b'), 'string', 'not a safe suffix');
  t.type(checkClientId(viewer, 'v@'), 'string', 'an empty suffix');
  t.type(checkClientId(viewer, 'v@a@b'), 'string', 'a second "@"');
  t.type(checkClientId(dev, 'd1-x'), 'string');
});

// ---- CONNECT ----

t.test('connection refused: credentials, client ids, wills', async (t) => {
  const forgedWill = status(false);
  const cases: [string, () => Promise<Conn>, number][] = [
    ['wrong token', () => connect('dev-a', 'nope', 'dev-a'), 4],
    ['unknown user', () => connect('ghost', 'tok-dev-a', 'ghost'), 4],
    ['missing password', () => connect('dev-a', undefined, 'dev-a'), 4],
    ['no credentials', () => connect(undefined, undefined, 'dev-a'), 4],
    ["another device's token", () => connect('dev-a', 'tok-dev-b', 'dev-a'), 4],
    ["device with another device's client id", () => as('dev-a', 'dev-b'), 5],
    ['device with a longer client id', () => as('dev-a', 'dev-a-2'), 5],
    ["operator using a device's client id", () => as('admin', 'dev-a'), 5],
    ['operator whose client id only starts with the name', () => as('admin', 'administrator'), 5],
    ["operator using another operator's client id", () => as('oper', 'admin@otactl-1'), 5],
    ['operator with a client id of the old form name-suffix', () => as('admin', 'admin-otactl-1'), 5],
    ['operator with an unsafe client id', () => as('admin', 'admin@a/b'), 5],
    [
      "device will on another device's status",
      () =>
        as('dev-a', 'dev-a', { will: { topic: topics.status('dev-b'), payload: forgedWill, qos: 1, retain: true } }),
      5,
    ],
    [
      'device will on its own reported',
      () =>
        as('dev-a', 'dev-a', {
          will: { topic: topics.reported('dev-a'), payload: reported('dev-a'), qos: 1, retain: true },
        }),
      5,
    ],
    [
      'device will with a malformed status',
      () =>
        as('dev-a', 'dev-a', {
          will: { topic: topics.status('dev-a'), payload: Buffer.from('{'), qos: 1, retain: true },
        }),
      5,
    ],
    [
      'operator with a will',
      () =>
        as('admin', 'admin@w', {
          will: { topic: topics.cmd('device.ls'), payload: command('admin@w'), qos: 1, retain: false },
        }),
      5,
    ],
  ];
  for (const [name, attempt, code] of cases) {
    const before = authFailures.length;
    t.equal(await connackCode(attempt()), code, `${name}: CONNACK return code ${code}`);
    t.equal(authFailures.length, before + 1, `${name}: onAuthFailure called`);
  }
  t.ok(
    authFailures.every((f) => f.reason.length > 0),
    'every failure has a reason',
  );
  t.match(
    authFailures.find((f) => f.clientId === 'admin-otactl-1'),
    { reason: /old form <name>-<suffix>, no longer accepted.*"admin@otactl-1"/ },
    'an old-form client id is refused with a reason that names the new form',
  );
  t.match(
    authFailures.find((f) => f.clientId === 'dev-b'),
    { clientId: 'dev-b', username: 'dev-a', reason: /client id "dev-a"/ },
    'a failure names the client id, the username and the reason',
  );
  const text = JSON.stringify(logs);
  t.notOk(
    TOKENS.some((tok) => text.includes(tok)),
    'no password in the logs',
  );
  await brokerStillServes(t);
  t.notOk(
    published.some((p) => p.topic === topics.status('dev-b') && samePayload(p.payload, forgedWill)),
    'the will of a refused connection is never published',
  );

  for (const [user, id] of [
    ['admin', 'admin'],
    ['admin', 'admin@otactl-3f2a'],
    ['viewer', 'viewer@x'],
    ['dev-a', 'dev-a'],
  ] as const) {
    t.equal(await connackCode(as(user, id)), 0, `${user} as ${id} accepted`);
  }

  // A live device session cannot be taken over by an operator whose name prefixes its id (that
  // id is none of the operator's: they are `admin` and `admin@...`).
  const box = await as('admin-box');
  t.equal(await connackCode(as('admin', 'admin-box')), 5, 'operator cannot take over a live device session');
  t.ok(box.client.connected, 'the device keeps its session');
  t.same(broker.principalOf('admin-box'), USERS['admin-box']?.principal, 'principalOf a connected device');
  await box.client.endAsync();
  await waitFor('admin-box gone', () => (broker.principalOf('admin-box') === undefined ? true : undefined));
  t.pass('principalOf is cleared on disconnect');
});

t.test('otactl refused with CONNACK 5 says which client ids an operator may use', async (t) => {
  await t.rejects(
    CommandClient.connect({
      url: `mqtt://127.0.0.1:${port}`,
      user: 'alias',
      token: 'tok-alias',
      connectTimeoutMs: WAIT_MS,
    }),
    { code: 'E_AUTH', message: /client id alias@otactl-[0-9a-f]{8} \(not authorized\).*<name>@<suffix>/ },
  );
  t.match(authFailures.at(-1), { username: 'alias', reason: /"someone" or "someone@<suffix>"/ }, 'logged reason');
  await t.rejects(
    CommandClient.connect({
      url: `mqtt://127.0.0.1:${port}`,
      user: 'viewer',
      token: 'wrong',
      connectTimeoutMs: WAIT_MS,
    }),
    { code: 'E_AUTH', message: /unknown user or wrong token/ },
    'a wrong token (CONNACK 4) is told apart',
  );
});

t.test('a device will on its own status is accepted and published when the device drops', async (t) => {
  const will = status(false);
  const dev = await as('dev-a', 'dev-a', {
    will: { topic: topics.status('dev-a'), payload: will, qos: 1, retain: true },
  });
  t.same(broker.principalOf('dev-a'), USERS['dev-a']?.principal);
  dev.client.stream.destroy(); // a network drop, no DISCONNECT
  await waitFor('the will at the watcher', () =>
    watcher.received.some((m) => m.topic === topics.status('dev-a') && samePayload(m.payload, will)) ? true : undefined,
  );
  t.pass('will delivered');
  const stored = await retainedPayload(topics.status('dev-a'));
  t.ok(stored && samePayload(stored, will), 'will retained');
});

// ---- PUBLISH matrix ----

t.test('device publishes: own reported/status/metrics only', async (t) => {
  const dev = await as('dev-a');
  await expectPublished(t, dev, topics.reported('dev-a'), reported('dev-a'), { retain: true });
  await expectPublished(t, dev, topics.status('dev-a'), status(), { retain: true });
  await expectPublished(t, dev, topics.metrics('dev-a'), metrics());
  await expectPublished(t, dev, topics.metrics('dev-a'), metrics(), { qos: 0 });
  t.ok(dev.client.connected, 'still connected after allowed publishes');
  await dev.client.endAsync();

  const refused: [string, string, Buffer, { retain?: boolean; qos?: 0 | 1 }?][] = [
    ["other device's reported", topics.reported('dev-b'), reported('dev-b')],
    ["other device's reported, retained", topics.reported('dev-b'), reported('dev-b'), { retain: true }],
    ["other device's status, retained", topics.status('dev-b'), status(), { retain: true }],
    ["other device's metrics", topics.metrics('dev-b'), metrics()],
    ['own metrics retained', topics.metrics('dev-a'), metrics(), { retain: true }],
    ['own desired', topics.desired('dev-a'), json({ desired: '{}', signatures: [] }), { retain: true }],
    ["other device's desired", topics.desired('dev-b'), json({ desired: '{}', signatures: [] })],
    ['a rollout summary', topics.rollout('r1'), json({ rolloutId: 'r1' }), { retain: true }],
    ['audit', topics.audit(), json({ seq: 1 })],
    ['the fleet summary, retained', topics.fleet(), json({ devices: 0, online: 0, models: [] }), { retain: true }],
    ['the fleet summary', topics.fleet(), json({ devices: 1 })],
    ['a command', topics.cmd('device.ls'), command('dev-a')],
    ['a reply to an operator', topics.reply('admin@watch', 'x'), json({ ok: true })],
    ['a reply under its own id', topics.reply('dev-a', 'x'), json({ ok: true })],
    ['outside the prefix', 'elsewhere/topic', json({})],
    ['$SYS', '$SYS/fake/heartbeat', json({})],
    ["other device's reported at QoS 0", topics.reported('dev-b'), reported('dev-b'), { qos: 0 }],
  ];
  for (const [name, topic, payload, opts] of refused) {
    await t.test(`device: ${name}`, async (t) => expectRefused(t, await as('dev-a'), topic, payload, opts));
  }
});

t.test('operator publishes: commands their role allows, never retained, nothing else', async (t) => {
  const allowed: [string, string, string][] = [
    ['admin', 'admin@1', 'device.add'],
    ['admin', 'admin@1', 'operator.ls'],
    ['oper', 'oper@1', 'rollout.abort'],
    ['oper', 'oper@1', 'release.publish'],
    ['viewer', 'viewer@1', 'rollout.ls'],
    ['viewer', 'viewer@1', 'audit.verify'],
  ];
  for (const [user, id, op] of allowed) {
    const conn = await as(user, id);
    await expectPublished(t, conn, topics.cmd(op), command(id));
    await conn.client.endAsync();
  }

  const refused: [string, string, string, string, Buffer, { retain?: boolean; reason?: RegExp }?][] = [
    ['viewer: mutating command', 'viewer', 'viewer@1', topics.cmd('rollout.abort'), command('viewer@1')],
    ['viewer: release.publish', 'viewer', 'viewer@1', topics.cmd('release.publish'), command('viewer@1')],
    ['operator: admin-only command', 'oper', 'oper@1', topics.cmd('operator.add'), command('oper@1')],
    ['admin: retained command', 'admin', 'admin@1', topics.cmd('device.ls'), command('admin@1'), { retain: true }],
    ['admin: desired', 'admin', 'admin@1', topics.desired('dev-a'), json({}), { retain: true }],
    ['admin: device reported', 'admin', 'admin@1', topics.reported('dev-a'), reported('dev-a')],
    ['admin: device status', 'admin', 'admin@1', topics.status('dev-a'), status(), { retain: true }],
    ['admin: rollout summary', 'admin', 'admin@1', topics.rollout('r1'), json({}), { retain: true }],
    ['admin: audit', 'admin', 'admin@1', topics.audit(), json({})],
    ['admin: fleet summary', 'admin', 'admin@1', topics.fleet(), json({}), { retain: true }],
    ['viewer: fleet summary', 'viewer', 'viewer@1', topics.fleet(), json({})],
    ['admin: own reply topic', 'admin', 'admin@1', topics.reply('admin@1', 'x'), json({})],
    [
      "admin: replyTo under another operator's client",
      'admin',
      'admin@1',
      topics.cmd('device.ls'),
      command('admin@1', { replyTo: topics.reply('viewer@1', 'x') }),
      { reason: /replyTo/ },
    ],
    [
      'viewer: replyTo under a client id that is not its own',
      'viewer',
      'viewer@1',
      topics.cmd('rollout.ls'),
      command('viewer@1', { replyTo: topics.reply('viewerx', 'x') }),
      { reason: /replyTo/ },
    ],
    [
      'admin: replyTo is a wildcard',
      'admin',
      'admin@1',
      topics.cmd('device.ls'),
      command('admin@1', { replyTo: `${topics.replyPrefix('admin@1')}#` }),
      { reason: /replyTo/ },
    ],
    [
      'admin: replyTo outside the prefix',
      'admin',
      'admin@1',
      topics.cmd('device.ls'),
      command('admin@1', { replyTo: topics.desired('dev-a') }),
      { reason: /replyTo/ },
    ],
  ];
  for (const [name, user, id, topic, payload, opts] of refused) {
    await t.test(name, async (t) => expectRefused(t, await as(user, id), topic, payload, opts));
  }
});

t.test('malformed and oversize payloads are refused on every device topic and cmd', async (t) => {
  const pad = 'x'.repeat(OVER);
  const cases: [string, string, string, string, Buffer, RegExp][] = [
    ['reported: not JSON', 'dev-a', 'dev-a', topics.reported('dev-a'), Buffer.from('not json'), /JSON/],
    ['reported: not UTF-8', 'dev-a', 'dev-a', topics.reported('dev-a'), Buffer.from([0x7b, 0xff, 0x7d]), /UTF-8/],
    [
      'reported: wrong schema',
      'dev-a',
      'dev-a',
      topics.reported('dev-a'),
      json({ deviceId: 'dev-a', seq: -1 }),
      /reported/,
    ],
    [
      'reported: deviceId mismatch',
      'dev-a',
      'dev-a',
      topics.reported('dev-a'),
      reported('dev-b'),
      /names device dev-b/,
    ],
    ['reported: oversize', 'dev-a', 'dev-a', topics.reported('dev-a'), reported('dev-a', { pad }), /limit is 262144/],
    ['reported: empty (clears retained)', 'dev-a', 'dev-a', topics.reported('dev-a'), Buffer.alloc(0), /JSON/],
    ['status: not JSON', 'dev-a', 'dev-a', topics.status('dev-a'), Buffer.from('online'), /JSON/],
    ['status: wrong schema', 'dev-a', 'dev-a', topics.status('dev-a'), json({ online: 'yes', ts: now() }), /status/],
    ['status: oversize', 'dev-a', 'dev-a', topics.status('dev-a'), json({ online: true, ts: now(), pad }), /limit/],
    ['metrics: not JSON', 'dev-a', 'dev-a', topics.metrics('dev-a'), Buffer.from('[1,'), /JSON/],
    [
      'metrics: wrong schema',
      'dev-a',
      'dev-a',
      topics.metrics('dev-a'),
      json({ ts: now(), windowStart: now(), windowSeconds: 0, series: [] }),
      /metrics/,
    ],
    ['metrics: oversize', 'dev-a', 'dev-a', topics.metrics('dev-a'), Buffer.alloc(OVER, 0x20), /limit/],
    ['metrics: refused by validate()', 'dev-a', 'dev-a', topics.metrics('dev-a'), metrics('blocked-model'), /blocked/],
    ['cmd: not JSON', 'admin', 'admin@1', topics.cmd('device.ls'), Buffer.from('ls'), /JSON/],
    ['cmd: wrong schema', 'admin', 'admin@1', topics.cmd('device.ls'), json({ replyTo: 'x' }), /command/],
    ['cmd: unknown field', 'admin', 'admin@1', topics.cmd('device.ls'), command('admin@1', { extra: 1 }), /command/],
    [
      'cmd: oversize',
      'admin',
      'admin@1',
      topics.cmd('device.ls'),
      command('admin@1', { args: { pad } }),
      /limit is 262144/,
    ],
  ];
  for (const [name, user, id, topic, payload, reason] of cases) {
    await t.test(name, async (t) => expectRefused(t, await as(user, id), topic, payload, { reason }));
  }
  const dev = await as('dev-a');
  await expectPublished(t, dev, topics.metrics('dev-a'), metrics('fine-model'));
  await dev.client.endAsync();
});

t.test('a device publishing just under the cap is served', async (t) => {
  const base = reported('dev-a', { pad: '' }).length;
  const payload = reported('dev-a', { pad: 'y'.repeat(256 * 1024 - base - 10) });
  t.ok(payload.length <= 256 * 1024 && payload.length > 256 * 1024 - 100, `payload is ${payload.length} bytes`);
  const dev = await as('dev-a');
  await expectPublished(t, dev, topics.reported('dev-a'), payload, { retain: true });
  await dev.client.endAsync();
});

t.test('a refused retained publish leaves no trace for a fresh subscriber', async (t) => {
  const own = status();
  const b = await as('dev-b', 'dev-b', {});
  // dev-b is the control; reconnecting it takes over its session, so restore the control afterwards.
  await expectPublished(t, b, topics.status('dev-b'), own, { retain: true });
  control = b;
  const forged = status(false);
  await expectRefused(t, await as('dev-a'), topics.status('dev-b'), forged, { retain: true });
  const fresh = await as('admin', 'admin@fresh');
  await fresh.client.subscribeAsync(topics.status('dev-b'), { qos: 1 });
  await waitFor('the genuine retained status', () =>
    fresh.received.some((m) => samePayload(m.payload, own)) ? true : undefined,
  );
  // What a fresh subscriber can be sent is the broker's retained store (one message per topic,
  // MQTT-3.3.1-5): the genuine status there is proof the forged one never replaced it, with no
  // waiting for a message that should not come.
  const stored = await retainedPayload(topics.status('dev-b'));
  t.ok(stored && samePayload(stored, own), 'the retained status is the genuine one');
  t.notOk(
    fresh.received.some((m) => samePayload(m.payload, forged)),
    'the forged status is not delivered to a fresh subscriber',
  );
  t.equal(fresh.received.length, 1, 'only the genuine retained status');
  const forgedCmd = command('admin@1');
  await expectRefused(t, await as('admin', 'admin@1'), topics.cmd('device.ls'), forgedCmd, { retain: true });
  t.equal(await retainedPayload(topics.cmd('device.ls')), undefined, 'no retained command');
  await fresh.client.endAsync();
});

// ---- SUBSCRIBE matrix ----

/** Subscribes one filter and returns the granted QoS byte of the raw SUBACK. */
function subscribeRaw(client: MqttClient, filter: string): Promise<number> {
  return within(
    WAIT_MS,
    `SUBACK for ${filter}`,
    new Promise<number>((resolve) => {
      const onPacket = (packet: Packet) => {
        if (packet.cmd !== 'suback') return;
        client.off('packetreceive', onPacket);
        resolve((packet.granted[0] as number | undefined) ?? -1);
      };
      client.on('packetreceive', onPacket);
      client.subscribe(filter, { qos: 1 }, () => {});
    }),
  );
}

/**
 * For each [filter, sample topic, allowed]: the SUBACK grants QoS 1 or 128; then the coordinator
 * publishes internally on every sample topic, and a barrier on a topic the client may read. The
 * allowed samples arrive, the refused ones do not.
 */
async function subscribeMatrix(
  t: Test,
  conn: Conn,
  cases: [string, string, boolean][],
  barrierFilter: string,
  barrierTopic: string,
) {
  for (const [filter, , allowed] of cases) {
    t.equal(await subscribeRaw(conn.client, filter), allowed ? 1 : 128, `${filter}: ${allowed ? 'granted' : '0x80'}`);
  }
  t.ok(conn.client.connected, 'still connected after refused subscriptions');
  t.equal(await subscribeRaw(conn.client, barrierFilter), 1, 'barrier subscription granted');
  const marks = new Map<string, Buffer>();
  for (const [filter, sample] of cases) {
    const payload = json({ mark: uniq(), filter });
    marks.set(filter, payload);
    await broker.publish(sample, payload, { retain: false, qos: 1 });
  }
  const barrier = json({ barrier: uniq() });
  await broker.publish(barrierTopic, barrier, { retain: false, qos: 1 });
  await waitFor('the barrier', () => (conn.received.some((m) => samePayload(m.payload, barrier)) ? true : undefined));
  for (const [filter, sample, allowed] of cases) {
    const mark = marks.get(filter) as Buffer;
    const got = conn.received.some((m) => samePayload(m.payload, mark));
    t.equal(got, allowed, `${allowed ? 'delivered' : 'not delivered'} on ${sample} (${filter})`);
  }
}

t.test('device subscriptions: its own desired only', async (t) => {
  const dev = await as('dev-a');
  const p = topics.prefix;
  await subscribeMatrix(
    t,
    dev,
    [
      [topics.desired('dev-b'), topics.desired('dev-b'), false],
      [topics.allDevices('desired'), topics.desired('dev-b'), false],
      [`${p}/devices/dev-a/+`, topics.reported('dev-a'), false],
      [topics.reported('dev-a'), topics.reported('dev-a'), false],
      [topics.status('dev-b'), topics.status('dev-b'), false],
      [topics.metrics('dev-b'), topics.metrics('dev-b'), false],
      [topics.allRollouts(), topics.rollout('r1'), false],
      [topics.rollout('r1'), topics.rollout('r1'), false],
      [topics.audit(), topics.audit(), false],
      [topics.fleet(), topics.fleet(), false],
      [`${p}/fleet/+`, `${p}/fleet/x`, false],
      [topics.allCommands(), topics.cmd('device.ls'), false],
      [`${topics.replyPrefix('dev-a')}#`, topics.reply('dev-a', 'x'), false],
      [`${topics.replyPrefix('admin@watch')}#`, topics.reply('admin@watch', 'y'), false],
      ['#', topics.desired('dev-b'), false],
      ['ota/#', topics.audit(), false],
      [`${p}/#`, topics.rollout('r2'), false],
      ['+/+/devices/+/desired', topics.desired('admin-box'), false],
      ['$SYS/#', '$SYS/x/test', false],
    ],
    topics.desired('dev-a'),
    topics.desired('dev-a'),
  );
  await dev.client.endAsync();
});

t.test('operator subscriptions: replies, rollouts, audit, fleet summary, device views', async (t) => {
  for (const [user, id] of [
    ['viewer', 'viewer@cli'],
    ['admin', 'admin@cli'],
  ] as const) {
    await t.test(user, async (t) => {
      const op = await as(user, id);
      const p = topics.prefix;
      await subscribeMatrix(
        t,
        op,
        [
          [`${topics.replyPrefix(id)}abc`, topics.reply(id, 'abc'), true],
          [topics.allRollouts(), topics.rollout('r1'), true],
          [topics.rollout('r9'), topics.rollout('r9'), true],
          [topics.audit(), topics.audit(), true],
          [topics.fleet(), topics.fleet(), true],
          [`${p}/fleet/#`, `${p}/fleet/x`, false],
          ...(['reported', 'status', 'metrics', 'desired'] as const).map((k): [string, string, boolean] => [
            topics.allDevices(k),
            `${p}/devices/dev-a/${k}`,
            true,
          ]),
          [topics.status('dev-b'), topics.status('dev-b'), true],
          // Replies are private to the operator: its own other client ids yes, anyone else's no.
          [`${topics.replyPrefix('admin@watch')}#`, topics.reply('admin@watch', 'z'), user === 'admin'],
          [`${topics.replyPrefix('viewer@other')}#`, topics.reply('viewer@other', 'z'), user === 'viewer'],
          [`${p}/reply/+/#`, topics.reply('oper@1', 'z'), false],
          [`${p}/reply/#`, topics.reply('oper@2', 'z'), false],
          [`${topics.replyPrefix(`${id}0`)}#`, topics.reply(`${id}0`, 'z'), true],
          [`${topics.replyPrefix('adminx')}#`, topics.reply('adminx', 'z'), false],
          [topics.allCommands(), topics.cmd('rollout.ls'), false],
          [topics.cmd('device.ls'), topics.cmd('device.ls'), false],
          ['#', topics.cmd('audit.ls'), false],
          ['ota/#', topics.cmd('key.ls'), false],
          [`${p}/#`, topics.cmd('group.ls'), false],
          [`${p}/devices/#`, `${p}/devices/dev-a/other`, false],
          [`${p}/devices/+/+`, `${p}/devices/dev-b/other`, false],
          [`${p}/rollouts/#`, `${p}/rollouts/r1/more`, false],
          ['$SYS/#', '$SYS/y/test', false],
          ['other/+', 'other/x', false],
        ],
        `${topics.replyPrefix(id)}#`,
        topics.reply(id, 'barrier'),
      );
      await op.client.endAsync();
    });
  }
});

// ---- transports ----

t.test('MQTT over WebSocket on /mqtt', async (t) => {
  const server = http.createServer((_req, res) => res.end('ok'));
  attachWebSocket(server, broker);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const wsPort = (server.address() as net.AddressInfo).port;
  const dev = await connect('dev-a', 'tok-dev-a', 'dev-a', {}, `ws://127.0.0.1:${wsPort}/mqtt`);
  t.same(broker.principalOf('dev-a'), USERS['dev-a']?.principal, 'authenticated over ws');
  await expectPublished(t, dev, topics.reported('dev-a'), reported('dev-a'), { retain: true });
  await expectRefused(t, dev, topics.reported('dev-b'), reported('dev-b'));
  t.equal(
    await connackCode(connect('dev-a', 'wrong', 'dev-a', {}, `ws://127.0.0.1:${wsPort}/mqtt`)),
    4,
    'wrong token refused over ws',
  );
  await t.rejects(
    connect('dev-a', 'tok-dev-a', 'dev-a', { connectTimeout: 1000 }, `ws://127.0.0.1:${wsPort}/other`),
    'other paths are not MQTT',
  );
});

async function selfSigned(dir: string): Promise<{ cert: Buffer; key: Buffer } | null> {
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  try {
    await promisify(execFile)(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { timeout: 10_000 },
    );
  } catch {
    return null;
  }
  return { cert: await fs.readFile(certFile), key: await fs.readFile(keyFile) };
}

const certDir = await fs.mkdtemp(path.join(os.tmpdir(), 'broker-acl-'));
t.teardown(() => fs.rm(certDir, { recursive: true, force: true }));
const pair = await selfSigned(certDir);

t.test(
  'MQTT over TLS with a self-signed certificate',
  { skip: pair ? false : 'openssl is not available to make a test certificate' },
  async (t) => {
    if (!pair) return;
    const { port: tlsPort } = await broker.listen(0, '127.0.0.1', pair);
    t.not(tlsPort, port, 'a second listener');
    const url = `mqtts://127.0.0.1:${tlsPort}`;
    const dev = await connect('dev-a', 'tok-dev-a', 'dev-a', { ca: pair.cert, rejectUnauthorized: true }, url);
    await expectPublished(t, dev, topics.status('dev-a'), status(), { retain: true });
    await dev.client.endAsync();
    t.equal(
      await connackCode(connect('viewer', 'tok-dev-a', 'viewer', { ca: pair.cert }, url)),
      4,
      'wrong token refused over TLS',
    );
    await t.rejects(
      connect('dev-a', 'tok-dev-a', 'dev-a', { rejectUnauthorized: true, connectTimeout: 1000 }, url),
      'a client that does not trust the certificate cannot connect',
    );
  },
);

// ---- lifecycle ----

t.test('internal publish reaches subscribers and retains; close() does not hang with clients', async (t) => {
  const ownLogs: LogEntry[] = [];
  const ownLogger = Object.fromEntries(
    (['info', 'warn', 'error', 'debug'] as const).map((level) => [
      level,
      (obj: object, msg?: string) => ownLogs.push({ level, obj, msg }),
    ]),
  ) as unknown as Parameters<typeof createBroker>[0]['logger'];
  const b = await createBroker({ topics, authenticate, logger: ownLogger });
  const { port: p2 } = await b.listen(0, '127.0.0.1');
  const server = http.createServer();
  attachWebSocket(server, b);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const wsPort = (server.address() as net.AddressInfo).port;

  const tcp = await connect('dev-a', 'tok-dev-a', 'dev-a', {}, `mqtt://127.0.0.1:${p2}`);
  const ws = await connect('viewer', 'tok-viewer', 'viewer', {}, `ws://127.0.0.1:${wsPort}/mqtt`);
  await tcp.client.subscribeAsync(topics.desired('dev-a'), { qos: 1 });
  const desired = json({ desired: 'x', n: uniq() });
  await b.publish(topics.desired('dev-a'), desired, { retain: true, qos: 1 });
  await waitFor('desired at the device', () =>
    tcp.received.some((m) => samePayload(m.payload, desired)) ? true : undefined,
  );
  await ws.client.subscribeAsync(topics.allDevices('desired'), { qos: 1 });
  await waitFor('retained desired at the viewer', () =>
    ws.received.some((m) => samePayload(m.payload, desired) && m.retain) ? true : undefined,
  );
  t.pass('internal publish delivered and retained');
  // A connection that never sends CONNECT must not hold close() up either.
  const { Socket } = await import('node:net');
  const idle = new Socket();
  await new Promise<void>((r) => idle.connect(p2, '127.0.0.1', () => r()));

  await b.close();
  // Aedes would drop the idle socket itself only at its connect timeout (30 s, "connect did not
  // arrive in time"), and close() would wait for that; the broker's log says which closed it.
  t.notOk(
    ownLogs.some((l) => /connect did not arrive in time/.test(String((l.obj as { err?: unknown }).err))),
    'the idle socket was closed by close(), not by the connect timeout',
  );
  await within(WAIT_MS, 'tcp client closed', tcp.closed);
  await within(WAIT_MS, 'ws client closed', ws.closed);
  await within(
    WAIT_MS,
    'idle socket closed',
    new Promise<void>((r) => (idle.destroyed ? r() : idle.once('close', () => r()))),
  );
  t.pass('all connections closed');
  await b.close();
  t.pass('close() twice is fine');
  await t.rejects(b.listen(0, '127.0.0.1'), /closed/, 'no listening after close');
});
