import { Worker } from 'node:worker_threads';
import { createFastSigner } from '../../shared/ed25519.js';
import type { Logger } from '../../shared/logger.js';
import {
  createSignJob,
  jobSize,
  SIGNATURE_BYTES,
  SIGNED_HERE,
  type SignJob,
  signClaimed,
  signOne,
} from './sign-job.js';

export interface ParallelSignerOptions {
  /** The coordinator key's 32-byte Ed25519 seed (RFC 8032 section 5.1.5). */
  seed: Uint8Array;
  /** Worker threads that sign beside the caller's thread (0: the caller's thread only). */
  workers: number;
  logger: Logger;
  /** Batches smaller than this are signed on the caller's thread alone (default 256). */
  minBatch?: number;
  /** How long to wait for a text a worker claimed before signing it here instead (default 1,000 ms). */
  stallMs?: number;
  /** Tests: the caller's thread's signing function (default node:crypto with `seed`). */
  signHere?: (message: Uint8Array) => Uint8Array;
  /** Tests: the worker module (default sign-worker next to this one). */
  workerModule?: URL;
  /** Tests: called with each job once the workers have it, before this thread claims any text. */
  onJob?: (job: SignJob) => void;
}

/** Who signed the last batch (diagnostics and tests). */
export interface BatchStats {
  size: number;
  /** Signed on the caller's thread, including texts a stalled worker had claimed. */
  here: number;
  byWorkers: number;
  /** Texts a worker claimed and did not sign within `stallMs`. */
  stalled: number;
}

/** Texts per job shared with the workers (a batch larger than this is several jobs in a row). */
const JOB_TEXTS = 1_024;

