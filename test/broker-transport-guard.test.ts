import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import t from 'tap';
import { type BrokerLogger, createBroker, type OversizedConnection } from '../coordinator/broker/create-broker.js';
import {
  defaultMaxPacketBytes,
  describeOversized,
  MQTT_MAX_REMAINING_LENGTH,
  PacketSizeGuard,
} from '../coordinator/broker/packet-size-guard.js';
import { CommandClient } from '../coordinator/client/command-client.js';
import { MAX_PAYLOAD_BYTES } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { CoordinatorProcess } from './helpers/coordinator-process.js';

// Issue 12 item 1: a packet announced larger than the cap is refused from its fixed header
// (MQTT 3.1.1 section 2.2), before the broker buffers its body, over TCP, TLS and WebSocket,
// and even before CONNECT. The attack is made with raw sockets; what the server took is counted
// from the client side (bytes whose write completed before the server closed the connection).

const MiB = 1024 * 1024;
const CAP = defaultMaxPacketBytes();
/**
 * What a client's writes can hand to the kernel besides what the server read: its own send
 * buffer (Linux tcp_wmem max, 4 MiB by default) and the server's receive buffer, which does not
 * grow while the server reads nothing. A server that reads the whole stream takes it all.
 */
const KERNEL_SLACK = 8 * MiB;
const STREAMED = 32 * MiB;

/** MQTT 3.1.1 variable byte integer (section 2.2.3). */
function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** A fixed header: packet type (1 = CONNECT, 3 = PUBLISH, 12 = PINGREQ...) and remaining length. */
const header = (type: number, remaining: number, flags = 0) =>
  Buffer.concat([Buffer.from([(type << 4) | flags]), varint(remaining)]);

// ---- the guard on its own ----

t.test('PacketSizeGuard follows fixed headers across any chunking', async (t) => {
  const publish = (bodyLength: number) => Buffer.concat([header(3, bodyLength), Buffer.alloc(bodyLength, 0x41)]);
  // Lengths at every varint boundary (1..4 bytes), a PINGREQ (no body) between them.
  const lengths = [0, 1, 127, 128, 16_383, 16_384, 100_000, CAP];
  const stream = Buffer.concat(lengths.flatMap((n) => [publish(n), header(12, 0)]));
  for (const size of [1, 2, 3, 5, 7, 4096, stream.length]) {
    const guard = new PacketSizeGuard(CAP);
    let verdict = null;
    for (let i = 0; i < stream.length && verdict === null; i += size)
      verdict = guard.push(stream.subarray(i, i + size));
    t.equal(verdict, null, `packets up to the cap pass, chunks of ${size}`);
  }
  // One byte over the cap is refused, wherever the chunks split the header.
  const over = Buffer.concat([publish(10), header(3, CAP + 1)]);
  for (const size of [1, 2, 3, over.length]) {
    const guard = new PacketSizeGuard(CAP);
    let verdict = null;
    for (let i = 0; i < over.length && verdict === null; i += size) verdict = guard.push(over.subarray(i, i + size));
    t.same(verdict, { packet: 'PUBLISH', index: 2, remainingLength: CAP + 1, limit: CAP }, `chunks of ${size}`);
    t.same(guard.push(Buffer.from([0])), verdict, 'and it stays refused');
  }
});

t.test('PacketSizeGuard: the largest lengths, a malformed one, its limit', async (t) => {
  const max = new PacketSizeGuard(MQTT_MAX_REMAINING_LENGTH);
  t.equal(max.push(header(1, MQTT_MAX_REMAINING_LENGTH)), null, '268,435,455 is expressible');
  const huge = new PacketSizeGuard(CAP).push(header(1, MQTT_MAX_REMAINING_LENGTH));
  t.same(huge, { packet: 'CONNECT', index: 1, remainingLength: MQTT_MAX_REMAINING_LENGTH, limit: CAP });
  t.equal(
    describeOversized(huge as NonNullable<typeof huge>),
    `packet 1 (CONNECT) announces a remaining length of 268435455 bytes; the limit is ${CAP}`,
  );
  // A fifth length byte is malformed (section 2.2.3): refused, whatever the limit.
  const malformed = new PacketSizeGuard(MQTT_MAX_REMAINING_LENGTH).push(
    Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]),
  );
  t.same(malformed, { packet: 'CONNECT', index: 1, remainingLength: null, limit: MQTT_MAX_REMAINING_LENGTH });
  t.match(describeOversized(malformed as NonNullable<typeof malformed>), /longer than the 4 bytes MQTT 3.1.1 allows/);
  t.same(new PacketSizeGuard(0).push(Buffer.from([0xf0, 1])), {
    packet: 'reserved(15)',
    index: 1,
    remainingLength: 1,
    limit: 0,
  });
  for (const bad of [-1, 1.5, MQTT_MAX_REMAINING_LENGTH + 1, Number.NaN]) {
    t.throws(() => new PacketSizeGuard(bad), { message: /maxPacketBytes must be an integer from 0 to 268435455/ });
  }
  t.equal(defaultMaxPacketBytes(), MAX_PAYLOAD_BYTES + 2 + 65_535 + 2, 'the payload cap plus a topic of any length');
  await t.rejects(
    createBroker({ topics: createTopics(), authenticate: () => null, logger: quiet([]), maxPacketBytes: -5 }),
    { message: /maxPacketBytes must be an integer/ },
  );
});

