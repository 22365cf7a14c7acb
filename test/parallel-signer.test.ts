import path from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { DesiredPublisher } from '../coordinator/desired/desired-publisher.js';
import { ParallelSigner, type ParallelSignerOptions } from '../coordinator/desired/parallel-signer.js';
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
// worker that hangs, dies or falls behind costs at most one bounded wait and loses no signature.

const key = generateKey();
/** Texts with 1- to 4-byte UTF-8 characters: the job's offsets are in bytes, not characters. */
const texts = (n: number, tag = '') =>
  Array.from({ length: n }, (_, i) => `{"deviceId":"d-${i}","note":"é ✓ 😀 ${i}${tag}"}`);
const expected = (batch: string[]) =>
  batch.map((x) => Buffer.from(signDetached(new TextEncoder().encode(x), key.secretKey)));
const buffers = (signatures: Uint8Array[]) => signatures.map((s) => Buffer.from(s));

function logs() {
  const lines: { level: number; msg: string; stalled?: number; worker?: number; failuresInARow?: number }[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line.replace(/^<\d>/, '')));
  });
  return { logger: createLogger('info', stream, 'test', 'json'), lines };
}

/** Blocks (bounded) until `ready(job)`: the workers' first move happens before this thread claims. */
function holdUntil(ready: (job: SignJob) => boolean): (job: SignJob) => void {
  return (job) => {
    const tick = new Int32Array(new SharedArrayBuffer(4));
    for (let waited = 0; !ready(job) && waited < 30_000; waited++) Atomics.wait(tick, 0, 0, 1);
  };
}
const aWorkerSigned = (job: SignJob) => job.signedBy.some((who) => who >= 2);
/** Texts of a job signed by a worker, read from the job itself (not from the signer's counts). */
const byWorkersIn = (job: SignJob) => job.signedBy.filter((who) => who >= 2).length;

/** A signer whose jobs are kept, and whose thread starts claiming only once a worker signed one. */
function sharing(options: Partial<ParallelSignerOptions> & { logger: ParallelSignerOptions['logger'] }) {
  const jobs: SignJob[] = [];
  const hold = holdUntil(aWorkerSigned);
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    minBatch: 16,
    onJob: (job) => {
      jobs.push(job);
      hold(job);
    },
    ...options,
  });
  return { signer, jobs };
}

/**
 * A signer whose one worker (test/helpers/`module`) claims a text of each job and never signs it;
 * this thread starts claiming once it has.
 */
function claimsAndFails(module: string, stallMs: number) {
  const { logger, lines } = logs();
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 8,
    stallMs,
    workerModule: new URL(`./helpers/${module}`, import.meta.url),
    onJob: holdUntil((job) => Atomics.load(job.next, 0) > 0), // the worker claimed its text
  });
  return { signer, lines };
}

t.test(
  'a large batch is signed here and on the workers together; every signature is the one tweetnacl makes',
  async (t) => {
    const { logger } = logs();
    const { signer, jobs } = sharing({ workers: 2, logger });
    t.teardown(() => signer.close());
    await signer.ready();
    t.equal(signer.liveWorkerCount, 2, 'both workers started');
    const batch = texts(300);
    t.same(buffers(signer.signMany(batch)), expected(batch), 'each text its own signature, in order');
    t.equal(jobs.length, 1);
    const job = jobs[0] as SignJob;
    t.ok(
      job.signedBy.every((who) => who !== 0),
      'every text of the job is marked signed',
    );
    t.ok(byWorkersIn(job) > 0, `the workers signed ${byWorkersIn(job)} of 300`);
    t.same(signer.lastBatch, { size: 300, here: 300 - byWorkersIn(job), byWorkers: byWorkersIn(job), stalled: 0 });
  },
);

