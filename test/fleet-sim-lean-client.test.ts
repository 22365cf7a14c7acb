import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import t from 'tap';
import {
  ConnackRefused,
  type LeanClientOptions,
  LeanMqttClient,
  tcpEndpoint,
} from '../scripts/fleet-sim/lean-mqtt-client.js';
import { TestBroker } from './helpers/broker.js';

/**
 * The fleet simulator's own MQTT client (scripts/fleet-sim/lean-mqtt-client.ts) against a real
 * Aedes broker, and against a scripted TCP peer for what no real broker does on demand (leave a
 * PINGREQ or a CONNECT unanswered, send bytes that are not MQTT).
 */

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
          socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
        }
        if (p.cmd === 'pingreq' && peer.answerPing) socket.write(mqttPacket.generate({ cmd: 'pingresp' }));
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
  await t.rejects(a.c.publish('x', 'y', 1, false), { message: 'not connected' }, 'QoS 1 before the connection is up');
  await t.rejects(a.c.publish('x', 'y', 0, false), { message: 'not connected' }, 'QoS 0 too');
  a.c.open();
  b.c.open();
  a.c.open(); // already open: nothing more
  await until(() => a.seen.connects === 1 && b.seen.connects === 1);
  t.equal(broker.connects.filter((id) => id === 'dev-a').length, 1, 'one connection for two open() calls');
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
  await held.c.end();

  const d = client(broker.url, 'dev-d');
  t.teardown(() => d.c.end());
  d.c.open();
  await until(() => d.seen.connects === 1);
  broker.refuseSubscriptions = true;
  await t.rejects(d.c.subscribe('anything', 1), { message: 'subscription refused by the broker (SUBACK 0x80)' });
  broker.refuseSubscriptions = false;

  broker.unacknowledged.add('dev-d');
  const lost = d.c.publish('reports/dev-d', 'snapshot', 1, true);
  await until(() => broker.swallowed.length === 1);
  broker.dropClient('dev-d');
  await t.rejects(lost, { message: 'connection closed before the broker acknowledged' });
  broker.unacknowledged.delete('dev-d');
  await until(() => d.seen.connects === 2);
  await d.c.publish('reports/dev-d', 'snapshot', 1, true); // the caller sends it again
  t.equal(d.seen.closes, 1);
});

t.test('keepalive: PINGREQ when idle; closed and reconnected when the PINGRESP never comes', async (t) => {
  const peer = await ScriptedPeer.start();
  t.teardown(() => peer.stop());
  const k = client(peer.url, 'dev-k', { keepaliveS: 1 });
  t.teardown(() => k.c.end());
  k.c.open();
  await until(() => k.seen.connects === 1);
  await until(() => peer.count('pingreq') >= 2);
  t.equal(k.seen.closes, 0, 'answered pings keep the connection');
  t.same(k.seen.errors, []);

  peer.answerPing = false;
  await until(() => k.seen.closes === 1);
  t.match(k.seen.errors.at(-1)?.message, /no PINGRESP within 0\.5 s/);
  await until(() => k.seen.connects === 2);
  t.equal(peer.count('connect'), 2, 'a new connection after the loss');
  const connect = peer.packets.find((p) => p.cmd === 'connect');
  t.match(connect, { clientId: 'dev-k', username: 'dev-k', clean: false, keepalive: 1, protocolVersion: 4 });
  t.equal((connect as { password?: Buffer }).password?.toString(), 'secret');

  const quiet = client(peer.url, 'dev-quiet', { keepaliveS: 0 });
  t.teardown(() => quiet.c.end());
  quiet.c.open();
  await until(() => quiet.seen.connects === 1);
  t.match(
    peer.packets.at(-1),
    { cmd: 'connect', clientId: 'dev-quiet', keepalive: 0 },
    'keepalive 0: the mechanism is off',
  );
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
