import mqtt from 'mqtt';
import t, { type Test } from 'tap';
import { createBroker } from '../coordinator/broker/create-broker.js';
import { CommandClient } from '../coordinator/client/command-client.js';
import { createLogger } from '../shared/logger.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { connackCode, nextMessage, openSession, publishOutcome, type Session } from './helpers/mqtt-session.js';

// Issue 12 item 3: removing a device (or an operator, or changing an operator's role) must end
// its sessions at once. A removed device's session used to stay connected and keep publishing
// (its status accepted), and once the same id was enrolled again it published reports for the
// new device. Real coordinator (Aedes, SQLite) and real MQTT 3.1.1 clients; what the sessions
// could do is read back from the store.

const topics = createTopics();
const ts = () => new Date().toISOString();
const FACTS = { arch: 'x64', cpuCores: 2, memoryMB: 512, freeDiskMB: 100, os: 'linux', kernel: '6', accelerators: [] };
const reported = (deviceId: string, seq: number, models: object = {}) =>
  encodePayload({ deviceId, seq, ts: ts(), models });
/** One model's report, the same every time it is sent. */
const DET = {
  det: {
    state: 'idle',
    version: null,
    current: null,
    previousVersion: null,
    rolloutId: null,
    progress: null,
    attempt: 0,
    error: null,
    updatedAt: '2026-01-01T00:00:00.000Z',
  },
};
const status = (agentVersion: string) => encodePayload({ online: true, ts: ts(), agentVersion, facts: FACTS });

type Shown = {
  lastReport: { seq: number } | null;
  agentVersion: string | null;
  online: boolean;
  history: { model: string }[];
};