t.test('a batch larger than one job (2,500 texts: jobs of at most 1,024) comes back whole and in order', async (t) => {
  const { logger } = logs();
  const { signer, jobs } = sharing({ logger });
  t.teardown(() => signer.close());
  await signer.ready();
  const batch = texts(2500);
  const signatures = signer.signMany(batch);
  t.same(
    jobs.map((j) => j.signedBy.length),
    [1024, 1024, 452],
  );
  t.equal(signatures.length, 2500);
  const encoder = new TextEncoder();
  const bad = batch.filter(
    (x, i) => verifyDetached(encoder.encode(x), signatures[i] as Uint8Array, key.publicKey) !== 'valid',
  );
  t.same(bad, [], 'each signature verifies over its own text');
  t.ok(
    jobs.every((j) => byWorkersIn(j) > 0),
    'the worker signed in every job',
  );
  t.equal(signer.jobsQueuedToWorkers, 0, 'the worker finished every job it was sent');
});

t.test('small batches, and a signer without workers, sign on this thread and start no worker', async (t) => {
  const { logger } = logs();
  const pooled = new ParallelSigner({ seed: key.seed, workers: 2, logger, minBatch: 50 });
  t.teardown(() => pooled.close());
  const batch = texts(49);
  t.same(buffers(pooled.signMany(batch)), expected(batch));
  t.equal(pooled.liveWorkerCount, 0, 'below minBatch: no worker started');
  t.equal(pooled.lastBatch, null);
  t.same(pooled.totals, { here: 49, byWorkers: 0, stalled: 0 });

  const alone = new ParallelSigner({ seed: key.seed, workers: 0, logger, minBatch: 2 });
  const big = texts(300);
  t.same(buffers(alone.signMany(big)), expected(big));
  t.equal(alone.liveWorkerCount, 0, 'workers: 0 starts none');
  await alone.close();
  t.throws(
    () => new ParallelSigner({ seed: key.seed, workers: 1, logger, stallMs: Number.NaN }),
    /stallMs must be a finite number/,
  );
});

t.test('the first large batch starts the workers, and they take part in it once up', async (t) => {
  const { logger } = logs();
  const { signer, jobs } = sharing({ logger });
  t.teardown(() => signer.close());
  // No ready(): the batch is handed out while the worker is still loading (the republish at start).
  const first = texts(40);
  t.same(buffers(signer.signMany(first)), expected(first));
  t.equal(signer.liveWorkerCount, 1, 'the worker was started by it');
  t.ok(byWorkersIn(jobs[0] as SignJob) > 0, 'and signed part of it');
});

t.test(
  'a worker that claims a text and hangs: that text is signed here after stallMs, the workers start again',
  async (t) => {
    const { signer, lines } = claimsAndFails('sign-worker-stalls.ts', 50);
    t.teardown(() => signer.close());
    await signer.ready();
    const batch = texts(100);
    t.same(buffers(signer.signMany(batch)), expected(batch), 'no signature lost or wrong');
    t.same(signer.lastBatch, { size: 100, here: 100, byWorkers: 0, stalled: 1 });
    t.equal(signer.liveWorkerCount, 0, 'the workers were stopped');
    await new Promise((r) => setImmediate(r));
    t.match(
      lines.find((l) => l.msg.startsWith('a signing worker did not finish')),
      { level: 40, stalled: 1, failuresInARow: 1 },
      'a warning says so',
    );
    const next = texts(100, '+');
    t.same(buffers(signer.signMany(next)), expected(next), 'the next batch: complete');
    t.equal(signer.liveWorkerCount, 0, 'it started a worker again, which hung again and was stopped');
    t.equal(signer.totals.stalled, 2);
  },
);

