import { execFileSync } from 'node:child_process';
import { promises as fs, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { IPublishPacket, Packet } from 'mqtt';
import t, { type Test } from 'tap';
import { DynsecClient } from '../coordinator/external-broker/dynsec-client.js';
import { DynsecIdentity } from '../coordinator/external-broker/dynsec-identity.js';
import {
  connectExternalBroker,
  type ExternalBroker,
  type ExternalBrokerRoutes,
} from '../coordinator/external-broker/external-broker.js';
import type { Reported } from '../shared/messages.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { coordinatorClientOptions } from './helpers/external-broker-options.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';
import { openSession } from './helpers/mqtt-session.js';

// Issue 16's ingest through Mosquitto: during a large fan-out the devices' reports wait (as the
// embedded broker's IngestGate makes them), each is acknowledged to the broker only once handled,
// none is lost or reordered (a connection lost while they wait included), and the PUBACKs of a
// turn go out together rather than one system call each.

const topics = createTopics();
const reported = (deviceId: string, seq: number) =>
  encodePayload({ deviceId, seq, ts: new Date().toISOString(), models: {} });

/** What happened on the coordinator's connection, in order: reports handled and PUBACKs sent. */
type Event = { handled: number } | { puback: number };

/** A certificate for 127.0.0.1 (its own CA), made with openssl, or null without openssl. */
function selfSigned(dir: string): { certFile: string; keyFile: string } | null {
  const certFile = path.join(dir, 'broker.pem');
  const keyFile = path.join(dir, 'broker.key');
  try {
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'],
        ...['-keyout', keyFile, '-out', certFile, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
      ],
      { stdio: 'ignore' },
    );
  } catch {
    return null;
  }
  return { certFile, keyFile };
}

/** A broker (with TLS: a certificate made with openssl), and the coordinator's connection to it. */
async function setUp(
  t: Test,
  perTurn: number,
  tls = false,
  more: { metrics?: ExternalBrokerRoutes['metrics']; maxUncommittedMetrics?: number } = {},
) {
  const dir = t.testdir();
  let certs: { certFile: string; keyFile: string } | null = null;
  if (tls) {
    mkdirSync(path.join(dir, 'certs'));
    certs = selfSigned(path.join(dir, 'certs'));
    if (!certs) return null;
  }
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'), certs ? { tls: certs } : {});
  const ca = certs ? await fs.readFile(certs.certFile) : undefined;
  const password = (await fs.readFile(broker.passwordFile, 'utf8')).trim();
  const events: Event[] = [];
  /** packet id -> the report's seq, from the publish as it arrived. */
  const seqOf = new Map<number, number>();
  /** Metrics summaries at the coordinator's client: packet ids, read from the socket, handled by mqtt.js, PUBACKs sent. */
  const metricsIds = new Set<number>();
  const metrics = { read: 0, received: 0, acked: 0 };
  let hold = true;
  const ext: ExternalBroker = await connectExternalBroker({
    ...coordinatorClientOptions(
      topics,
      { url: broker.url, password },
      {
        report: (_id: string, r: Reported) => events.push({ handled: r.seq }),
        ...(more.metrics ? { metrics: more.metrics } : {}),
      },
    ),
    ca,
    holdDeviceIngest: () => hold,
    devicePublishesPerTurn: perTurn,
    ...(more.maxUncommittedMetrics !== undefined ? { maxUncommittedMetrics: more.maxUncommittedMetrics } : {}),
    onClient: (client) => {
      // PUBLISH packets of summaries read from the socket, handled or not: mqtt.js handles them
      // one at a time, so 'packetreceive' would count only those handled.
      const needle = Buffer.from(topics.metrics('cam-01'));
      client.on('connect', () => {
        let tail = Buffer.alloc(0);
        client.stream.on('data', (chunk: Buffer) => {
          const data = Buffer.concat([tail, chunk]);
          for (let i = data.indexOf(needle); i >= 0; i = data.indexOf(needle, i + needle.length)) metrics.read++;
          tail = data.subarray(Math.max(0, data.length - needle.length + 1));
        });
      });
      client.on('packetreceive', (p: Packet) => {
        if (p.cmd !== 'publish') return;
        const pub = p as IPublishPacket;
        if (pub.messageId !== undefined && pub.topic === topics.reported('cam-01'))
          seqOf.set(pub.messageId, (JSON.parse(pub.payload.toString()) as { seq: number }).seq);
        if (pub.messageId !== undefined && pub.topic === topics.metrics('cam-01')) {
          metricsIds.add(pub.messageId);
          metrics.received++;
        }
      });
      client.on('packetsend', (p: Packet) => {
        if (p.cmd === 'puback' && p.messageId !== undefined && seqOf.has(p.messageId))
          events.push({ puback: seqOf.get(p.messageId) as number });
        if (p.cmd === 'puback' && p.messageId !== undefined && metricsIds.has(p.messageId)) metrics.acked++;
      });
    },
  });
  t.teardown(() => ext.close());
  const identity = new DynsecIdentity(new DynsecClient(ext.mqtt), topics);
  await identity.addDevice('cam-01', 'cam-token');
  const cam = await openSession(t, broker.url, 'cam-01', 'cam-token', 'cam-01', ca ? { ca } : {});
  return { ext, cam, events, metrics, received: () => seqOf.size, release: () => (hold = false) };
}

