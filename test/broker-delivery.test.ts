import mqtt, { type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { type BrokerOptions, createBroker } from '../coordinator/broker/create-broker.js';
import { OrderedPublisher } from '../coordinator/broker/ordered-publisher.js';
import type { Authenticate } from '../coordinator/broker/principal.js';
import { createLogger } from '../shared/logger.js';
import { createTopics } from '../shared/topics.js';

// Every message reaches every subscriber, whatever order the broker's publish pipeline finishes
// them in: Aedes's counter "dedupe" dropped a retained message that a later non-retained one
// overtook (moscajs/aedes #955, #994), so an operator watching a rollout and the audit log lost
// rollout summaries. Real Aedes (through createBroker), real mqtt.js client.

const topics = createTopics();
const authenticate: Authenticate = (username, password) =>
  username === 'admin' && password === 'tok' ? { kind: 'operator', name: 'admin', role: 'admin' } : null;

/** A broker on a free loopback port, closed at the end of the test. */
async function startBroker(t: Test, auth: Authenticate = authenticate, extra: Partial<BrokerOptions> = {}) {
  const broker = await createBroker({ topics, authenticate: auth, logger: createLogger('silent'), ...extra });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  return { broker, port };
}

/** An MQTT 3.1.1 client of `user` (password `tok`), ended at the end of the test. */
async function connect(t: Test, port: number, user: string, clientId: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId,
    username: user,
    password: 'tok',
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
  });
  t.teardown(() => client.endAsync(true));
  return client;
}

t.test('retained and non-retained publishes in flight together: none is lost', async (t) => {
  const { broker, port } = await startBroker(t);
  const client = await connect(t, port, 'admin', 'admin@watch');
  const got: string[] = [];
  client.on('message', (_topic, payload) => got.push(payload.toString()));
  await client.subscribeAsync([topics.allRollouts(), topics.audit()], { qos: 1 });

  // What a rollout decision publishes, without waiting in between: a retained summary, then
  // non-retained audit events (published later, they are delivered first).
  const sent: string[] = [];
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < 50; i++) {
    const summary = JSON.stringify({ summary: i });
    const audit = JSON.stringify({ audit: i });
    sent.push(summary, audit);
    inFlight.push(broker.publish(topics.rollout('r1'), Buffer.from(summary), { retain: true, qos: 1 }));
    inFlight.push(broker.publish(topics.audit(), Buffer.from(audit), { retain: false, qos: 1 }));
  }
  await Promise.all(inFlight);
  const deadline = Date.now() + 5_000;
  while (got.length < sent.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.same([...got].sort(), [...sent].sort(), `all ${sent.length} messages delivered exactly once`);
  // Within one topic the order is kept (the coordinator relies on it for retained summaries).
  const summaries = got.filter((m) => m.startsWith('{"summary"'));
  t.same(
    summaries,
    sent.filter((m) => m.startsWith('{"summary"')),
    'summaries in publish order',
  );
});

