import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import {
  listenMetricsSocket,
  MAX_ANSWERS_PER_LINE,
  MAX_PENDING_ANSWER_BYTES,
  type MetricsSocket,
} from '../agent/metrics/metrics-socket.js';
import { MAX_LINE_BYTES, type ObservationContext } from '../agent/metrics/observation.js';
import { WindowAggregator } from '../agent/metrics/window-aggregator.js';
import { isOtaError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import type { Metrics } from '../shared/messages.js';
import { MetricsClient, type MetricsRefusal } from '../shared/metrics/client.js';

const logger = createLogger('silent');
const ctx: ObservationContext = {
  knownVersions: (model) => (model === 'detector' ? new Set(['1.0.0']) : undefined),
  declaredValues: new Set(['boxes']),
};
const ok = { model: 'detector', version: '1.0.0', latencyMs: 3 };
const START = new Date('2025-03-01T10:00:00Z');

async function setup(t: Test, maxConnections?: number) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-'));
  const socketPath = path.join(dir, 'metrics.sock');
  const agg = new WindowAggregator();
  const server = await listenMetricsSocket({ path: socketPath, context: ctx, sink: agg, logger, maxConnections });
  t.teardown(async () => {
    await server.close();
    await fs.rm(dir, { recursive: true, force: true });
  });
  return { dir, socketPath, agg, server };
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends raw bytes and reads answer lines until `n` arrived. */
async function exchange(s: net.Socket, data: string | Buffer, n: number): Promise<MetricsRefusal[]> {
  const out: MetricsRefusal[] = [];
  let buf = '';
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      buf += chunk.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
      if (out.length >= n) {
        s.off('data', onData);
        resolve(out);
      }
    };
    s.on('data', onData);
    s.write(data);
  });
}

/** A round trip on a fresh connection: once answered, every earlier connection's lines were handled. */
async function barrier(socketPath: string): Promise<void> {
  const s = await connect(socketPath);
  await exchange(s, 'x\n', 1);
  s.destroy();
}

function total(m: Metrics | null): number {
  return (m?.series ?? []).reduce((n, s) => n + s.count, 0);
}

t.test('end to end with the Node client: batches arrive, refusals come back', async (t) => {
  const { socketPath, agg } = await setup(t);
  const refusals: MetricsRefusal[] = [];
  const client = new MetricsClient({ socketPath, batchSize: 300, onRefused: (r) => refusals.push(r) });
  for (let i = 0; i < 1000; i++) client.report({ ...ok, latencyMs: i, values: { boxes: i % 5 } });
  client.report({ ...ok, model: 'nope' });
  client.report({ model: 'detector', version: '1.0.0', latencyMs: 1n } as never); // not serializable
  await client.flush();
  await barrier(socketPath);
  while (refusals.length < 1) await new Promise((r) => setTimeout(r, 10));
  await client.close();
  t.same(client.stats, { sent: 1001, dropped: 1, refused: 1 });
  t.match(refusals[0], { ok: false, code: 'E_METRICS_UNKNOWN_MODEL', line: 4, index: 100 });
  const m = agg.close(START, new Date(), 60);
  t.equal(total(m), 1000);
  t.equal(m?.dropped?.observations, 2, 'the refused observation and the barrier line');
  client.report(ok);
  t.equal(client.stats.dropped, 2, 'a closed client drops');
});

t.test('the client while the agent is down: buffers (bounded), reconnects, delivers', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'metrics.sock');
  const client = new MetricsClient({
    socketPath,
    maxBuffered: 5,
    minBackoffMs: 5,
    maxBackoffMs: 20,
    flushIntervalMs: 5,
  });
  for (let i = 0; i < 8; i++) client.report(ok);
  t.equal(client.stats.dropped, 3, 'beyond the buffer: dropped and counted');
  await client.flush(); // connecting fails: nothing thrown
  const agg = new WindowAggregator();
  const server = await listenMetricsSocket({ path: socketPath, context: ctx, sink: agg, logger });
  t.teardown(() => server.close());
  while (client.stats.sent < 5) await new Promise((r) => setTimeout(r, 5));
  await client.close();
  await barrier(socketPath);
  t.equal(total(agg.close(START, new Date(), 60)), 5, 'the buffered observations arrived after the reconnect');
});

t.test('a raw client sending garbage, an over-long line and good lines', async (t) => {
  const { socketPath, agg } = await setup(t);
  const s = await connect(socketPath);
  t.teardown(() => s.destroy());
  const long = `[${Array.from({ length: 2000 }, () => JSON.stringify(ok)).join(',')}`; // > 64 KiB, never ended by "]"
  t.ok(Buffer.byteLength(long) > MAX_LINE_BYTES);
  const answers = await exchange(s, `garbage\n\n${JSON.stringify(ok)}\n${long.slice(0, 40_000)}`, 1);
  t.match(answers, [{ code: 'E_METRICS_LINE', line: 1, message: /not JSON/ }]);
  // The rest of the long line arrives in pieces; it is refused once, the moment it crosses the limit.
  const more = await exchange(
    s,
    `${long.slice(40_000)}${'x'.repeat(100_000)}\n${JSON.stringify([ok, ok])}\n{"model":1}\n`,
    2,
  );
  t.match(more, [
    { code: 'E_METRICS_LINE', line: 4, message: /longer than 65536/ },
    { code: 'E_METRICS_FIELD', line: 6 },
  ]);
  const m = agg.close(START, new Date(), 60);
  t.equal(total(m), 3, 'the good lines before and after the long one count');
  t.equal(m?.dropped?.observations, 3);
  const gone = await connect(socketPath);
  gone.write('{"model":"detector","vers'); // a client that goes away mid-line
  gone.destroy();
  await barrier(socketPath);
});

