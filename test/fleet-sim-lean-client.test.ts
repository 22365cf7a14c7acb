import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import t from 'tap';
import { SimDevice } from '../scripts/fleet-sim/device.js';
import { type SimOptions, zeroCounters } from '../scripts/fleet-sim/ipc.js';
import {
  ConnackRefused,
  ConnectionLost,
  type KeepaliveTicks,
  type LeanClientOptions,
  LeanMqttClient,
  tcpEndpoint,
} from '../scripts/fleet-sim/lean-mqtt-client.js';
import { createTopics } from '../shared/topics.js';
import { TestBroker } from './helpers/broker.js';

/**
 * The fleet simulator's own MQTT client (scripts/fleet-sim/lean-mqtt-client.ts) against a real
 * Aedes broker, and against a scripted TCP peer for what no real broker does on demand (leave a
 * PINGREQ or a CONNECT unanswered, refuse a CONNECT with a given code, drop a connection at a
 * PUBLISH, send bytes that are not MQTT). Keepalive ticks are stepped by the test (KeepaliveTicks).
 */

/** Keepalive ticks the test fires itself; `scheduled` is every interval asked for. */
function manualTicks(): { ticks: KeepaliveTicks; fire(): void; scheduled: number[]; live(): number } {
  const live = new Set<() => void>();
  const scheduled: number[] = [];
  return {
    ticks: (everyMs, tick) => {
      scheduled.push(everyMs);
      live.add(tick);
      return { cancel: () => live.delete(tick) };
    },
    fire: () => {
      for (const tick of [...live]) tick();
    },
    scheduled,
    live: () => live.size,
  };
}

interface Seen {
  connects: number;
  closes: number;
  errors: Error[];
  messages: { topic: string; payload: string }[];
}

function client(
  url: string,
  clientId: string,
  extra: Partial<LeanClientOptions> = {},
): { c: LeanMqttClient; seen: Seen } {
  const seen: Seen = { connects: 0, closes: 0, errors: [], messages: [] };
  const c = new LeanMqttClient(
    {
      ...tcpEndpoint(url),
      clientId,
      username: clientId,
      password: 'secret',
      clean: false,
      keepaliveS: 30,
      connectTimeoutMs: 5_000,
      reconnectMs: 20,
      will: { topic: `will/${clientId}`, payload: Buffer.from('gone'), qos: 1, retain: false },
      ...extra,
    },
    {
      connect: () => seen.connects++,
      close: () => seen.closes++,
      error: (err) => seen.errors.push(err),
      message: (topic, payload) => seen.messages.push({ topic, payload: payload.toString('utf8') }),
    },
  );
  return { c, seen };
}

/** Resolves once `check` holds, polling every 10 ms (the test's own timeout bounds it). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 10));
}

/** A TCP peer that speaks MQTT packets the way a test tells it to, on a free loopback port. */
class ScriptedPeer {
  readonly packets: Packet[] = [];
  readonly sockets: net.Socket[] = [];
  answerConnect = true;
  answerPing = true;
  /** The CONNACK return code sent (0 accepts). */
  connackCode = 0;
  /** Close the connection at this many next QoS 1 PUBLISHes instead of acknowledging them. */
  dropAtPublish = 0;
  /** The same for SUBSCRIBEs. */
  dropAtSubscribe = 0;
  private constructor(private readonly server: net.Server) {}

