import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t, { type Test } from 'tap';
import { AgentMetrics, type MetricsTimers, SEND_RETRY_MIN_MS } from '../agent/metrics/agent-metrics.js';
import { MetricsSchema } from '../shared/messages.js';
import { MetricsClient } from '../shared/metrics/client.js';

// AgentMetrics with its real socket and outbox, a clock and timers the test turns by hand, and a
// publish the test answers (the MQTT session's, resolving on PUBACK): windows close on time
// whatever the sending does, a summary not acknowledged waits for its backoff, and a stop closes
// the open window without waiting for a publish that never settles.

class ManualTimers implements MetricsTimers {
  private next = 1;
  readonly pending = new Map<number, { fn: () => void; ms: number }>();
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.set(id, { fn, ms });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  /** Runs the timers due within `ms` (the shortest first, once). */
  fire(predicate: (ms: number) => boolean): number {
    let n = 0;
    for (const [id, { fn, ms }] of [...this.pending]) {
      if (!predicate(ms)) continue;
      this.pending.delete(id);
      fn();
      n++;
    }
    return n;
  }
  /** Runs the timer scheduled last (a retry just scheduled, when a window timer is pending too). */
  fireLatest(): void {
    const last = [...this.pending.keys()].at(-1);
    if (last === undefined) throw new Error('no timer pending');
    const { fn } = this.pending.get(last) as { fn: () => void };
    this.pending.delete(last);
    fn();
  }
  delays(): number[] {
    return [...this.pending.values()].map((p) => p.ms).sort((a, b) => a - b);
  }
}

interface Sent {
  payload: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

async function setup(t: Test) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-am-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const timers = new ManualTimers();
  const sent: Sent[] = [];
  let connected = true;
  let nowMs = Date.parse('2026-12-06T10:00:30.000Z');
  const metrics = new AgentMetrics({
    config: { enabled: true, socket: path.join(dir, 'm.sock'), windowSeconds: 60, maxPendingWindows: 100, values: [] },
    stateDir: dir,
    logger: pino({ level: 'silent' }),
    now: () => new Date(nowMs),
    knownVersions: (model) => (model === 'det' ? new Set(['1.0.0']) : undefined),
    publish: (payload) => new Promise<void>((resolve, reject) => sent.push({ payload, resolve, reject })),
    isConnected: () => connected,
    timers,
    random: () => 0.5, // no jitter: the retry delays are the backoff's
  });
  await metrics.start();
  t.teardown(() => metrics.stop());
  const outbox = path.join(dir, 'metrics-outbox');
  const files = async () => (await fs.readdir(outbox)).filter((n) => n.endsWith('.json')).sort();
  const report = async (n: number) => {
    const client = new MetricsClient({ socketPath: path.join(dir, 'm.sock') });
    for (let i = 0; i < n; i++) client.report({ model: 'det', version: '1.0.0', latencyMs: 5 + i });
    await client.close();
  };
  const waitFor = async (what: string, check: () => boolean | Promise<boolean>) => {
    for (let i = 0; i < 400; i++) {
      if (await check()) return;
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`never: ${what}`);
  };
  return {
    outboxDir: outbox,
    metrics,
    timers,
    sent,
    files,
    report,
    waitFor,
    advance: (ms: number) => {
      nowMs += ms;
    },
    setConnected: (c: boolean) => {
      connected = c;
    },
  };
}

t.test('windows close on the wall clock while a publish hangs; nothing is sent twice', async (t) => {
  const s = await setup(t);
  t.same(s.timers.delays(), [30_000], 'the first window closes at the next minute (10:01:00)');
  await s.report(10);
  await s.waitFor('the window holds 10 observations', () => s.metrics.openWindowObservations === 10);
  s.advance(30_000);
  s.timers.fire((ms) => ms === 30_000);
  await s.waitFor('the first summary is being sent', () => s.sent.length === 1);
  t.equal((await s.files()).length, 1, 'in the outbox before it was sent');
  const first = MetricsSchema.parse(JSON.parse(s.sent[0]?.payload.toString() as string));
  t.equal(first.windowStart, '2026-12-06T10:00:30.000Z');
  t.equal(first.series[0]?.count, 10);
  // The publish never settles; the next window still closes on time.
  await s.report(5);
  await s.waitFor('the window holds 5 observations', () => s.metrics.openWindowObservations === 5);
  t.same(s.timers.delays(), [60_000], 'the next window is scheduled at once');
  s.advance(60_000);
  s.timers.fire((ms) => ms === 60_000);
  await s.waitFor('the second window in the outbox', async () => (await s.files()).length === 2);
  t.equal(s.sent.length, 1, 'one publish at a time: the second waits for the first');
  s.sent[0]?.resolve();
  await s.waitFor('the second summary is being sent', () => s.sent.length === 2);
  t.equal((await s.files()).length, 1, 'the acknowledged one left the outbox');
  s.sent[1]?.resolve();
  await s.waitFor('the outbox is empty', async () => (await s.files()).length === 0);
});