type Setup = NonNullable<Awaited<ReturnType<typeof setUp>>>;

/** Publishes seqs `from`..`to` in order at QoS 1; resolves once Mosquitto took them all. */
async function publish(cam: Setup['cam'], from: number, to: number) {
  const sent: Promise<unknown>[] = [];
  for (let seq = from; seq <= to; seq++)
    sent.push(cam.client.publishAsync(topics.reported('cam-01'), reported('cam-01', seq), { qos: 1 }));
  await Promise.all(sent);
}

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const handled = (events: Event[]) => events.flatMap((e) => ('handled' in e ? [e.handled] : []));
const acked = (events: Event[]) => events.flatMap((e) => ('puback' in e ? [e.puback] : []));

t.test(
  'held during a fan-out: nothing handled or acknowledged, then all in order, each PUBACK after its handling',
  {
    skip: mosquittoSkip(),
  },
  async (t) => {
    // perTurn 0: while the hold lasts, no report is handled at all.
    const { cam, events, received, release } = (await setUp(t, 0)) as Setup;
    await publish(cam, 1, 30);
    // Mosquitto has them all (the device had its PUBACKs); the first reached the coordinator and
    // waits in the gate, the rest wait behind it: none handled, none acknowledged.
    await until(() => received() > 0, 'the first report at the coordinator');
    t.same(handled(events), [], 'nothing handled while held');
    t.same(acked(events), [], 'nothing acknowledged while held');
    release();
    await until(() => handled(events).length === 30 && acked(events).length === 30, 'all 30 handled and acked');
    t.same(
      handled(events),
      Array.from({ length: 30 }, (_, i) => i + 1),
      'every report handled once, in the order sent',
    );
    for (let seq = 1; seq <= 30; seq++) {
      const h = events.findIndex((e) => 'handled' in e && e.handled === seq);
      const a = events.findIndex((e) => 'puback' in e && e.puback === seq);
      if (!(h >= 0 && a > h)) t.fail(`report ${seq} acknowledged before it was handled (${h}, ${a})`);
    }
    t.pass('each PUBACK after its report was handled');
  },
);

const summary = (n: number) =>
  encodePayload({
    ts: '2026-12-06T10:01:00.000Z',
    windowStart: new Date(Date.UTC(2026, 11, 6, 10, n)).toISOString(),
    windowSeconds: 60,
    series: [
      {
        model: 'det',
        version: '1.0.0',
        source: 'app',
        count: 1,
        errors: 0,
        latencyMs: { level: 0, count: 1, sum: 5, min: 5, max: 5, zeros: 0, positive: { offset: 81, counts: [1] } },
      },
    ],
  });