  static async start(): Promise<ScriptedPeer> {
    const server = net.createServer();
    const peer = new ScriptedPeer(server);
    server.on('connection', (socket) => {
      peer.sockets.push(socket);
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      parser.on('packet', (p: Packet) => {
        peer.packets.push(p);
        if (p.cmd === 'connect' && peer.answerConnect) {
          socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: peer.connackCode, sessionPresent: false }));
        }
        if (p.cmd === 'pingreq' && peer.answerPing) socket.write(mqttPacket.generate({ cmd: 'pingresp' }));
        if (p.cmd === 'subscribe') {
          if (peer.dropAtSubscribe > 0) {
            peer.dropAtSubscribe--;
            socket.destroy();
          } else socket.write(mqttPacket.generate({ cmd: 'suback', messageId: p.messageId, granted: [1] }));
        }
        if (p.cmd === 'publish' && p.qos === 1) {
          if (peer.dropAtPublish > 0) {
            peer.dropAtPublish--;
            socket.destroy();
          } else socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId }));
        }
      });
      socket.on('data', (b) => parser.parse(b));
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    return peer;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  count(cmd: Packet['cmd']): number {
    return this.packets.filter((p) => p.cmd === cmd).length;
  }

  publishes(topic: string): Packet[] {
    return this.packets.filter((p) => p.cmd === 'publish' && p.topic === topic);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

t.test('tcpEndpoint: mqtt:// URLs only, with the fix named otherwise', async (t) => {
  t.same(tcpEndpoint('mqtt://127.0.0.1:18830'), { host: '127.0.0.1', port: 18830 });
  t.same(tcpEndpoint('mqtt://localhost'), { host: 'localhost', port: 1883 }, 'the MQTT port by default');
  t.same(tcpEndpoint('mqtt://[::1]:1884'), { host: '::1', port: 1884 });
  t.throws(() => tcpEndpoint('ws://127.0.0.1:9001'), {
    message:
      /ws:\/\/127\.0\.0\.1:9001: the simulated devices speak MQTT over plain TCP only; give the broker as mqtt:\/\/host:port/,
  });
  t.throws(() => tcpEndpoint('127.0.0.1:1883'), {
    message: /"127\.0\.0\.1:1883" is not a URL; give the broker as mqtt:\/\/host:port/,
  });
});

t.test('against a real broker: subscribe, QoS 0 and 1 publishes, messages in, the will on end()', async (t) => {
  const broker = await TestBroker.start();
  t.teardown(() => broker.stop());
  const a = client(broker.url, 'dev-a');
  const b = client(broker.url, 'dev-b');
  t.teardown(() => Promise.all([a.c.end(), b.c.end()]));
  await t.rejects(a.c.publish('x', 'y', 0, false), { message: 'not connected' }, 'QoS 0 before the connection is up');
  await t.rejects(a.c.subscribe('x', 1), { message: 'not connected' }, 'SUBSCRIBE too');
  const early = a.c.publish('early', 'y', 1, false); // QoS 1 waits for the connection
  a.c.open();
  b.c.open();
  a.c.open(); // already open: nothing more
  await until(() => a.seen.connects === 1 && b.seen.connects === 1);
  t.equal(broker.connects.filter((id) => id === 'dev-a').length, 1, 'one connection for two open() calls');
  await early;
  await b.c.subscribe('to/b', 1);
  await b.c.subscribe('will/dev-a', 1);
  await a.c.publish('to/b', 'one', 1, false);
  await a.c.publish('to/b', Buffer.from('two'), 0, false);
  await a.c.publish('to/b', 'three', 1, true);
  await until(() => b.seen.messages.length === 3);
  t.same(
    b.seen.messages.map((m) => m.payload),
    ['one', 'two', 'three'],
    'in order, QoS 0 and 1',
  );
  // A QoS 1 message the client did not acknowledge would come again with the session; b's
  // session is resumed after a drop, and nothing is redelivered. Aedes takes one client's
  // packets in order, so a SUBACK means the PUBACKs sent before it were taken.
  await b.c.subscribe('sync/1', 1);
  t.ok(broker.dropClient('dev-b'));
  await until(() => b.seen.connects === 2);
  t.equal(b.seen.closes, 1);
  await b.c.subscribe('sync/2', 1); // a round trip after the reconnect: anything redelivered has arrived
  t.same(
    b.seen.messages.map((m) => m.payload),
    ['one', 'two', 'three'],
    'every QoS 1 message was acknowledged (none redelivered)',
  );
  await a.c.end();
  await until(() => b.seen.messages.length === 4);
  t.same(
    b.seen.messages[3],
    { topic: 'will/dev-a', payload: 'gone' },
    'end() closes without DISCONNECT: the will fires',
  );
  t.equal(a.seen.closes, 1);
  await a.c.end(); // again: nothing to do
  t.equal(broker.connects.filter((id) => id === 'dev-a').length, 1, 'no reconnect after end()');
});

t.test('refusals: CONNACK not authorized, SUBACK 0x80, a publish lost in flight', async (t) => {
  const broker = await TestBroker.start();
  t.teardown(() => broker.stop());

  broker.held.add('dev-held');
  const held = client(broker.url, 'dev-held');
  held.c.open();
  await until(() => held.seen.errors.length > 0);
  const refused = held.seen.errors[0] as ConnackRefused;
  t.type(refused, ConnackRefused);
  t.equal(refused.code, 5);
  t.match(refused.message, /CONNACK return code 5 \(not authorized\)/);
  t.equal(held.seen.connects, 0);
  // Refused credentials do not get better by retrying: the client has ended itself.
  await t.rejects(held.c.publish('x', 'y', 1, false), { message: 'client ended' });

  const d = client(broker.url, 'dev-d');
  t.teardown(() => d.c.end());
  d.c.open();
  await until(() => d.seen.connects === 1);
  broker.refuseSubscriptions = true;
  await t.rejects(d.c.subscribe('anything', 1), { message: 'subscription refused by the broker (SUBACK 0x80)' });
  broker.refuseSubscriptions = false;

  // A QoS 1 publish the broker took and never acknowledged, then the connection drops: sent again
  // (DUP, same packet id) on the next connection, and its promise waits for that PUBACK.
  const watcher = client(broker.url, 'dev-watcher');
  t.teardown(() => watcher.c.end());
  watcher.c.open();
  await until(() => watcher.seen.connects === 1);
  await watcher.c.subscribe('reports/dev-d', 1);
  broker.unacknowledged.add('dev-d');
  let settled = false;
  const inFlight = d.c.publish('reports/dev-d', 'snapshot', 1, false).finally(() => {
    settled = true;
  });
  await until(() => broker.swallowed.length === 1);
  broker.dropClient('dev-d');
  await until(() => d.seen.closes === 1);
  const whileDown = d.c.publish('reports/dev-d', 'handed over while down', 1, false);
  t.notOk(settled, 'not settled by the drop');
  broker.unacknowledged.delete('dev-d');
  await until(() => d.seen.connects === 2);
  await inFlight;
  await whileDown;
  await until(() => watcher.seen.messages.length === 2);
  t.same(
    watcher.seen.messages.map((m) => m.payload),
    ['snapshot', 'handed over while down'],
    'both delivered once the broker acknowledged them',
  );

  // A subscription in flight at a drop is not sent again: it is rejected as lost.
  broker.unacknowledged.add('dev-d');
  await d.c.publish('sync/swallow', 'x', 0, false); // QoS 0 is written, not waited for
  const lostSub = d.c.subscribe('never', 1);
  broker.dropClient('dev-d');
  const lostErr = await lostSub.then(
    () => null,
    (err: unknown) => err,
  );
  t.type(lostErr, ConnectionLost);
  t.match(lostErr, { message: 'connection closed before the broker acknowledged' });
  broker.unacknowledged.delete('dev-d');
  await until(() => d.seen.connects === 3);

  // end() rejects what still waits for an acknowledgement.
  broker.unacknowledged.add('dev-d');
  const atEnd = d.c.publish('reports/dev-d', 'last', 1, false);
  await until(() => broker.swallowed.length === 3);
  await d.c.end();
  await t.rejects(atEnd, { name: 'ConnectionLost' });
});

t.test(
  'keepalive: PINGREQ when a tick saw nothing sent; closed and reconnected when the PINGRESP never comes',
  async (t) => {
    const peer = await ScriptedPeer.start();
    t.teardown(() => peer.stop());
    const clock = manualTicks();
    const k = client(peer.url, 'dev-k', { keepaliveS: 2, keepaliveTicks: clock.ticks });
    t.teardown(() => k.c.end());
    k.c.open();
    await until(() => k.seen.connects === 1);
    t.same(clock.scheduled, [1000], 'ticks every half keepalive');
    clock.fire(); // the CONNECT counts as sent in the first tick
    t.equal(peer.count('pingreq'), 0);
    clock.fire(); // a whole tick with nothing sent
    await until(() => peer.count('pingreq') === 1);
    await k.c.subscribe('x', 1); // PINGRESP is in (the peer answers in order)
    clock.fire(); // the PINGRESP came: no close; the SUBSCRIBE counts as sent
    clock.fire();
    await until(() => peer.count('pingreq') === 2);
    await k.c.subscribe('x', 1);
    t.equal(k.seen.closes, 0, 'answered pings keep the connection');
    t.same(k.seen.errors, []);

    peer.answerPing = false;
    clock.fire();
    clock.fire();
    await until(() => peer.count('pingreq') === 3);
    clock.fire(); // still no PINGRESP
    await until(() => k.seen.closes === 1);
    t.match(k.seen.errors.at(-1)?.message, /no PINGRESP within 1 s/);
    t.equal(clock.live(), 0, 'the closed connection ticks no more');
    await until(() => k.seen.connects === 2);
    t.equal(clock.live(), 1, 'the new connection ticks');
    const connects = peer.packets.filter((p) => p.cmd === 'connect' && p.clientId === 'dev-k');
    t.equal(connects.length, 2, 'a new connection after the loss');
    t.match(connects[0], { clientId: 'dev-k', username: 'dev-k', clean: false, keepalive: 2, protocolVersion: 4 });
    t.equal((connects[0] as { password?: Buffer }).password?.toString(), 'secret');

    const quietClock = manualTicks();
    const quiet = client(peer.url, 'dev-quiet', { keepaliveS: 0, keepaliveTicks: quietClock.ticks });
    t.teardown(() => quiet.c.end());
    quiet.c.open();
    await until(() => quiet.seen.connects === 1);
    t.match(
      peer.packets.find((p) => p.cmd === 'connect' && p.clientId === 'dev-quiet'),
      { keepalive: 0 },
    );
    t.same(quietClock.scheduled, [], 'keepalive 0: no ticks at all, so no PINGREQ and no close of its own');
  },
);

t.test('SimDevice.connect: refused, timed out, or a connection lost on the way', async (t) => {
  const peer = await ScriptedPeer.start();
  t.teardown(() => peer.stop());
  const options = (connectTimeoutMs: number): SimOptions => ({
    url: peer.url,
    keepaliveS: 30,
    connectConcurrency: 1,
    connectTimeoutMs,
    stepMs: 10,
    jitter: 0,
    fail: { probability: 0, devices: [], versions: [] },
  });
  const device = (id: string, connectTimeoutMs = 10_000) => {
    const counters = zeroCounters();
    const d = new SimDevice({ id, token: 'tok' }, options(connectTimeoutMs), counters, Date.now);
    t.teardown(() => d.stop());
    return { d, counters };
  };

  peer.connackCode = 5;
  const refused = device('sim-refused');
  await t.rejects(refused.d.connect(), {
    message: /^sim-refused: refused: .*CONNACK return code 5 \(not authorized\)/,
  });
  t.equal(peer.packets.filter((p) => p.cmd === 'connect' && p.clientId === 'sim-refused').length, 1);
  peer.connackCode = 0;

  peer.answerConnect = false;
  const slow = device('sim-slow', 200);
  await t.rejects(slow.d.connect(), { message: /^sim-slow: not connected within 200 ms/ });
  peer.answerConnect = true;

  // The connection drops at the online status: connect() still resolves, on the next connection,
  // with the status sent again (DUP) there.
  peer.dropAtPublish = 1;
  const lost = device('sim-lost');
  await lost.d.connect();
  const statusTopic = createTopics().status('sim-lost');
  await until(() => peer.publishes(statusTopic).length === 3); // the second online() may still be on its way
  const statuses = peer.publishes(statusTopic) as mqttPacket.IPublishPacket[];
  const first = statuses[0]?.messageId;
  t.same(
    statuses.slice(0, 2).map((p) => [p.messageId, p.dup]),
    [
      [first, false],
      [first, true],
    ],
    'the status again after the drop, with its packet id and DUP set',
  );
  t.match(statuses[2], { dup: false }, 'then the new connection says online again: a new message, not a re-delivery');
  t.not(statuses[2]?.messageId, first);
  t.equal(lost.counters.connected, 1);
  t.equal(lost.counters.reconnects, 1);
  t.equal(lost.counters.disconnects, 1);

  // The connection drops at the SUBSCRIBE (not sent again by the client): connect() resolves
  // on the next connection, which subscribes again.
  peer.dropAtSubscribe = 1;
  const lostSub = device('sim-lost-sub');
  await lostSub.d.connect();
  t.equal(peer.packets.filter((p) => p.cmd === 'subscribe').length >= 2, true);
  t.equal(lostSub.counters.reconnects, 1);
});

t.test('a broker that never answers CONNECT, or sends what is not MQTT: an error, a close, a retry', async (t) => {
  const peer = await ScriptedPeer.start();
  t.teardown(() => peer.stop());
  peer.answerConnect = false;
  const slow = client(peer.url, 'dev-slow', { connectTimeoutMs: 100 });
  slow.c.open();
  await until(() => peer.count('connect') >= 2);
  t.match(slow.seen.errors[0]?.message, /not connected within 100 ms/);
  t.equal(slow.seen.connects, 0);
  t.equal(slow.seen.closes, 0, 'close is for connections that were up');
  await slow.c.end();
  const attempts = peer.count('connect');
  peer.answerConnect = true;

  const garbled = client(peer.url, 'dev-garbled');
  t.teardown(() => garbled.c.end());
  garbled.c.open();
  await until(() => garbled.seen.connects === 1);
  peer.sockets.at(-1)?.write(Buffer.from([0x00, 0x00]));
  await until(() => garbled.seen.closes === 1);
  t.match(garbled.seen.errors[0]?.message, /malformed packet from the broker: /);
  await until(() => garbled.seen.connects === 2);
  t.equal(peer.count('connect'), attempts + 2, 'dev-slow stopped trying after end(); dev-garbled came back');
});
