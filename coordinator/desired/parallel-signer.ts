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
  signEach,
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
  /** How long a job waits for the texts workers claimed before signing them here (default 1,000 ms). */
  stallMs?: number;
  /** Tests: the caller's thread's signing function (default node:crypto with `seed`). */
  signHere?: (message: Uint8Array) => Uint8Array;
  /** Tests: the worker module (default sign-worker next to this one). */
  workerModule?: URL;
  /** Tests: called with each job once the workers have it, before this thread claims any text. */
  onJob?: (job: SignJob) => void;
}

/** Who signed (diagnostics, bench:wave and tests). */
export interface SigningStats {
  /** Signed on the caller's thread, including texts a stalled worker had claimed. */
  here: number;
  byWorkers: number;
  /** Texts a worker claimed and did not sign in time. */
  stalled: number;
}

/**
 * Texts per job shared with the workers: its shared memory is ~1.5 MB, not a wave's ~13 MB
 * (desired-publisher.ts also hands them over in batches of this size).
 */
export const SIGN_BATCH_TEXTS = 1_024;
/**
 * Jobs a worker may have been sent and not finished before it is sent no more: one that fell
 * behind, or hangs outside a job, holds at most this many jobs' shared memory.
 */
const MAX_QUEUED_JOBS = 4;
/** Failures in a row (a worker gone, or a job it did not finish in time) before signing alone. */
const MAX_FAILURES = 3;