/** The worker entry next to this module: .ts when running from source (tests), .js once compiled. */
const WORKER_MODULE = new URL(`./sign-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url);

/**
 * Signs a batch of texts with the coordinator's key on the caller's thread and on worker threads
 * at once, and returns when every text is signed: synchronously, because the caller is inside the
 * transaction that issued the texts' seqs (desired-publisher.ts) and the order of what is
 * published after the commit must not change (PlanExecutor).
 *
 * Why: a 9,000-device wave is 9,000 Ed25519 signatures, about half of the coordinator's time to
 * start it (~0.5 of ~1 s on the 2-core bench machine; BENCHMARKS.md, issue 16, 2026-12-06 night),
 * all on one core while the others idle. Sharing the work (sign-job.ts): the threads claim texts
 * one by one from shared memory, so the caller never waits for a worker's share, only for the one
 * text each worker is signing when the last is claimed; a worker that does not finish that within
 * `stallMs` (gone, or starved on a loaded machine) costs that wait once and the text is signed
 * here. Workers start at the first large batch (that batch is signed here while they start), so a
 * coordinator that never issues one runs none. Ed25519 is deterministic: the signatures are the
 * same whichever thread makes them.
 */
export class ParallelSigner {
  private readonly signHere: (message: Uint8Array) => Uint8Array;
  private readonly minBatch: number;
  private readonly stallMs: number;
  private workers: (Worker | null)[] | null = null;
  private closed = false;
  /** Who signed the last batch of at least `minBatch` texts. */
  lastBatch: BatchStats | null = null;

  constructor(private readonly options: ParallelSignerOptions) {
    this.signHere = options.signHere ?? createFastSigner(options.seed);
    this.minBatch = Math.max(2, options.minBatch ?? 256);
    this.stallMs = options.stallMs ?? 1_000;
  }

  /** The signatures of `texts` (over their UTF-8 bytes), in order. */
  signMany(texts: readonly string[]): Uint8Array[] {
    let workers = this.liveWorkers(texts.length);
    if (workers.length === 0) {
      const encoder = new TextEncoder();
      return texts.map((t) => this.signHere(encoder.encode(t)));
    }
    const stats: BatchStats = { size: texts.length, here: 0, byWorkers: 0, stalled: 0 };
    const out: Uint8Array[] = [];
    // In jobs of at most JOB_TEXTS: the shared memory of a job is ~1.5 MB, not a wave's ~13 MB.
    for (let from = 0; from < texts.length; from += JOB_TEXTS) {
      const chunk = texts.slice(from, from + JOB_TEXTS);
      if (workers.length === 0) {
        const encoder = new TextEncoder();
        for (const t of chunk) out.push(this.signHere(encoder.encode(t)));
        stats.here += chunk.length;
        continue;
      }
      out.push(...this.signJob(chunk, workers, stats));
      // A hung worker would never take another job and keep every job sent to it: all go, the
      // rest of this batch is signed here, and the next large batch starts new ones.
      if (stats.stalled > 0) {
        void this.stop();
        workers = [];
      }
    }
    stats.byWorkers = texts.length - stats.here;
    if (stats.stalled > 0) {
      this.options.logger.warn(
        { stalled: stats.stalled, stallMs: this.stallMs },
        'a signing worker did not finish in time; those texts were signed on the main thread, and the workers start again',
      );
    }
    this.lastBatch = stats;
    return out;
  }

  /** One job: this thread and `workers` claim its texts; counts what was signed here and stalled. */
  private signJob(texts: readonly string[], workers: Worker[], stats: BatchStats): Uint8Array[] {
    const job = createSignJob(texts);
    for (const w of workers) w.postMessage(job);
    this.options.onJob?.(job);
    signClaimed(job, this.signHere, SIGNED_HERE);
    // Every text is claimed now; wait only for those a worker is still signing.
    for (let i = 0; i < texts.length; i++) {
      if (Atomics.load(job.signedBy, i) !== 0) continue;
      if (Atomics.wait(job.signedBy, i, 0, this.stallMs) === 'timed-out' && Atomics.load(job.signedBy, i) === 0) {
        stats.stalled++;
        signOne(job, i, this.signHere, SIGNED_HERE);
      }
    }
    const out: Uint8Array[] = [];
    for (let i = 0; i < jobSize(job); i++) {
      if (job.signedBy[i] === SIGNED_HERE) stats.here++;
      out.push(job.signatures.slice(i * SIGNATURE_BYTES, (i + 1) * SIGNATURE_BYTES));
    }
    return out;
  }

  /** Starts the workers and resolves once each answers (tests; signMany never waits for them). */
  async ready(): Promise<void> {
    this.liveWorkers(Number.POSITIVE_INFINITY);
    await Promise.all(
      (this.workers ?? []).map(
        (w) =>
          w &&
          new Promise<void>((resolve) => {
            // Answered, or gone (then it is no longer live: `liveWorkerCount` says so).
            w.once('message', () => resolve());
            w.once('exit', () => resolve());
            w.postMessage('ping');
          }),
      ),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  private async stop(): Promise<void> {
    const workers = this.workers ?? [];
    this.workers = null;
    await Promise.all(workers.map((w) => w?.terminate()));
  }

  /** Workers started and not gone. */
  get liveWorkerCount(): number {
    return (this.workers ?? []).filter((w) => w !== null).length;
  }

  /** The workers that take part in a batch of `size` texts (started at the first large one). */
  private liveWorkers(size: number): Worker[] {
    if (size < this.minBatch || this.closed || this.options.workers <= 0) return [];
    if (this.workers === null) {
      this.workers = Array.from({ length: this.options.workers }, (_, number) => this.start(number));
      return []; // still starting: this batch is signed here
    }
    return this.workers.filter((w): w is Worker => w !== null);
  }

  private start(number: number): Worker {
    const worker = new Worker(this.options.workerModule ?? WORKER_MODULE, {
      workerData: { seed: this.options.seed, number },
    });
    worker.unref(); // never what keeps the coordinator running
    const gone = (why: string) => {
      if (this.workers?.[number] !== worker) return;
      this.workers[number] = null;
      if (!this.closed)
        this.options.logger.error({ worker: number, why }, 'signing worker gone; signing on the main thread');
    };
    worker.on('error', (err: Error) => gone(err.message));
    worker.on('exit', (code) => gone(`exited with code ${code}`));
    return worker;
  }
}