/** Polls the store (through device.show) until `ok`: publishes are recorded behind, in batches. */
async function storeShows(admin: CommandClient, id: string, ok: (d: Shown) => boolean): Promise<Shown> {
  for (let i = 0; ; i++) {
    const d = await admin.call<Shown>('device.show', { id });
    if (ok(d) || i === 200) return d;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function coordinator(t: Test) {
  const c = await startInProcessCoordinator(t);
  const device = (id: string, token: string) =>
    openSession(t, c.running.mqttUrl, id, token, id, {
      will: { topic: topics.status(id), payload: encodePayload({ online: false, ts: ts() }), qos: 1, retain: true },
    });
  return { ...c, device };
}

t.test('device rm ends the session at once; the old token is refused', async (t) => {
  const { admin, device, running } = await coordinator(t);
  const { token } = await admin.call<{ token: string }>('device.add', { id: 'cam-1' });
  const s = await device('cam-1', token);
  t.equal(await publishOutcome(s, topics.status('cam-1'), status('a-1')), 'accepted', 'enrolled: status accepted');
  t.match(await storeShows(admin, 'cam-1', (d) => d.online), { online: true, agentVersion: 'a-1' });

  await admin.call('device.rm', { id: 'cam-1' });
  t.equal(await publishOutcome(s, topics.status('cam-1'), status('a-2')), 'closed', 'after rm: the session is gone');
  t.equal(await connackCode(device('cam-1', token)), 4, 'the old token is refused (CONNACK 4)');
  const metrics = await (await fetch(`${running.httpUrl}/metrics`)).text();
  t.match(metrics, /ota_connected_devices 0\b/, 'not counted as connected');
});

t.test('device rm, then the id enrolled again: the old session cannot speak for the new device', async (t) => {
  const { admin, device, token: adminToken, running } = await coordinator(t);
  const first = await admin.call<{ token: string }>('device.add', { id: 'cam-2' });
  const old = await device('cam-2', first.token);
  const retain = { retain: true };
  t.equal(await publishOutcome(old, topics.status('cam-2'), status('old-1'), retain), 'accepted');
  t.equal(await publishOutcome(old, topics.reported('cam-2'), reported('cam-2', 4242, DET), retain), 'accepted');
  t.match(await storeShows(admin, 'cam-2', (d) => d.lastReport?.seq === 4242), { lastReport: { seq: 4242 } });
  // A second device with a retained status: the witness that retained messages are answered.
  const w = await admin.call<{ token: string }>('device.add', { id: 'witness' });
  const witness = await device('witness', w.token);
  t.equal(await publishOutcome(witness, topics.status('witness'), status('w-1'), retain), 'accepted');

  await admin.call('device.rm', { id: 'cam-2' });
  const second = await admin.call<{ token: string }>('device.add', { id: 'cam-2' });
  t.not(second.token, first.token);
  t.equal(
    await publishOutcome(old, topics.reported('cam-2'), reported('cam-2', 5000)),
    'closed',
    'the old session cannot publish a report for the new device',
  );
  t.equal(await connackCode(device('cam-2', first.token)), 4, 'the old token is refused');
  t.match(
    await admin.call('device.show', { id: 'cam-2' }),
    { lastReport: null, agentVersion: null, online: false },
    'the new device starts from nothing of the old one',
  );
  // Nor do the old device's retained messages outlive it. Retained messages for one SUBSCRIBE
  // are sent in the order of its filters, so the witness's arriving means cam-2's never will.
  const watcher = await openSession(t, running.mqttUrl, adminToken.user, adminToken.token, 'admin@watch');
  watcher.client.subscribe([topics.status('cam-2'), topics.reported('cam-2'), topics.status('witness')], { qos: 1 });
  await nextMessage(watcher, (m) => (m.topic === topics.status('witness') ? true : undefined));
  t.same(
    watcher.received.map((m) => m.topic),
    [topics.status('witness')],
    'no retained status or report of the removed device',
  );

  const fresh = await device('cam-2', second.token);
  t.equal(await publishOutcome(fresh, topics.status('cam-2'), status('new-1')), 'accepted');
  t.equal(await publishOutcome(fresh, topics.reported('cam-2'), reported('cam-2', 1, DET)), 'accepted');
  const shown = await storeShows(admin, 'cam-2', (d) => d.lastReport?.seq === 1 && d.agentVersion === 'new-1');
  t.match(
    shown,
    { lastReport: { seq: 1 }, agentVersion: 'new-1', online: true },
    "the new device's rows hold the new session's reports only",
  );
  // History rows are written for what changed since the device's previous report: the new
  // device has none, so its first report is history (kept next to the old device's row).
  t.equal(shown.history.filter((h) => h.model === 'det').length, 2, "the new device's first report is in its history");
});

t.test('operator rm ends every session of the operator; its token is refused', async (t) => {
  const { admin, running } = await coordinator(t);
  const { token } = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });
  const other = await admin.call<{ token: string }>('operator.add', { name: 'vera-2', role: 'viewer' });
  const as = (user: string, tok: string, id: string) => openSession(t, running.mqttUrl, user, tok, id);
  const sessions: Session[] = [await as('vera', token, 'vera'), await as('vera', token, 'vera@watch')];
  const cli = await CommandClient.connect({ url: running.mqttUrl, user: 'vera', token });
  t.teardown(() => cli.close());
  const bystander = await as('vera-2', other.token, 'vera-2');

  t.match(await admin.call('operator.rm', { name: 'vera' }), { id: 'vera', removed: true });
  const cmd = (id: string) => encodePayload({ correlationId: 'c', replyTo: topics.reply(id, 'r'), args: {} });
  for (const s of sessions) {
    t.equal(await publishOutcome(s, topics.cmd('device.ls'), cmd(s.client.options.clientId as string)), 'closed');
  }
  await t.rejects(cli.call('device.ls'), 'the otactl session is gone too');
  t.equal(await connackCode(as('vera', token, 'vera@again')), 4, 'the token is refused');
  t.equal(await publishOutcome(bystander, topics.cmd('device.ls'), cmd('vera-2')), 'accepted', 'vera-2 is untouched');
  t.same(
    (await admin.call<{ id: string }[]>('operator.ls')).map((o) => o.id),
    ['admin', 'vera-2'],
  );
  await t.rejects(admin.call('operator.rm', { name: 'vera' }), { code: 'E_NOT_FOUND', message: /no operator "vera"/ });
  await t.rejects(admin.call('operator.rm', { name: 'admin' }), {
    code: 'E_USAGE',
    message: /cannot remove your own account/,
  });
});