t.test('a 10,000-device wave handed over at once through OrderedPublisher: all delivered', async (t) => {
  const { broker, port } = await startBroker(t);
  const client = await connect(t, port, 'admin', 'admin@fleet');
  let received = 0;
  client.on('message', () => received++);
  await client.subscribeAsync(topics.allDevices('desired'), { qos: 1 });
  // In one window of 10,000 through the coordinator's broker (mqemitter without a queue: a live
  // 10,000-device rollout once overflowed the stack in its queue; that needs the whole fleet and
  // is covered by `npm run bench:fleet`, not here): every message still arrives.
  const publisher = new OrderedPublisher((m, done) => {
    broker.publish(m.topic, m.payload, { retain: m.retain, qos: 1 }).then(() => done(), done);
  }, createLogger('silent'));
  const wave = Array.from({ length: 10_000 }, (_, i) => ({
    topic: topics.desired(`dev-${i}`),
    payload: Buffer.from(JSON.stringify({ seq: i })),
    retain: true,
  }));
  await publisher.publish(wave);
  const deadline = Date.now() + 30_000;
  while (received < wave.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.equal(received, wave.length, 'every desired state delivered');
});

t.test("a device's report is decoded once: the broker hands its check's result to the coordinator", async (t) => {
  const deviceAuth: Authenticate = (username, password) =>
    password === 'tok' ? { kind: 'device', deviceId: username } : null;
  const { broker, port } = await startBroker(t, deviceAuth);
  const seen: unknown[] = [];
  broker.aedes.on('publish', (packet, client) => {
    if (client) seen.push(broker.decoded(packet.payload));
  });
  const device = await connect(t, port, 'dev-1', 'dev-1');
  const report = { deviceId: 'dev-1', seq: 3, ts: new Date().toISOString(), models: {} };
  const status = { online: true, ts: new Date().toISOString(), agentVersion: '1.0.0' };
  await device.publishAsync(topics.reported('dev-1'), JSON.stringify(report), { qos: 1 });
  await device.publishAsync(topics.status('dev-1'), JSON.stringify(status), { qos: 1, retain: true });
  t.match(seen, [
    { kind: 'reported', deviceId: 'dev-1', value: { seq: 3, models: {} } },
    { kind: 'status', deviceId: 'dev-1', value: { online: true, agentVersion: '1.0.0' } },
  ]);
  t.equal(broker.decoded(Buffer.from(JSON.stringify(report))), undefined, 'nothing for a payload it never checked');
});

t.test(
  'retained messages: exact filters from the topic index, wildcards from the matcher, deletes in both',
  async (t) => {
    const { broker, port } = await startBroker(t);
    for (const id of ['d1', 'd2', 'd3']) {
      await broker.publish(topics.desired(id), Buffer.from(`desired of ${id}`), { retain: true, qos: 1 });
    }
    await broker.publish(topics.desired('d1'), Buffer.from('desired of d1, newer'), { retain: true, qos: 1 });
    // An empty retained payload deletes the topic's retained message (MQTT-3.3.1-10).
    await broker.publish(topics.desired('d2'), Buffer.alloc(0), { retain: true, qos: 1 });

    // The end of a SUBSCRIBE's retained messages, without waiting a while for ones that should
    // not come: Aedes sends them filter by filter in the SUBSCRIBE's order, one after the other
    // on the connection, so once the retained message of a last, extra filter (a topic no other
    // filter matches) arrived, every one before it did.
    const end = topics.status('end-marker');
    await broker.publish(end, Buffer.from('end'), { retain: true, qos: 1 });
    const retainedFor = async (clientId: string, filters: string[]): Promise<string[]> => {
      const client = await connect(t, port, 'admin', clientId);
      const got: string[] = [];
      let ended: () => void = () => {};
      const done = new Promise<void>((r) => {
        ended = r;
      });
      client.on('message', (topic, payload, packet) => {
        if (topic === end) ended();
        else if (packet.retain) got.push(`${topic.split('/').at(-2)}=${payload.toString()}`);
      });
      await client.subscribeAsync([...filters, end], { qos: 1 });
      await done;
      return got.sort();
    };
    t.same(await retainedFor('admin@exact', [topics.desired('d1')]), ['d1=desired of d1, newer'], 'exact: the latest');
    t.same(await retainedFor('admin@gone', [topics.desired('d2')]), [], 'exact: deleted');
    t.same(
      await retainedFor('admin@two', [topics.desired('d1'), topics.desired('d3'), topics.desired('nobody')]),
      ['d1=desired of d1, newer', 'd3=desired of d3'],
      'several exact filters in one SUBSCRIBE',
    );
    t.same(
      await retainedFor('admin@wild', [topics.allDevices('desired')]),
      ['d1=desired of d1, newer', 'd3=desired of d3'],
      'wildcard: the same messages',
    );
  },
);

t.test('during a wave (gate held) devices are taken a few per turn: every report acknowledged, in order', async (t) => {
  const deviceAuth: Authenticate = (username, password) => {
    if (password !== 'tok') return null;
    return username === 'admin'
      ? { kind: 'operator', name: 'admin', role: 'admin' }
      : { kind: 'device', deviceId: username };
  };
  let held = true;
  const { broker, port } = await startBroker(t, deviceAuth, {
    holdDeviceIngest: () => held,
    devicePublishesPerTurn: 2,
  });
  // Turns of the event loop, counted by a ticker on the check phase; each device publish is
  // stamped with the turn the broker handed it over in.
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  t.teardown(() => {
    ticking = false;
  });
  const turnsOf: number[] = [];
  broker.aedes.on('publish', (_packet, client) => {
    if (client) turnsOf.push(turn);
  });
  const perTurn = () => {
    const counts = new Map<number, number>();
    for (const n of turnsOf) counts.set(n, (counts.get(n) ?? 0) + 1);
    return [...counts.values()];
  };
  /** The 'publish' event may come after the PUBACK: wait until all 12 were handed over. */
  const allHandedOver = async () => {
    const until = Date.now() + 5_000;
    while (turnsOf.length < 12 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    t.equal(turnsOf.length, 12, 'all 12 handed over to the coordinator');
  };
  const devices = await Promise.all(['g-1', 'g-2', 'g-3'].map((id) => connect(t, port, id, id)));
  const watcher = await connect(t, port, 'admin', 'admin@watch-gate');
  const got = new Map<string, number[]>();
  watcher.on('message', (topic, payload) => {
    const id = topic.split('/').at(-2) as string;
    got.set(id, [...(got.get(id) ?? []), (JSON.parse(payload.toString()) as { seq: number }).seq]);
  });
  await watcher.subscribeAsync(topics.allDevices('reported'), { qos: 1 });
  const report = (i: number, seq: number) =>
    JSON.stringify({ deviceId: `g-${i + 1}`, seq, ts: new Date().toISOString(), models: {} });
  turnsOf.length = 0;
  await Promise.all(
    devices.flatMap((d, i) =>
      [1, 2, 3, 4].map((seq) => d.publishAsync(topics.reported(`g-${i + 1}`), report(i, seq), { qos: 1 })),
    ),
  );
  t.pass('all 12 reports PUBACKed while the gate was held');
  await allHandedOver();
  // 2 per turn; a turn's poll phase and the check phase after it may share a ticker count: <= 4.
  t.ok(Math.max(...perTurn()) <= 4, `a few per turn: ${JSON.stringify(perTurn())}`);
  t.ok(perTurn().length >= 3, `spread over ${perTurn().length} turns`);
  const deadline = Date.now() + 5_000;
  while ([...got.values()].flat().length < 12 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.same(
    Object.fromEntries(got),
    { 'g-1': [1, 2, 3, 4], 'g-2': [1, 2, 3, 4], 'g-3': [1, 2, 3, 4] },
    'per device, in order',
  );

  // An open gate (no wave going out) takes them as they come.
  held = false;
  turnsOf.length = 0;
  await Promise.all(
    devices.flatMap((d, i) =>
      [5, 6, 7, 8].map((seq) => d.publishAsync(topics.reported(`g-${i + 1}`), report(i, seq), { qos: 1 })),
    ),
  );
  await allHandedOver();
  t.ok(perTurn().length <= 2, `open: in one or two turns (${JSON.stringify(perTurn())})`);
});