t.test(
  'a worker that dies mid-job: its text is signed here; after 3 failures in a row the main thread signs alone',
  async (t) => {
    const { signer, lines } = claimsAndFails('sign-worker-exits.ts', 200);
    t.teardown(() => signer.close());
    for (let round = 1; round <= 3; round++) {
      const batch = texts(30, `#${round}`);
      t.same(buffers(signer.signMany(batch)), expected(batch), `batch ${round} complete`);
      t.equal(signer.lastBatch?.stalled, 1, `batch ${round}: the text the worker took was signed here`);
    }
    await new Promise((r) => setImmediate(r));
    t.match(lines.at(-1), { level: 50, failuresInARow: 3 }, 'the third failure in a row is an error');
    t.match(lines.at(-1)?.msg, /signing on the main thread only from now on/);
    const after = texts(30, '!');
    t.same(buffers(signer.signMany(after)), expected(after));
    t.equal(signer.liveWorkerCount, 0, 'no worker started any more');
    t.same(signer.lastBatch?.stalled, 1, 'that batch was not shared (lastBatch is still the third)');
  },
);

t.test('a worker that never takes its jobs is sent at most 4; the rest is signed here', async (t) => {
  const { logger } = logs();
  const signer = new ParallelSigner({
    seed: key.seed,
    workers: 1,
    logger,
    minBatch: 8,
    workerModule: new URL('./helpers/sign-worker-ignores.ts', import.meta.url),
  });
  t.teardown(() => signer.close());
  await signer.ready();
  const batch = texts(6 * 1024);
  const signatures = signer.signMany(batch);
  const encoder = new TextEncoder();
  t.equal(
    batch.filter((x, i) => verifyDetached(encoder.encode(x), signatures[i] as Uint8Array, key.publicKey) !== 'valid')
      .length,
    0,
    'all 6,144 signed and valid',
  );
  t.equal(signer.jobsQueuedToWorkers, 4, 'jobs 5 and 6 were not sent to it');
  t.same(signer.lastBatch, { size: 6144, here: 6144, byWorkers: 0, stalled: 0 });
});

t.test('after close, batches are signed here; close twice is fine', async (t) => {
  const { logger, lines } = logs();
  const signer = new ParallelSigner({ seed: key.seed, workers: 1, logger, minBatch: 8 });
  await signer.ready();
  await signer.close();
  await signer.close();
  const batch = texts(20);
  t.same(buffers(signer.signMany(batch)), expected(batch));
  t.equal(signer.liveWorkerCount, 0);
  await signer.ready();
  t.equal(signer.liveWorkerCount, 0, 'ready() after close starts nothing');
  t.notOk(
    lines.some((l) => l.level >= 40),
    'closing is neither a warning nor an error',
  );
});

t.test('DesiredPublisher signing a wave in parallel: every desired state verifies for its device', async (t) => {
  const store = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => store.close());
  const now = () => new Date('2026-12-06T00:00:00.000Z');
  const ids = Array.from({ length: 1100 }, (_, i) => `cam-${i}`);
  store.transaction(() => {
    for (const id of ids)
      store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: now().toISOString() });
  });
  const { logger } = logs();
  const { signer: signing, jobs } = sharing({ logger, minBatch: 50 });
  t.teardown(() => signing.close());
  const publisher = new DesiredPublisher({
    store,
    topics: createTopics(),
    signer: signerFor(key, { fast: true }),
    now,
    signMany: (batch) => signing.signMany(batch),
  });
  const messages = publisher.prepare(ids);
  t.equal(messages.length, 1100);
  t.same(jobs, [], 'nothing signed while preparing: a payload is signed when the publisher takes it');
  const payloads = ids.map((_, i) => messages.payload(i));
  t.same(
    jobs.map((j) => j.signedBy.length),
    [1024, 76],
    'handed to the signer in batches of 1,024',
  );
  t.ok(
    jobs.every((j) => byWorkersIn(j) > 0),
    'the worker signed in both',
  );
  const policy = { keys: [key], threshold: 1 };
  const wrong = ids.flatMap((id, i) => {
    const state = verifyDesired(decodeDesiredMessage(payloads[i] as Buffer), policy, { deviceId: id, lastSeq: 0 });
    return messages.topic(i) === createTopics().desired(id) && state.seq === 1 ? [] : [id];
  });
  t.same(wrong, [], 'each verifies with the coordinator key, for its own device, on its own topic, seq 1');
});