t.test("an operator's role change ends its sessions; it reconnects with the new role", async (t) => {
  const { admin, running } = await coordinator(t);
  const { token } = await admin.call<{ token: string }>('operator.add', { name: 'otto', role: 'operator' });
  const as = (id: string) => openSession(t, running.mqttUrl, 'otto', token, id);
  const s = await as('otto@1');
  const halt = (id: string) =>
    encodePayload({ correlationId: 'c', replyTo: topics.reply(id, 'r'), args: { id: 'none', reason: 'x' } });
  t.equal(await publishOutcome(s, topics.cmd('rollout.halt'), halt('otto@1')), 'accepted', 'an operator may halt');

  t.match(await admin.call('operator.role', { name: 'otto', role: 'viewer' }), { id: 'otto', role: 'viewer' });
  t.equal(await publishOutcome(s, topics.cmd('device.ls'), halt('otto@1')), 'closed', 'the old session is gone');
  const again = await as('otto@2');
  t.equal(await publishOutcome(again, topics.cmd('rollout.halt'), halt('otto@2')), 'closed', 'a viewer may not halt');
  t.match(await admin.call('operator.ls'), [{ id: 'admin' }, { id: 'otto', role: 'viewer' }]);
  await t.rejects(admin.call('operator.role', { name: 'admin', role: 'viewer' }), {
    code: 'E_USAGE',
    message: /cannot change the role of your own account/,
  });
  await t.rejects(admin.call('operator.role', { name: 'ghost', role: 'viewer' }), { code: 'E_NOT_FOUND' });
});

