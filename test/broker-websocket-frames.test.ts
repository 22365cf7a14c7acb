import http from 'node:http';
import mqttPacket from 'mqtt-packet';
import t, { type Test } from 'tap';
import WebSocket, { createWebSocketStream, WebSocketServer } from 'ws';
import { attachWebSocket, type BrokerLogger, createBroker } from '../coordinator/broker/create-broker.js';
import type { Authenticate } from '../coordinator/broker/principal.js';
import { coalesceWebSocketWrites } from '../coordinator/broker/websocket-frames.js';
import { createTopics } from '../shared/topics.js';

/**
 * The broker's writes to a WebSocket client (a dashboard) go out coalesced: one frame per packet
 * at least (mqtt-packet writes a packet in pieces), and one frame for everything written while
 * the previous frame was on its way (coordinator/broker/websocket-frames.ts). MQTT 3.1.1 section
 * 6.0 allows it: packets need not be aligned on frame boundaries. Read here with a raw WebSocket
 * and mqtt-packet's streaming parser, as mqtt.js in the page reads them.
 */

const quiet: BrokerLogger = { info() {}, debug() {}, warn() {}, error() {} };
const topics = createTopics();

/** A broker served over WebSocket at /mqtt on a loopback port, both closed at the end of `t`. */
async function brokerOverWebSocket(t: Test, authenticate: Authenticate) {
  const broker = await createBroker({ topics, authenticate, logger: quiet, refusalDelayMs: () => 0 });
  t.teardown(() => broker.close());
  const server = http.createServer();
  attachWebSocket(server, broker, '/mqtt');
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as { port: number };
  return { broker, url: `ws://127.0.0.1:${port}/mqtt` };
}

t.test('deliveries to a WebSocket client: every packet, in order, in far fewer frames than packets', async (t) => {
  const { broker, url } = await brokerOverWebSocket(t, (u, p) =>
    u === 'alice' && p === 'tok' ? { kind: 'operator', name: 'alice', role: 'viewer' } : null,
  );
  const ws = new WebSocket(url, 'mqtt');
  t.teardown(() => ws.terminate());
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  let frames = 0;
  const waiters: (() => void)[] = [];
  parser.on('packet', (p) => {
    packets.push(p);
    for (const w of waiters.splice(0)) w();
  });
  ws.on('message', (data: Buffer) => {
    frames++;
    parser.parse(data);
  });
  const until = async (what: string, ok: () => boolean) => {
    const deadline = Date.now() + 20_000;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const send = (packet: mqttPacket.Packet) => ws.send(mqttPacket.generate(packet));
  send({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId: 'alice@frames',
    keepalive: 60,
    username: 'alice',
    password: Buffer.from('tok'),
  });
  await until('CONNACK', () => packets.some((p) => p.cmd === 'connack'));
  send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: topics.audit(), qos: 0 }] });
  await until('SUBACK', () => packets.some((p) => p.cmd === 'suback'));

  // A lone delivery, the connection idle: one frame holding the whole packet (not its pieces).
  let before = frames;
  await broker.publish(topics.audit(), Buffer.from('{"seq":0}'), { retain: false, qos: 0 });
  await until('the lone message', () => packets.some((p) => p.cmd === 'publish'));
  t.equal(frames - before, 1, 'one packet, one frame');

  // A burst, as a wave's audit events: all of it, in order, in a fraction of the frames.
  const n = 2_000;
  before = frames;
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      broker.publish(topics.audit(), Buffer.from(JSON.stringify({ seq: i + 1 })), { retain: false, qos: 0 }),
    ),
  );
  await until(`${n} more messages`, () => packets.filter((p) => p.cmd === 'publish').length === n + 1);
  const seqs = packets
    .filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish')
    .map((p) => (JSON.parse(p.payload.toString()) as { seq: number }).seq);
  t.same(
    seqs,
    Array.from({ length: n + 1 }, (_, i) => i),
    'every message once, in the order published',
  );
  const used = frames - before;
  t.ok(used < n / 2, `${n} packets in ${used} frames`);
  t.ok(used >= 1);

  // Big messages: a frame goes out once 1 MiB waits, so one stays bounded (the page's buffer too).
  const big = 40;
  before = frames;
  const pad = 'x'.repeat(64 * 1024);
  await Promise.all(
    Array.from({ length: big }, (_, i) =>
      broker.publish(topics.audit(), Buffer.from(JSON.stringify({ seq: n + 1 + i, pad })), { retain: false, qos: 0 }),
    ),
  );
  await until(`${big} big messages`, () => packets.filter((p) => p.cmd === 'publish').length === n + 1 + big);
  const bigFrames = frames - before;
  t.ok(
    bigFrames >= 2 && bigFrames < big,
    `${big} messages of 64 KiB in ${bigFrames} frames (2.5 MiB, at most 1 MiB waits)`,
  );
  t.equal(
    (JSON.parse((packets.at(-1) as mqttPacket.IPublishPacket).payload.toString()) as { seq: number }).seq,
    n + big,
    'the last one last',
  );
});

t.test('a refused connection still gets its CONNACK before the close (written, then destroyed at once)', async (t) => {
  const { url } = await brokerOverWebSocket(t, () => null);
  const ws = new WebSocket(url, 'mqtt');
  t.teardown(() => ws.terminate());
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  ws.on('message', (data: Buffer) => parser.parse(data));
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: 'mallory',
      keepalive: 60,
      username: 'mallory',
      password: Buffer.from('wrong'),
    }),
  );
  await closed;
  t.match(
    packets,
    [{ cmd: 'connack', returnCode: 4 }],
    'bad user name or password (MQTT 3.1.1 section 3.2.2.3), then the close',
  );
});

t.test('what is written before the stream ends goes out, in one frame, before the close', async (t) => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  wss.on('connection', (ws) => {
    const stream = createWebSocketStream(ws);
    coalesceWebSocketWrites(stream, ws);
    stream.on('error', () => ws.terminate());
    stream.write(Buffer.from('first '));
    stream.write(Buffer.from('and last'));
    stream.end();
  });
  const { port } = wss.address() as { port: number };
  const client = new WebSocket(`ws://127.0.0.1:${port}`);
  t.teardown(() => client.terminate());
  const frames: string[] = [];
  client.on('message', (data: Buffer) => frames.push(data.toString()));
  const code = await new Promise<number>((resolve) => client.once('close', (c) => resolve(c)));
  t.same(frames, ['first and last'], 'both writes, one frame');
  t.not(code, 1006, 'then a closing handshake, not a dropped connection');
});