/** The worker entry next to this module: .ts when running from source (tests), .js once compiled. */
const WORKER_MODULE = new URL(`./sign-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url);

interface Slot {
  worker: Worker;
  /** Jobs sent to it. */
  posted: number;
  /** [0]: jobs it is done with (it counts them itself, in shared memory). */
  finished: Int32Array;
}

/**
 * Signs a batch of texts with the coordinator's key on the caller's thread and on worker threads
 * at once, and returns when every text is signed: synchronously, because the caller is the
 * publisher taking a message's payload (desired-publisher.ts, OrderedPublisher), which hands the
 * messages to the broker in the order they were handed over after their commit (PlanExecutor).
 *
 * Why: a 9,000-device wave is 9,000 Ed25519 signatures, about half of the coordinator's own time
 * to start it (~0.4 of ~0.8 s on the 2-core bench machine; BENCHMARKS.md, issue 16, 2026-12-06
 * night), all on one core while the others idle. Sharing the work (sign-job.ts): the threads claim
 * texts one by one from shared memory, so the caller never waits for a worker's share, only for
 * the one text each worker is signing when the last is claimed, and for at most `stallMs` per job:
 * what a worker claimed and did not sign by then (gone, or starved on a loaded machine) is signed
 * here, and the workers are started again. Workers start at the first large batch and take part
 * as soon as they are up. Ed25519 is deterministic: the signatures are the same whichever thread
 * makes them.
 */
export class ParallelSigner {
  private readonly signHere: (message: Uint8Array) => Uint8Array;
  private readonly minBatch: number;
  private readonly stallMs: number;
  private slots: (Slot | null)[] | null = null;
  private failures = 0;
  private closed = false;
  /** Who signed the last batch of at least `minBatch` texts. */
  lastBatch: (SigningStats & { size: number }) | null = null;
  /** Who signed everything so far. */
  readonly totals: SigningStats = { here: 0, byWorkers: 0, stalled: 0 };

  constructor(private readonly options: ParallelSignerOptions) {
    const stallMs = options.stallMs ?? 1_000;
    if (!Number.isFinite(stallMs) || stallMs < 0) {
      throw new RangeError(`stallMs must be a finite number of milliseconds >= 0, got ${stallMs}`);
    }
    this.stallMs = stallMs;
    this.signHere = options.signHere ?? createFastSigner(options.seed);
    this.minBatch = Math.max(2, options.minBatch ?? 256);
  }

  /** The signatures of `texts` (over their UTF-8 bytes), in order. */
  signMany(texts: readonly string[]): Uint8Array[] {
    let slots = texts.length >= this.minBatch ? this.liveSlots() : [];
    if (slots.length === 0) {
      this.totals.here += texts.length;
      return signEach(texts, this.signHere);
    }
    const stats = { size: texts.length, here: 0, byWorkers: 0, stalled: 0 };
    const out: Uint8Array[] = [];
    for (let from = 0; from < texts.length; from += SIGN_BATCH_TEXTS) {
      const chunk = texts.slice(from, from + SIGN_BATCH_TEXTS);
      const takers = slots.filter((s) => s.posted - Atomics.load(s.finished, 0) < MAX_QUEUED_JOBS);
      if (takers.length === 0) {
        out.push(...signEach(chunk, this.signHere));
        stats.here += chunk.length;
        continue;
      }
      const stalledBefore = stats.stalled;
      const hereBefore = stats.here;
      out.push(...this.signJob(chunk, takers, stats));
      if (stats.stalled > stalledBefore) {
        // A worker that claimed a text and did not sign it may never take another job: all go,
        // the rest of this batch is signed here, and the next large batch starts new ones.
        this.fail('a signing worker did not finish a text in time; workers start again', {
          stalled: stats.stalled - stalledBefore,
          stallMs: this.stallMs,
        });
        void this.stop();
        slots = [];
      } else if (stats.here - hereBefore < chunk.length) {
        this.failures = 0; // a worker signed part of this job: they work
      }
    }
    stats.byWorkers = texts.length - stats.here;
    this.totals.here += stats.here;
    this.totals.byWorkers += stats.byWorkers;
    this.totals.stalled += stats.stalled;
    this.lastBatch = stats;
    return out;
  }

  /** Starts the workers and resolves once each has answered or is gone (tests, bench:wave). */
  async ready(): Promise<void> {
    await Promise.all(
      this.liveSlots().map(
        ({ worker }) =>
          new Promise<void>((resolve) => {
            const done = () => {
              worker.off('message', done);
              worker.off('exit', done);
              resolve();
            };
            worker.on('message', done);
            worker.on('exit', done);
            worker.postMessage('ping');
          }),
      ),
    );
  }

  /** Workers started and not gone. */
  get liveWorkerCount(): number {
    return (this.slots ?? []).filter((s) => s !== null).length;
  }

  /** Jobs sent to workers and not finished by them (bounded by MAX_QUEUED_JOBS each). */
  get jobsQueuedToWorkers(): number {
    return (this.slots ?? []).reduce((n, s) => n + (s ? s.posted - Atomics.load(s.finished, 0) : 0), 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  /** One job: this thread and `takers` claim its texts; counts what was signed here and stalled. */
  private signJob(texts: readonly string[], takers: Slot[], stats: SigningStats): Uint8Array[] {
    const job = createSignJob(texts);
    for (const slot of takers) {
      slot.posted++;
      slot.worker.postMessage(job);
    }
    this.options.onJob?.(job);
    signClaimed(job, this.signHere, SIGNED_HERE);
    // Every text is claimed now: wait for those a worker is still signing, until one deadline.
    const deadline = performance.now() + this.stallMs;
    for (let i = 0; i < texts.length; i++) {
      if (Atomics.load(job.signedBy, i) !== 0) continue;
      const left = deadline - performance.now();
      if (left > 0 && Atomics.wait(job.signedBy, i, 0, left) !== 'timed-out') continue;
      if (Atomics.load(job.signedBy, i) !== 0) continue;
      stats.stalled++;
      signOne(job, i, this.signHere, SIGNED_HERE);
    }
    const out: Uint8Array[] = [];
    for (let i = 0; i < jobSize(job); i++) {
      if (job.signedBy[i] === SIGNED_HERE) stats.here++;
      out.push(job.signatures.slice(i * SIGNATURE_BYTES, (i + 1) * SIGNATURE_BYTES));
    }
    return out;
  }

  /**
   * The workers to share a large batch with: started at the first one (they take their first job
   * as soon as they are up), a gone one replaced, none once MAX_FAILURES happened in a row.
   */
  private liveSlots(): Slot[] {
    if (this.closed || this.options.workers <= 0 || this.failures >= MAX_FAILURES) return [];
    if (this.slots === null) this.slots = Array.from({ length: this.options.workers }, () => null);
    for (let number = 0; number < this.slots.length; number++) {
      if (this.slots[number] === null) this.slots[number] = this.start(number);
    }
    return this.slots.filter((s): s is Slot => s !== null);
  }

  private start(number: number): Slot {
    const finished = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(this.options.workerModule ?? WORKER_MODULE, {
      workerData: { seed: this.options.seed, number, finished },
    });
    worker.unref(); // never what keeps the coordinator running
    const slot: Slot = { worker, posted: 0, finished };
    const gone = (why: string) => {
      if (this.slots?.[number] !== slot) return; // stopped on purpose, or already replaced
      this.slots[number] = null;
      this.fail('signing worker gone', { worker: number, why });
    };
    worker.on('error', (err: Error) => gone(err.message));
    worker.on('exit', (code) => gone(`exited with code ${code}`));
    return slot;
  }

  private fail(what: string, details: Record<string, unknown>): void {
    this.failures++;
    const alone = this.failures >= MAX_FAILURES;
    const log = { ...details, failuresInARow: this.failures };
    if (alone) this.options.logger.error(log, `${what}; signing on the main thread only from now on`);
    else this.options.logger.warn(log, `${what}; signing on the main thread meanwhile`);
    if (alone) void this.stop();
  }

  private async stop(): Promise<void> {
    const slots = this.slots ?? [];
    this.slots = null;
    await Promise.all(slots.map((s) => s?.worker.terminate()));
  }
}