t.test('what a cut session still has in flight speaks for nobody and reaches nobody', async (t) => {
  // The store change and the cut are one synchronous step, but publishes already read from the
  // socket are still on their way: one past the ACL reaches the broker's 'publish' event (where
  // the coordinator records it) a little later, and others wait their turn in the IngestGate.
  // validate() runs inside the ACL check: cutting there puts one publish exactly in that window,
  // with the ones read after it still waiting in the gate (one device publish per turn here).
  // QoS 0, as Aedes publishes those without writing a PUBACK to the (closed) connection first.
  let cutWhile: number | null = null;
  const USERS: Record<string, string> = { d1: 'tok1', d2: 'tok2' };
  const broker = await createBroker({
    topics,
    authenticate: (u, p) => (USERS[u] === p ? { kind: 'device', deviceId: u } : null),
    logger: createLogger('silent'),
    holdDeviceIngest: () => true,
    devicePublishesPerTurn: 1,
    validate: (topic, payload) => {
      if (topic === topics.reported('d1') && JSON.parse(payload.toString()).seq === 3) {
        cutWhile = 3;
        broker.cutSessions({ kind: 'device', deviceId: 'd1' });
      }
      return null;
    },
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  const seen: { deviceId: string; seq: number; principal: unknown }[] = [];
  broker.aedes.on('publish', (packet, client) => {
    if (client && packet.topic.endsWith('/reported')) {
      const { deviceId, seq } = JSON.parse(packet.payload.toString());
      seen.push({ deviceId, seq, principal: broker.principalFor(client) });
    }
  });
  const connect = async (id: string) => {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: id,
      username: id,
      password: USERS[id] as string,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    t.teardown(() => c.endAsync(true));
    return c;
  };
  const d1 = await connect('d1');
  const d2 = await connect('d2');
  const closed = new Promise<void>((r) => d1.once('close', () => r()));
  await d1.publishAsync(topics.reported('d1'), reported('d1', 1), { qos: 1 });
  // One write, so the broker reads them together: seq 2 is checked now, 3-9 wait in the gate,
  // and the cut comes while seq 3 is checked, on the next turn.
  d1.stream.cork();
  for (let seq = 2; seq < 10; seq++) d1.publish(topics.reported('d1'), reported('d1', seq), { qos: 0, retain: true });
  process.nextTick(() => d1.stream.uncork());
  await closed;
  // The gate takes publishes in arrival order: once d2's is through, d1's waiting ones were handled.
  await d2.publishAsync(topics.reported('d2'), reported('d2', 1), { qos: 1 });
  await nextMessageOf(() => seen.find((s) => s.deviceId === 'd2'));

  t.equal(cutWhile, 3, 'the cut happened while seq 3 was being checked');
  const d1Seen = seen.filter((s) => s.deviceId === 'd1');
  const device = { kind: 'device', deviceId: 'd1' };
  t.match(
    d1Seen.slice(0, 2),
    [
      { seq: 1, principal: device },
      { seq: 2, principal: device },
    ],
    'before the cut',
  );
  t.same(
    d1Seen.slice(2).map((s) => ({ seq: s.seq, principal: s.principal ?? null })),
    [{ seq: 3, principal: null }],
    "after the cut: only seq 3 (checked before it) is published, as nobody's; 4-9 are refused",
  );
  t.equal(broker.principalOf('d1'), undefined, 'no live session of d1');
});

/** Polls a condition of the broker's event log (bounded: a hung test fails instead of waiting). */
async function nextMessageOf<T>(probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error('not seen');
}

t.test('a connection that authenticated just before a cut is closed when it registers', async (t) => {
  // The cut comes right after the credentials were checked and before Aedes registers the
  // connection (a microtask queued during authentication runs before Aedes's next steps).
  let cuts = 0;
  const broker = await createBroker({
    topics,
    authenticate: (u, p) => {
      if (u !== 'd1' || p !== 'tok1') return null;
      queueMicrotask(() => {
        cuts += broker.cutSessions({ kind: 'device', deviceId: 'd1' }) + 1;
      });
      return { kind: 'device', deviceId: 'd1' };
    },
    logger: createLogger('silent'),
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  const registered: string[] = [];
  broker.aedes.on('client', (client) => registered.push(client.id));
  const outcome = await new Promise<string>((resolve) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      clientId: 'd1',
      username: 'd1',
      password: 'tok1',
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    t.teardown(() => c.endAsync(true));
    c.once('connect', () => resolve('connected'));
    c.once('close', () => resolve('closed'));
  });
  t.equal(cuts, 1, 'the cut came while no session of d1 was registered');
  t.same(registered, ['d1'], 'Aedes registered the connection after the cut');
  t.equal(outcome, 'closed', 'and the broker closed it at once');
  t.equal(broker.principalOf('d1'), undefined, 'no live session of d1');
});

t.test('a client id that changed hands is given nothing queued or subscribed for its previous holder', async (t) => {
  // Aedes keeps a persistent session (clean=false) by client id: its subscriptions and its QoS 1
  // queue. Operator `x` subscribes to the audit topic and goes offline; it is removed and a device
  // enrolled as `x` connects with clean=false. It must get only its own desired state: neither the
  // audit events queued for the operator nor those its stored subscription still matches.
  const holders = new Map<
    string,
    { kind: 'operator'; name: string; role: 'viewer' } | { kind: 'device'; deviceId: string }
  >();
  holders.set('op-token', { kind: 'operator', name: 'x', role: 'viewer' });
  const broker = await createBroker({
    topics,
    authenticate: (u, p) => {
      const h = holders.get(p);
      if (!h) return null;
      return (h.kind === 'operator' ? h.name : h.deviceId) === u ? h : null;
    },
    logger: createLogger('silent'),
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  const url = `mqtt://127.0.0.1:${port}`;
  const operator = await openSession(t, url, 'x', 'op-token', 'x', { clean: false });
  await operator.client.subscribeAsync(topics.audit(), { qos: 1 });
  await operator.client.endAsync();
  const event = (n: number) => broker.publish(topics.audit(), Buffer.from(`{"n":${n}}`), { retain: false, qos: 1 });
  await event(1); // queued for the offline operator session

  holders.delete('op-token');
  broker.cutSessions({ kind: 'operator', name: 'x' });
  holders.set('dev-token', { kind: 'device', deviceId: 'x' });
  const device = await openSession(t, url, 'x', 'dev-token', 'x', { clean: false });
  await device.client.subscribeAsync(topics.desired('x'), { qos: 1 });
  await event(2); // matches the subscription stored for the operator's session
  // The marker: published last, delivered in order on the one connection.
  await broker.publish(topics.desired('x'), Buffer.from('{"marker":true}'), { retain: false, qos: 1 });
  await nextMessage(device, (m) => (m.topic === topics.desired('x') ? true : undefined));
  t.same(
    device.received.map((m) => m.topic),
    [topics.desired('x')],
    'the device got its own desired state only, no audit event of the removed operator',
  );
});
