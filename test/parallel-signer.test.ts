import path from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { DesiredPublisher } from '../coordinator/desired/desired-publisher.js';
import { ParallelSigner } from '../coordinator/desired/parallel-signer.js';
import type { SignJob } from '../coordinator/desired/sign-job.js';
import { openStore } from '../coordinator/store/sqlite-store.js';
import { decodeDesiredMessage, verifyDesired } from '../shared/desired.js';
import { signDetached, verifyDetached } from '../shared/ed25519.js';
import { generateKey } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { signerFor } from '../shared/signatures.js';
import { createTopics } from '../shared/topics.js';

// The coordinator's parallel signing (coordinator/desired/parallel-signer.ts) with real worker
// threads: the signatures are tweetnacl's whoever makes them, the workers really take part, and a
// worker that hangs or dies costs at most one wait and loses no signature.

const key = generateKey();
/** Texts with 1- to 4-byte UTF-8 characters: the job's offsets are in bytes, not characters. */
const texts = (n: number) => Array.from({ length: n }, (_, i) => `{"deviceId":"d-${i}","note":"é ✓ 😀 ${i}"}`);

function logs() {
  const lines: { level: number; msg: string; stalled?: number; worker?: number }[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line.replace(/^<\d>/, '')));
  });
  return { logger: createLogger('info', stream, 'test', 'json'), lines };
}

/** Waits (blocking, bounded) until `ready(job)`: the workers' first move happens before this thread claims. */
function holdUntil(ready: (job: SignJob) => boolean): (job: SignJob) => void {
  return (job) => {
    const tick = new Int32Array(new SharedArrayBuffer(4));
    for (let waited = 0; !ready(job) && waited < 30_000; waited++) Atomics.wait(tick, 0, 0, 1);
  };
}

const expected = (batch: string[]) =>
  batch.map((x) => Buffer.from(signDetached(new TextEncoder().encode(x), key.secretKey)));

t.test(
  'a large batch is signed here and on the workers together; every signature is the one tweetnacl makes',
  async (t) => {
    const { logger } = logs();
    const signer = new ParallelSigner({
      seed: key.seed,
      workers: 2,
      logger,
      minBatch: 16,
      // This thread starts claiming only once a worker has signed a text.
      onJob: holdUntil((job) => job.signedBy.some((who) => who >= 2)),
    });
    t.teardown(() => signer.close());
    await signer.ready();
    t.equal(signer.liveWorkerCount, 2, 'both workers started');
    const batch = texts(300);
    const signatures = signer.signMany(batch);
    t.same(
      signatures.map((s) => Buffer.from(s)),
      expected(batch),
      'each text its own signature, in order',
    );
    const stats = signer.lastBatch;
    t.equal(stats?.size, 300);
    t.ok((stats?.byWorkers ?? 0) > 0, `the workers signed ${stats?.byWorkers} of 300`);
    t.equal((stats?.here ?? 0) + (stats?.byWorkers ?? 0), 300, 'every text signed once, here or by a worker');
    t.equal(stats?.stalled, 0);
  },
);

t.test(
  'a batch larger than one job (2,500 texts: three jobs of at most 1,024) comes back whole and in order',
  async (t) => {
    const { logger } = logs();
    let jobs = 0;
    const wait = holdUntil((job) => job.signedBy.some((who) => who >= 2));
    const signer = new ParallelSigner({
      seed: key.seed,
      workers: 1,
      logger,
      minBatch: 16,
      onJob: (job) => {
        jobs++;
        wait(job);
      },
    });
    t.teardown(() => signer.close());
    await signer.ready();
    const batch = texts(2500);
    const signatures = signer.signMany(batch);
    t.equal(jobs, 3);
    t.equal(signatures.length, 2500);
    const encoder = new TextEncoder();
    const bad = batch.filter(
      (x, i) => verifyDetached(encoder.encode(x), signatures[i] as Uint8Array, key.publicKey) !== 'valid',
    );
    t.same(bad, [], 'each signature verifies over its own text');
    t.match(signer.lastBatch, { size: 2500, stalled: 0 });
    t.ok((signer.lastBatch?.byWorkers ?? 0) >= 3, 'the worker signed in every job');
  },
);

t.test('small batches, and a signer without workers, sign on this thread and start no worker', async (t) => {
  const { logger } = logs();
  const pooled = new ParallelSigner({ seed: key.seed, workers: 2, logger, minBatch: 50 });
  t.teardown(() => pooled.close());
  const batch = texts(49);
  t.same(
    pooled.signMany(batch).map((s) => Buffer.from(s)),
    expected(batch),
  );
  t.equal(pooled.liveWorkerCount, 0, 'below minBatch: no worker started');
  t.equal(pooled.lastBatch, null);

  const alone = new ParallelSigner({ seed: key.seed, workers: 0, logger, minBatch: 2 });
  const big = texts(300);
  t.same(
    alone.signMany(big).map((s) => Buffer.from(s)),
    expected(big),
  );
  t.equal(alone.liveWorkerCount, 0, 'workers: 0 starts none');
  await alone.close();
});