// ---- raw attackers ----

interface Taken {
  /** Bytes (after the header) whose write completed before the server closed the connection. */
  accepted: number;
  /** True when the server closed the connection before everything was written. */
  closedByServer: boolean;
}

/**
 * Writes `first`, then `total` bytes in 64 KiB chunks (each through `frame`), each after the
 * previous one was taken; stops at the first failed write (the server closed the connection).
 */
async function stream(socket: net.Socket, first: Buffer, total: number, frame = (b: Buffer) => b): Promise<Taken> {
  let closed = false;
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
  });
  const write = (b: Buffer) =>
    new Promise<boolean>((resolve) => {
      if (closed || socket.destroyed) resolve(false);
      else socket.write(b, (err) => resolve(!err));
    });
  let accepted = 0;
  let ok = await write(first);
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  while (ok && accepted < total) {
    ok = await write(frame(chunk));
    if (ok) accepted += chunk.length;
  }
  socket.destroy();
  return { accepted, closedByServer: !ok };
}

async function tcp(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** A WebSocket client frame (RFC 6455 section 5.2): binary, masked with a zero key, announcing `length`. */
function wsFrameHeader(length: number): Buffer {
  const h = Buffer.alloc(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h; // the last 4 bytes: the mask key, zero, so the payload goes as it is
}
const wsFrame = (payload: Buffer) => Buffer.concat([wsFrameHeader(payload.length), payload]);

/** A raw WebSocket connection to `/mqtt` (the HTTP upgrade made by hand). */
async function ws(httpPort: number): Promise<net.Socket> {
  const socket = await tcp(httpPort);
  socket.write(
    [
      'GET /mqtt HTTP/1.1',
      `Host: 127.0.0.1:${httpPort}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Protocol: mqtt',
      '',
      '',
    ].join('\r\n'),
  );
  let head = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause();
      if (head.startsWith('HTTP/1.1 101')) resolve();
      else reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  return socket;
}

/** Resident set size of a process, from /proc (Linux). */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

function quiet(warnings: { obj: object; msg?: string }[]): BrokerLogger {
  return {
    info() {},
    debug() {},
    error() {},
    warn: (obj, msg) => warnings.push({ obj, msg }),
  };
}

async function scrape(httpUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : Number.NaN;
}

/** `p`, or a failure after `ms` (a broker that waits for the body would leave the test hanging). */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function published(client: MqttClient, topic: string, payload: Buffer): Promise<void> {
  await client.publishAsync(topic, payload, { qos: 1 });
}

// ---- against a real coordinator process ----

t.test(
  'announced-huge packets before login: closed at the header, the coordinator keeps its memory',
  { skip: existsSync('/proc/self/status') ? false : 'needs /proc for the RSS' },
  async (t) => {
    const coordinator = await CoordinatorProcess.start(path.join(t.testdir(), 'data'));
    t.teardown(() => coordinator.stop());
    const mqttPort = Number(new URL(coordinator.mqttUrl).port);
    const httpPort = Number(new URL(coordinator.httpUrl).port);
    const topics = createTopics();

    // A legitimate device with a 200 KiB payload, over TCP and over WebSocket: accepted.
    const token = coordinator.admin();
    const admin = await CommandClient.connect({ url: coordinator.mqttUrl, user: token.user, token: token.token });
    t.teardown(() => admin.close());
    const added = await admin.call<{ token: string }>('device.add', { id: 'cam-1' });
    const report = (n: number) =>
      Buffer.from(
        JSON.stringify({
          deviceId: 'cam-1',
          seq: 0,
          ts: new Date().toISOString(),
          models: {},
          padding: 'x'.repeat(200 * 1024 + n),
        }),
      );
    for (const [n, url] of [
      [1, coordinator.mqttUrl],
      [2, `ws://127.0.0.1:${httpPort}/mqtt`],
    ] as const) {
      const device = await mqtt.connectAsync(url, {
        clientId: 'cam-1',
        username: 'cam-1',
        password: added.token,
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      await published(device, topics.reported('cam-1'), report(n));
      await device.endAsync();
      t.equal(await scrape(coordinator.httpUrl, 'ota_reports_total'), n, `a 200 KiB report accepted over ${url}`);
    }

    const before = rssOf(coordinator.pid);
    const huge = 150 * MiB;
    const results = await Promise.all([
      // A CONNECT announcing 150 MiB (and any other first packet: a PUBLISH), over TCP.
      ...[1, 1, 1, 3].map(async (type) => stream(await tcp(mqttPort), header(type, huge), STREAMED)),
      // The same over WebSocket, the MQTT packet spread over many small WebSocket messages.
      ...[1, 1].map(async (type) => stream(await ws(httpPort), wsFrame(header(type, huge)), STREAMED, wsFrame)),
      // One WebSocket message announcing 90 MiB (under ws's default cap of 100 MiB).
      ...[1, 1].map(async () => stream(await ws(httpPort), wsFrameHeader(90 * MiB), STREAMED)),
    ]);
    for (const [i, r] of results.entries()) {
      t.ok(r.closedByServer, `attack ${i}: the server closed the connection`);
      t.ok(
        r.accepted < CAP + KERNEL_SLACK,
        `attack ${i}: it took ${r.accepted} bytes of ${STREAMED}, at most the cap + kernel buffers`,
      );
    }
    const grown = rssOf(coordinator.pid) - before;
    t.ok(grown < 12 * MiB, `RSS grew by ${(grown / MiB).toFixed(1)} MiB (${results.length} attacks of 32 MiB each)`);

    t.equal(await scrape(coordinator.httpUrl, 'ota_mqtt_oversized_packets_total'), results.length, 'each one counted');
    const warned = coordinator.logs.filter(
      (l) => l.msg === 'mqtt connection closed: packet over the size limit' && l.remoteAddress === '127.0.0.1',
    );
    t.equal(warned.length, results.length, 'and logged with the remote address');
    t.match(warned.map((l) => l.reason).sort(), [
      /^a WebSocket message over \d+ bytes$/,
      /^a WebSocket message over \d+ bytes$/,
      /^packet 1 \(CONNECT\) announces a remaining length of 157286400 bytes; the limit is \d+$/,
      /CONNECT/,
      /CONNECT/,
      /CONNECT/,
      /CONNECT/,
      /^packet 1 \(PUBLISH\) announces a remaining length of 157286400 bytes/,
    ]);

    // The coordinator still serves: the device again, over TCP.
    const device = await mqtt.connectAsync(coordinator.mqttUrl, {
      clientId: 'cam-1',
      username: 'cam-1',
      password: added.token,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    await published(device, topics.reported('cam-1'), report(3));
    await device.endAsync();
    t.equal(await scrape(coordinator.httpUrl, 'ota_reports_total'), 3);
  },
);

// ---- against a broker in this process: TLS, after login, and the CONNECT deadline ----

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

t.test('over TLS, and after login: the same cap', { skip: hasOpenssl() ? false : 'no openssl' }, async (t) => {
  const dir = t.testdir();
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1'],
      ...['-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1'],
    ],
    { stdio: 'ignore' },
  );
  const warnings: { obj: object; msg?: string }[] = [];
  const oversized: OversizedConnection[] = [];
  const broker = await createBroker({
    topics: createTopics(),
    authenticate: (u, p) => (u === 'cam-1' && p === 'tok' ? { kind: 'device', deviceId: 'cam-1' } : null),
    logger: quiet(warnings),
    onOversizedPacket: (info) => oversized.push(info),
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1', { cert: readFileSync(cert), key: readFileSync(key) });
  const tlsSocket = async () => {
    const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', resolve);
      s.once('error', reject);
    });
    return s as unknown as net.Socket;
  };
  const r = await stream(await tlsSocket(), header(1, 150 * MiB), STREAMED);
  t.ok(r.closedByServer, 'TLS: closed by the server');
  t.ok(r.accepted < CAP + KERNEL_SLACK, `TLS: it took ${r.accepted} bytes`);

  // Logged in, a client announcing a PUBLISH over the cap is closed the same way (before its
  // payload reaches the payload checks).
  const device = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, {
    clientId: 'cam-1',
    username: 'cam-1',
    password: 'tok',
    protocolVersion: 4,
    reconnectPeriod: 0,
    rejectUnauthorized: false,
  });
  const closed = new Promise<void>((resolve) => device.stream.once('close', () => resolve()));
  device.stream.write(header(3, CAP + 1));
  await within(10_000, 'the broker to close the connection', closed);
  await device.endAsync(true);
  t.same(
    oversized.map((o) => o.reason),
    [
      `packet 1 (CONNECT) announces a remaining length of ${150 * MiB} bytes; the limit is ${CAP}`,
      `packet 2 (PUBLISH) announces a remaining length of ${CAP + 1} bytes; the limit is ${CAP}`,
    ],
  );
  t.same(
    oversized.map((o) => [o.remoteAddress, o.transport]),
    [
      ['127.0.0.1', 'mqtt'],
      ['127.0.0.1', 'mqtt'],
    ],
  );
});

t.test('a connection that never completes CONNECT is closed at the deadline', async (t) => {
  const broker = await createBroker({
    topics: createTopics(),
    authenticate: () => null,
    logger: quiet([]),
    connectTimeoutMs: 200,
  });
  t.teardown(() => broker.close());
  const { port } = await broker.listen(0, '127.0.0.1');
  const socket = await tcp(port);
  socket.on('error', () => {});
  // A CONNECT under the cap, never finished: the broker holds at most these bytes, until the deadline.
  socket.write(Buffer.concat([header(1, 1000), Buffer.alloc(100)]));
  await within(10_000, 'close', new Promise<void>((resolve) => socket.once('close', () => resolve())));
  t.pass('the broker closed it');
});