t.test('a summary not acknowledged waits for its backoff, doubling, reset by an acknowledgement', async (t) => {
  const s = await setup(t);
  await s.report(3);
  await s.waitFor('3 observed', () => s.metrics.openWindowObservations === 3);
  s.advance(30_000);
  s.timers.fire((ms) => ms === 30_000);
  await s.waitFor('sent', () => s.sent.length === 1);
  s.sent[0]?.reject(new Error('connection closed before the broker acknowledged the publish'));
  await s.waitFor('a retry is scheduled', () => s.timers.delays().includes(SEND_RETRY_MIN_MS));
  // A reconnect does not send before the retry is due (a send would be synchronous up to the
  // outbox read: the outbox's serial queue is flushed by the report below).
  s.metrics.onConnected();
  await s.report(1);
  await s.waitFor('1 observed', () => s.metrics.openWindowObservations === 1);
  t.equal(s.sent.length, 1, 'no send before the retry');
  s.timers.fireLatest();
  await s.waitFor('sent again', () => s.sent.length === 2);
  t.same(s.sent[1]?.payload, s.sent[0]?.payload, 'the same summary, from the outbox');
  s.sent[1]?.reject(new Error('refused'));
  // The window timer is 60 s too: wait for both.
  await s.waitFor('the second retry', () => s.timers.delays().length === 2);
  t.same(s.timers.delays(), [2 * SEND_RETRY_MIN_MS, 60_000], 'the retry (doubled) beside the window timer');
  s.timers.fireLatest();
  await s.waitFor('sent a third time', () => s.sent.length === 3);
  s.sent[2]?.resolve();
  await s.waitFor('the outbox is empty', async () => (await s.files()).length === 0);
  // Offline: nothing is sent; the reconnect sends.
  s.setConnected(false);
  await s.report(2);
  await s.waitFor('3 observed (1 before)', () => s.metrics.openWindowObservations === 3);
  s.advance(60_000);
  s.timers.fire((ms) => ms === 60_000);
  await s.waitFor('in the outbox', async () => (await s.files()).length === 1);
  t.equal(s.sent.length, 3, 'nothing sent while offline');
  s.setConnected(true);
  s.metrics.onConnected();
  await s.waitFor('sent after the reconnect', () => s.sent.length === 4);
});

t.test('stop closes the open window into the outbox without waiting for a publish', async (t) => {
  const s = await setup(t);
  await s.report(4);
  await s.waitFor('4 observed', () => s.metrics.openWindowObservations === 4);
  s.advance(30_000);
  s.timers.fire((ms) => ms === 30_000);
  await s.waitFor('sent', () => s.sent.length === 1);
  await s.report(6);
  await s.waitFor('6 observed', () => s.metrics.openWindowObservations === 6);
  s.advance(12_000);
  await s.metrics.stop(); // the publish of the first summary never settles
  const files = await s.files();
  t.equal(files.length, 2, 'the unacknowledged summary and the open window are both in the outbox');
  t.same(s.timers.delays(), [], 'no timer left');
  const last = MetricsSchema.parse(
    (JSON.parse(await fs.readFile(path.join(s.outboxDir, files[1] as string), 'utf8')) as { message: unknown }).message,
  );
  t.equal(last.series[0]?.count, 6, 'the open window, closed by the stop');
  t.equal(last.windowSeconds, 12);
});

t.test('an outbox that fails is logged and tried again later; the agent goes on', async (t) => {
  const s = await setup(t);
  s.setConnected(false);
  await s.report(2);
  await s.waitFor('2 observed', () => s.metrics.openWindowObservations === 2);
  s.advance(30_000);
  s.timers.fire((ms) => ms === 30_000);
  await s.waitFor('in the outbox', async () => (await s.files()).length === 1);
  // The summary's file no longer holds a summary (a disk fault): reading it fails.
  const [file] = await s.files();
  await fs.writeFile(path.join(s.outboxDir, file as string), 'not json');
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => process.off('unhandledRejection', onRejection));
  s.setConnected(true);
  s.metrics.onConnected();
  await s.waitFor('a retry is scheduled', () => s.timers.delays().includes(SEND_RETRY_MIN_MS));
  t.equal(s.sent.length, 0, 'nothing was sent');
  t.same(rejections, [], 'no unhandled rejection (it would end the agent)');
  // Windows go on closing.
  await s.report(3);
  await s.waitFor('3 observed', () => s.metrics.openWindowObservations === 3);
});
