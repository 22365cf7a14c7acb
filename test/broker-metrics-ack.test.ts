import mqtt from 'mqtt';
import t from 'tap';
import { createBroker } from '../coordinator/broker/create-broker.js';
import type { Authenticate } from '../coordinator/broker/principal.js';
import { createLogger } from '../shared/logger.js';
import type { Metrics } from '../shared/messages.js';
import { createTopics } from '../shared/topics.js';

// The broker acknowledges a device's metrics summary only once `acceptMetrics` (the store's
// commit) resolved: the PUBACK comes after the commit, so a summary the agent deletes from its
// outbox is stored. A rejection refuses the publish, which closes the connection (MQTT 3.1.1
// has no negative PUBACK), and the agent keeps the summary. Real Aedes, real mqtt.js.

const topics = createTopics();
const authenticate: Authenticate = (username, password) =>
  password === 'tok' && username ? { kind: 'device', deviceId: username } : null;

const summary = (n: number) =>
  JSON.stringify({
    ts: '2026-12-06T10:01:00.000Z',
    windowStart: '2026-12-06T10:00:00.000Z',
    windowSeconds: 60,
    series: [
      {
        model: 'det',
        version: '1.0.0',
        source: 'app',
        count: n,
        errors: 0,
        latencyMs: { level: 0, count: n, sum: 5 * n, min: 5, max: 5, zeros: 0, positive: { offset: 81, counts: [n] } },
      },
    ],
  });

t.test('PUBACK after the commit; a refusal closes the connection and stores nothing', async (t) => {
  const calls: { deviceId: string; metrics: Metrics; resolve: () => void; reject: (e: Error) => void }[] = [];
  const broker = await createBroker({
    topics,
    authenticate,
    logger: createLogger('silent'),
    acceptMetrics: (deviceId, metrics) =>
      new Promise<void>((resolve, reject) => calls.push({ deviceId, metrics, resolve, reject })),
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId: 'cam-1',
    username: 'cam-1',
    password: 'tok',
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  t.teardown(() => client.endAsync(true));

  let acked = false;
  const first = client.publishAsync(topics.metrics('cam-1'), summary(3), { qos: 1 }).then(() => {
    acked = true;
  });
  for (let i = 0; i < 200 && calls.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(calls.length, 1, 'the summary reached acceptMetrics, parsed');
  t.equal(calls[0]?.deviceId, 'cam-1');
  t.equal(calls[0]?.metrics.series[0]?.count, 3);
  // The broker holds the PUBACK: a PINGREQ round trip proves the connection is served meanwhile.
  await new Promise<void>((resolve) => {
    client.once('packetreceive', (p) => p.cmd === 'pingresp' && resolve());
    (client as unknown as { _sendPacket(p: object): void })._sendPacket({ cmd: 'pingreq' });
  });
  t.equal(acked, false, 'no PUBACK before the commit');
  calls[0]?.resolve();
  await first;
  t.equal(acked, true, 'the PUBACK once committed');

  // A refusal: the connection is closed, the publish never acknowledged.
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const second = client.publishAsync(topics.metrics('cam-1'), summary(4), { qos: 1 });
  second.catch(() => {});
  for (let i = 0; i < 200 && calls.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  calls[1]?.reject(new Error('database or disk is full'));
  await closed;
  t.pass('the connection was closed: the device keeps the summary and sends it again later');
});