t.test('33 connections: the 33rd gets one error line and is closed', async (t) => {
  const { socketPath } = await setup(t, 32);
  const clients = await Promise.all(Array.from({ length: 32 }, () => connect(socketPath)));
  t.teardown(() => {
    for (const c of clients) c.destroy();
  });
  await Promise.all(clients.map((c) => exchange(c, 'x\n', 1))); // all 32 were accepted
  const extra = await connect(socketPath);
  const text = await new Promise<string>((resolve) => {
    let buf = '';
    extra.on('data', (d) => (buf += d));
    extra.on('close', () => resolve(buf));
  });
  t.match(JSON.parse(text), { ok: false, code: 'E_METRICS_LINE', message: /at most 32 metrics connections/ });
  clients.pop()?.destroy();
  await new Promise((r) => setTimeout(r, 20));
  await barrier(socketPath); // a slot freed: a new connection is served again
});

t.test('a client that never reads: answers stop at the cap, refusals are still counted', async (t) => {
  const { socketPath, agg } = await setup(t);
  const s = await connect(socketPath);
  t.teardown(() => s.destroy());
  s.pause();
  const line = `${JSON.stringify({ ...ok, model: 'unknown-model-name' })}\n`;
  const n = 20_000; // ~200 bytes of answer each: far more than the socket buffers plus the cap
  await new Promise<void>((resolve) => s.write(line.repeat(n), () => resolve()));
  await barrier(socketPath);
  const m = agg.close(START, new Date(), 60);
  t.equal(m?.dropped?.observations, n + 1, 'every refusal counted');
  let answered = 0;
  s.on('data', (d: Buffer) => {
    answered += d.toString().split('\n').length - 1;
  });
  s.resume();
  await new Promise((r) => setTimeout(r, 100));
  t.ok(answered < n, `${answered} answers of ${n}: the server stopped answering`);
  t.ok(answered * 150 >= MAX_PENDING_ANSWER_BYTES, 'it answered up to the cap first');
});

t.test('listen: the directory must exist; a stale socket is replaced; a live one or a file is refused', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  await t.rejects(
    listenMetricsSocket({
      path: path.join(dir, 'missing', 'm.sock'),
      context: ctx,
      sink: new WindowAggregator(),
      logger,
    }),
    { code: 'E_IO', message: /directory of the metrics socket .*missing.* does not exist/ },
  );
  const file = path.join(dir, 'file.sock');
  await fs.writeFile(file, 'x');
  await t.rejects(listenMetricsSocket({ path: file, context: ctx, sink: new WindowAggregator(), logger }), {
    message: /exists and is not a socket/,
  });
  const socketPath = path.join(dir, 'm.sock');
  const first: MetricsSocket = await listenMetricsSocket({
    path: socketPath,
    context: ctx,
    sink: new WindowAggregator(),
    logger,
  });
  t.equal((await fs.stat(socketPath)).mode & 0o777, 0o660);
  const err = await listenMetricsSocket({ path: socketPath, context: ctx, sink: new WindowAggregator(), logger }).catch(
    (e) => e,
  );
  t.ok(isOtaError(err, 'E_IO') && /another process listens/.test(err.message), 'a live socket is not taken over');
  await first.close();
  await t.rejects(fs.stat(socketPath), { code: 'ENOENT' }, 'close() removes the socket file');
  // A stale socket: bound by a server that is gone without unlinking it.
  const stale = net.createServer();
  await new Promise<void>((r) => stale.listen(socketPath, () => r()));
  // Closing a server unlinks its path: a hard link to the socket outlives it, like the file a
  // killed agent leaves.
  const staleLink = path.join(dir, 'stale.sock');
  await fs.link(socketPath, staleLink);
  await new Promise<void>((r) => stale.close(() => r()));
  t.ok((await fs.lstat(staleLink)).isSocket(), 'a socket file nobody listens on');
  const again = await listenMetricsSocket({ path: staleLink, context: ctx, sink: new WindowAggregator(), logger });
  await again.close();
});

t.test('a refused batch of 1,000 gets 10 answers and one that sums up the rest; all are counted', async (t) => {
  const { socketPath, agg } = await setup(t);
  const s = await connect(socketPath);
  t.teardown(() => s.destroy());
  const bad = JSON.stringify(Array.from({ length: 1000 }, () => ({ ...ok, latencyMs: 'slow' })));
  const answers = await exchange(s, `${bad}\n`, MAX_ANSWERS_PER_LINE + 1);
  t.equal(answers.length, MAX_ANSWERS_PER_LINE + 1);
  t.match(answers.at(-1), {
    code: 'E_METRICS_FIELD',
    line: 1,
    message: /990 more observations of this line were refused/,
  });
  // Nothing more comes for that line: the next line's answer is the next one read.
  const next = await exchange(s, 'x\n', 1);
  t.match(next, [{ code: 'E_METRICS_LINE', line: 2 }]);
  t.equal(agg.close(START, new Date(), 60)?.dropped?.observations, 1001, 'the 1,000 and the bad line counted');
});