/** Turns of the event loop (no timer): what the connection had was handled by then. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

t.test(
  'metrics: at most maxUncommittedMetrics taken before they are committed; the one that fills it is acknowledged after its commit',
  { skip: mosquittoSkip() },
  async (t) => {
    const commits: (() => void)[] = [];
    const route = (_id: string, _m: unknown) => new Promise<void>((resolve) => commits.push(resolve));
    const commitAll = () => {
      for (const c of commits.splice(0)) c();
    };
    for (const bound of [3, 100]) {
      t.test(`bound ${bound}`, async (t) => {
        const { cam, metrics, release } = (await setUp(t, 200, false, {
          metrics: route,
          maxUncommittedMetrics: bound,
        })) as Setup;
        release();
        for (let n = 0; n < 7; n++) await cam.client.publishAsync(topics.metrics('cam-01'), summary(n), { qos: 1 });
        // Mosquitto sends up to 20 unacknowledged: all 7 reach the coordinator's socket.
        await until(() => metrics.read === 7, 'the 7 summaries read from the socket');
        await until(() => commits.length >= Math.min(bound, 7), 'the summaries taken');
        await turns(20);
        if (bound === 100) {
          // The control: without a bound reached, all are taken and acknowledged before any commit.
          t.equal(commits.length, 7, 'all 7 taken, none committed');
          t.equal(metrics.acked, 7, 'all 7 acknowledged');
          commitAll();
          return;
        }
        t.equal(commits.length, 3, 'only 3 taken while none is committed');
        t.equal(metrics.acked, 2, 'the third, which filled the bound, is not acknowledged yet');
        commitAll();
        await until(() => commits.length === 3 && metrics.acked === 5, 'the next 3 taken, 2 of them acknowledged');
        await turns(20);
        t.equal(commits.length, 3, 'the bound holds again');
        t.equal(metrics.acked, 5);
        commitAll();
        await until(() => metrics.acked === 7, 'the rest');
        commitAll();
        t.equal(metrics.read, 7, 'nothing sent twice');
        t.equal(metrics.received, 7, 'each handled once');
      });
    }
  },
);

t.test('bounded turns: at most perTurn handled per turn while held', { skip: mosquittoSkip() }, async (t) => {
  const { cam, events, release } = (await setUp(t, 2)) as Setup;
  // Counted per turn of the event loop by a timer-free probe: setImmediate marks each turn.
  const perTurn: number[] = [];
  let last = 0;
  let counting = true;
  const probe = () => {
    const now = handled(events).length;
    perTurn.push(now - last);
    last = now;
    if (counting) setImmediate(probe);
  };
  setImmediate(probe);
  await publish(cam, 1, 20);
  await until(() => handled(events).length === 20, 'all 20 handled while held, two per turn');
  counting = false;
  release();
  t.ok(
    Math.max(...perTurn) <= 2,
    `never more than two handled in one turn (${perTurn.filter((n) => n > 0).join(',')})`,
  );
  t.same(
    handled(events),
    Array.from({ length: 20 }, (_, i) => i + 1),
    'in order',
  );
});

t.test(
  'a connection lost while reports wait: each is handled once, in order, after the reconnect',
  {
    skip: mosquittoSkip(),
  },
  async (t) => {
    const { ext, cam, events, received, release } = (await setUp(t, 0)) as Setup;
    await publish(cam, 1, 10);
    await until(() => received() > 0, 'the first report at the coordinator');
    t.same(handled(events), [], 'held');
    // The coordinator's connection drops with the reports unacknowledged: Mosquitto keeps them in
    // its persistent session and sends them again on the next connection.
    const reconnected = new Promise<void>((resolve) => ext.mqtt.once('connect', () => resolve()));
    (ext.mqtt.stream as unknown as Writable).destroy();
    await reconnected;
    release();
    await publish(cam, 11, 12);
    await until(() => handled(events).length >= 12 && acked(events).length >= 12, 'all 12 handled');
    t.same(
      handled(events),
      Array.from({ length: 12 }, (_, i) => i + 1),
      'none lost, none twice, none reordered (the waiting one from the lost connection was not handled)',
    );
  },
);

/** Held first, so all 20 are in flight to the coordinator (max_inflight_messages allows more)
 * when the gate opens: handled in one turn, their PUBACKs written together. */
async function batched(t: Test, tls: boolean) {
  const setup = await setUp(t, 0, tls);
  if (!setup) {
    t.pass('skipped: no openssl to make a certificate');
    return;
  }
  const { ext, cam, events, received, release } = setup;
  await publish(cam, 1, 20);
  await until(() => received() > 0, 'the first report at the coordinator');
  const socket = ext.mqtt.stream as unknown as Writable & {
    _writev?: (chunks: unknown[], cb: () => void) => void;
    _write: (chunk: unknown, enc: unknown, cb: () => void) => void;
  };
  let writes = 0;
  const writev = socket._writev?.bind(socket);
  const write = socket._write.bind(socket);
  if (writev)
    socket._writev = (chunks, cb) => {
      writes++;
      writev(chunks, cb);
    };
  socket._write = (chunk, enc, cb) => {
    writes++;
    write(chunk, enc, cb);
  };
  release();
  await until(() => acked(events).length === 20, 'all 20 acknowledged');
  t.same(
    handled(events),
    Array.from({ length: 20 }, (_, i) => i + 1),
    'all handled, in order',
  );
  t.ok(writes <= 4, `20 PUBACKs in ${writes} writes (one each without batching)`);
}

t.test('open: the PUBACKs of one turn leave in one write, not one system call each', { skip: mosquittoSkip() }, (t) =>
  batched(t, false),
);

t.test('the same through TLS (mqtts)', { skip: mosquittoSkip() }, (t) => batched(t, true));
