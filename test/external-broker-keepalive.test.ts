import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import t from 'tap';
import { connectExternalBroker } from '../coordinator/external-broker/external-broker.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { coordinatorClientOptions } from './helpers/external-broker-options.js';

// A broker that streams devices' reports to the coordinator and never answers PINGREQ stands in
// for one whose PINGRESP waits behind a thousand publishes in flight (max_inflight_messages): the
// connection is alive, since publishes arrive and are acknowledged, and must not be ended for a
// keepalive timeout (mqtt.js counts only acknowledgements and PINGRESP as signs of life). A
// broker that sends nothing at all is still timed out.

const topics = createTopics();

interface Peer {
  server: net.Server;
  port: number;
  pubacks: number;
  pingreqs: number;
  /** The coordinator's connection, once subscribed. */
  subscribed: Promise<net.Socket>;
  closedByClient: boolean;
}

async function peer(): Promise<Peer> {
  let onSubscribed: (s: net.Socket) => void = () => {};
  const p: Peer = {
    server: net.createServer(),
    port: 0,
    pubacks: 0,
    pingreqs: 0,
    subscribed: new Promise((r) => {
      onSubscribed = r;
    }),
    closedByClient: false,
  };
  p.server.on('connection', (socket) => {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (packet: Packet) => {
      if (packet.cmd === 'connect')
        socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
      if (packet.cmd === 'subscribe') {
        socket.write(
          mqttPacket.generate({
            cmd: 'suback',
            messageId: packet.messageId,
            granted: packet.subscriptions.map((s) => s.qos),
          }),
        );
        onSubscribed(socket);
      }
      if (packet.cmd === 'puback') p.pubacks++;
      if (packet.cmd === 'pingreq') p.pingreqs++; // never answered
    });
    socket.on('data', (b) => parser.parse(b));
    socket.on('end', () => {
      p.closedByClient = true;
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', r));
  p.port = (p.server.address() as net.AddressInfo).port;
  return p;
}

async function coordinatorOn(p: Peer) {
  let reports = 0;
  const closes: string[] = [];
  const ext = await connectExternalBroker(
    coordinatorClientOptions(
      topics,
      { url: `mqtt://127.0.0.1:${p.port}`, password: 'x' },
      {
        report: () => {
          reports++;
        },
      },
      { keepaliveSeconds: 1, onClient: (client) => client.on('close', () => closes.push('close')) },
    ),
  );
  return { ext, reports: () => reports, closes };
}

const report = (seq: number) =>
  mqttPacket.generate({
    cmd: 'publish',
    topic: topics.reported('cam-01'),
    payload: encodePayload({ deviceId: 'cam-01', seq, ts: new Date().toISOString(), models: {} }),
    qos: 1,
    messageId: (seq % 65_000) + 1,
    retain: false,
    dup: false,
  });

t.test('publishes keep arriving: the connection outlives several keepalives without a PINGRESP', async (t) => {
  const p = await peer();
  t.teardown(() => p.server.close());
  const c = await coordinatorOn(p);
  t.teardown(() => c.ext.close());
  const socket = await p.subscribed;
  // 4 s of reports, one every 50 ms: mqtt.js would end the connection 1.5 s after its last
  // sign of life (keepalive 1 s), and a PINGREQ goes unanswered.
  const sent = 80;
  for (let seq = 1; seq <= sent; seq++) {
    socket.write(report(seq));
    await new Promise((r) => setTimeout(r, 50));
  }
  for (let i = 0; i < 200 && p.pubacks < sent; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(c.reports(), sent, 'every report handled');
  t.equal(p.pubacks, sent, 'every report acknowledged on the same connection');
  t.strictSame(c.closes, [], 'the coordinator never ended the connection');
  t.notOk(p.closedByClient);
});

t.test('a broker that sends nothing is still timed out', async (t) => {
  const p = await peer();
  t.teardown(() => p.server.close());
  const c = await coordinatorOn(p);
  t.teardown(() => c.ext.close());
  await p.subscribed;
  for (let i = 0; i < 500 && c.closes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(p.pingreqs >= 1, 'a PINGREQ was sent');
  t.strictSame(c.closes.slice(0, 1), ['close'], 'the connection was ended for its keepalive');
});