t.test('the first large batch starts the workers and is signed here; the next one is shared', async (t) => {
  const { logger } = logs();
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 8,
    onJob: holdUntil((job) => job.signedBy.some((who) => who >= 2)),
  });
  t.teardown(() => signer.close());
  const first = texts(40);
  t.same(
    signer.signMany(first).map((s) => Buffer.from(s)),
    expected(first),
  );
  t.equal(signer.lastBatch, null, 'not a shared batch: the worker was only starting');
  t.equal(signer.liveWorkerCount, 1, 'the worker was started by it');
  await signer.ready();
  const second = texts(40).map((x) => `${x}!`);
  t.same(
    signer.signMany(second).map((s) => Buffer.from(s)),
    expected(second),
  );
  t.ok((signer.lastBatch?.byWorkers ?? 0) > 0, 'the worker took part in the second');
});

t.test('a worker that claims a text and hangs: that text is signed here after stallMs, and it is logged', async (t) => {
  const { logger, lines } = logs();
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 8,
    stallMs: 50,
    workerModule: new URL('./helpers/sign-worker-stalls.ts', import.meta.url),
    onJob: holdUntil((job) => Atomics.load(job.next, 0) > 0), // the worker claimed its text
  });
  t.teardown(() => signer.close());
  await signer.ready();
  const batch = texts(100);
  t.same(
    signer.signMany(batch).map((s) => Buffer.from(s)),
    expected(batch),
    'no signature lost or wrong',
  );
  t.same(signer.lastBatch, { size: 100, here: 100, byWorkers: 0, stalled: 1 });
  t.equal(signer.liveWorkerCount, 0, 'the workers were stopped');
  await new Promise((r) => setImmediate(r));
  t.match(
    lines.find((l) => l.msg.startsWith('a signing worker did not finish')),
    { level: 40, stalled: 1 },
    'a warning says so',
  );
  const next = texts(100).map((x) => `${x}+`);
  t.same(
    signer.signMany(next).map((s) => Buffer.from(s)),
    expected(next),
    'the next batch: signed here',
  );
  t.equal(signer.liveWorkerCount, 1, 'and it started a worker again');
});

t.test('a worker that exits is dropped and logged; later batches are signed here', async (t) => {
  const { logger, lines } = logs();
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 8,
    workerModule: new URL('./helpers/sign-worker-exits.ts', import.meta.url),
  });
  t.teardown(() => signer.close());
  await signer.ready();
  const first = texts(30);
  t.same(
    signer.signMany(first).map((s) => Buffer.from(s)),
    expected(first),
    'the batch it left is complete',
  );
  for (let i = 0; i < 1000 && signer.liveWorkerCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(signer.liveWorkerCount, 0, 'the worker is no longer used');
  t.match(
    lines.find((l) => l.msg.startsWith('signing worker gone')),
    { level: 50, worker: 0 },
  );
  const second = texts(30).map((x) => `${x}?`);
  t.same(
    signer.signMany(second).map((s) => Buffer.from(s)),
    expected(second),
  );
  t.equal(signer.liveWorkerCount, 0, 'not started again');
});

t.test('after close, batches are signed here; close twice is fine', async (t) => {
  const { logger, lines } = logs();
  const signer = new ParallelSigner({ seed: key.seed, workers: 1, logger, minBatch: 8 });
  await signer.ready();
  await signer.close();
  await signer.close();
  const batch = texts(20);
  t.same(
    signer.signMany(batch).map((s) => Buffer.from(s)),
    expected(batch),
  );
  t.equal(signer.liveWorkerCount, 0);
  t.notOk(
    lines.some((l) => l.level >= 50),
    'closing is not an error',
  );
});

t.test('DesiredPublisher signing a wave in parallel: every desired state verifies for its device', async (t) => {
  const store = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => store.close());
  const now = () => new Date('2026-12-06T00:00:00.000Z');
  const ids = Array.from({ length: 300 }, (_, i) => `cam-${i}`);
  for (const id of ids)
    store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: now().toISOString() });
  const { logger } = logs();
  const signing = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 100,
    onJob: holdUntil((job) => job.signedBy.some((who) => who >= 2)),
  });
  t.teardown(() => signing.close());
  await signing.ready();
  const publisher = new DesiredPublisher({
    store,
    topics: createTopics(),
    signer: signerFor(key, { fast: true }),
    now,
    signMany: (batch) => signing.signMany(batch),
  });
  const messages = publisher.prepare(ids);
  t.equal(messages.length, 300);
  t.ok((signing.lastBatch?.byWorkers ?? 0) > 0, 'the worker signed some');
  const policy = { keys: [key], threshold: 1 };
  const wrong = messages.flatMap((m, i) => {
    const id = ids[i] as string;
    const state = verifyDesired(decodeDesiredMessage(m.payload), policy, { deviceId: id, lastSeq: 0 });
    return m.topic === createTopics().desired(id) && state.seq === 1 ? [] : [id];
  });
  t.same(wrong, [], 'each verifies with the coordinator key, for its own device, on its own topic, seq 1');
});
