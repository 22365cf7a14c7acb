import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ioError, writeFileAtomic } from '../../shared/fs-atomic.js';
import type { Logger } from '../../shared/logger.js';
import { type Metrics, MetricsSchema } from '../../shared/messages.js';
import { MESSAGE_BUDGET_BYTES } from '../../shared/metrics/limits.js';
import { mergeOrder, mergeWindows, windowEndMs, windowStartMs } from './merge-windows.js';

/**
 * The durable outbox of closed metrics windows: one file per summary in a directory, named by a
 * zero-padded sequence number, written atomically (tmp, fsync, rename). The agent sends the
 * oldest and removes it once the broker acknowledged it. Bounded: beyond `maxWindows` files the
 * adjacent pair with the smallest combined span is merged into one coarser window (nothing lost
 * but time resolution); when no pair can merge within the limits, the oldest window is dropped
 * and counted in the newest message's `dropped` (its windows and its observations).
 *
 * A file holds `{ firstSeq, message }`: a merged window is written under the later sequence
 * number with the earlier one's firstSeq, then the earlier file is removed. A crash between the
 * two leaves both; `init` removes every file a later file's [firstSeq, seq] covers, so a window is
 * never sent twice.
 */

const SUFFIX = '.json';
/** Corrupt files moved aside and kept for a person to look at; older ones are removed. */
const KEEP_CORRUPT = 5;

interface Entry {
  seq: number;
  firstSeq: number;
  startMs: number;
  endMs: number;
}

export interface MetricsOutboxOptions {
  dir: string;
  /** Files kept at most (the agent config's `metrics.maxPendingWindows`, at least 2). */
  maxWindows: number;
  logger?: Logger;
  budgetBytes?: number;
}

function fileName(seq: number): string {
  return `${String(seq).padStart(12, '0')}${SUFFIX}`;
}

export class MetricsOutbox {
  private entries: Entry[] = [];
  private nextSeq = 1;
  /** Drops found by init (corrupt files), added to the next message written. */
  private pending = { observations: 0, windows: 0 };
  /** Mutations run one at a time (add, remove and init each span several file operations). */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly dir: string;
  private readonly maxWindows: number;
  private readonly budgetBytes: number;
  private readonly logger: Logger | undefined;

  constructor(options: MetricsOutboxOptions) {
    if (!Number.isInteger(options.maxWindows) || options.maxWindows < 2)
      throw new RangeError(`maxWindows must be an integer >= 2, got ${options.maxWindows}`);
    this.dir = options.dir;
    this.maxWindows = options.maxWindows;
    this.budgetBytes = options.budgetBytes ?? MESSAGE_BUDGET_BYTES;
    this.logger = options.logger;
  }

  /** Summaries waiting to be sent. */
  get size(): number {
    return this.entries.length;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private file(seq: number): string {
    return path.join(this.dir, fileName(seq));
  }

  /** Creates the directory if needed and loads what a previous run left. */
  init(): Promise<void> {
    return this.serial(async () => {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o750 }).catch((err: unknown) => {
        throw ioError(err, this.dir);
      });
      const names = (await fs.readdir(this.dir).catch((err: unknown) => Promise.reject(ioError(err, this.dir)))).sort();
      const loaded: Entry[] = [];
      const corrupt: string[] = [];
      for (const name of names) {
        if (name.endsWith('.tmp')) {
          // A write cut short by a crash: its target was never renamed into place.
          await fs.rm(path.join(this.dir, name), { force: true });
          continue;
        }
        if (name.endsWith('.corrupt')) {
          corrupt.push(name);
          continue;
        }
        const m = /^(\d{12})\.json$/.exec(name);
        if (!m) continue;
        const seq = Number(m[1]);
        const entry = await this.load(seq);
        if (entry) loaded.push(entry);
        else {
          const aside = `${name}.corrupt`;
          await fs.rename(this.file(seq), path.join(this.dir, aside));
          corrupt.push(aside);
          this.pending.windows++;
          this.logger?.warn(
            { file: path.join(this.dir, aside) },
            'metrics outbox: a corrupt summary file was moved aside and counted as a dropped window',
          );
        }
        this.nextSeq = Math.max(this.nextSeq, seq + 1);
      }
      corrupt.sort();
      for (const name of corrupt.slice(0, Math.max(0, corrupt.length - KEEP_CORRUPT)))
        await fs.rm(path.join(this.dir, name), { force: true });
      // A merge interrupted after writing the merged file: it covers the files it was made of.
      loaded.sort((a, b) => a.seq - b.seq);
      const kept: Entry[] = [];
      for (const e of loaded) {
        while (kept.length > 0 && (kept[kept.length - 1] as Entry).seq >= e.firstSeq) {
          const covered = kept.pop() as Entry;
          await fs.rm(this.file(covered.seq), { force: true });
        }
        kept.push(e);
      }
      this.entries = kept;
    });
  }

  private async read(seq: number): Promise<{ firstSeq: number; message: Metrics } | null> {
    let text: string;
    try {
      text = await fs.readFile(this.file(seq), 'utf8');
    } catch (err) {
      throw ioError(err, this.file(seq));
    }
    try {
      const raw = JSON.parse(text) as { firstSeq?: unknown; message?: unknown };
      const parsed = MetricsSchema.safeParse(raw.message);
      const firstSeq = raw.firstSeq;
      if (
        !parsed.success ||
        typeof firstSeq !== 'number' ||
        !Number.isInteger(firstSeq) ||
        firstSeq < 1 ||
        firstSeq > seq
      )
        return null;
      return { firstSeq, message: parsed.data };
    } catch {
      return null;
    }
  }

  private async load(seq: number): Promise<Entry | null> {
    const r = await this.read(seq);
    if (!r) return null;
    return { seq, firstSeq: r.firstSeq, startMs: windowStartMs(r.message), endMs: windowEndMs(r.message) };
  }

  private async write(entry: Entry, message: Metrics): Promise<void> {
    await writeFileAtomic(this.file(entry.seq), JSON.stringify({ firstSeq: entry.firstSeq, message }), { mode: 0o640 });
  }

  private async message(seq: number): Promise<Metrics> {
    const r = await this.read(seq);
    if (!r) throw ioError(new Error('the file changed under the agent and no longer holds a summary'), this.file(seq));
    return r.message;
  }

  /** Stores a closed window (the aggregator's message), merging or dropping old ones beyond maxWindows. */
  add(message: Metrics): Promise<void> {
    return this.serial(async () => {
      const seq = this.nextSeq++;
      const withPending: Metrics =
        this.pending.observations + this.pending.windows === 0
          ? message
          : {
              ...message,
              dropped: {
                observations: (message.dropped?.observations ?? 0) + this.pending.observations,
                windows: (message.dropped?.windows ?? 0) + this.pending.windows,
              },
            };
      const entry: Entry = { seq, firstSeq: seq, startMs: windowStartMs(message), endMs: windowEndMs(message) };
      await this.write(entry, withPending);
      this.pending = { observations: 0, windows: 0 };
      this.entries.push(entry);
      while (this.entries.length > this.maxWindows) await this.shrink();
    });
  }

  /** Merges the best adjacent pair, or drops the oldest window when none can merge. */
  private async shrink(): Promise<void> {
    // The oldest window is never merged or dropped: it is the one being sent, or the one that was
    // being sent when the agent last stopped, and the coordinator may hold it already (committed,
    // its PUBACK lost). Merged into the next, it would come back under a key the coordinator has
    // stored and be ignored as a copy, losing the next window's observations with it.
    const offset = 1;
    const candidates = this.entries.slice(offset);
    for (const i of mergeOrder(candidates.map((e) => ({ startMs: e.startMs, endMs: e.endMs })))) {
      const a = candidates[i] as Entry;
      const b = candidates[i + 1] as Entry;
      const merged = mergeWindows(await this.message(a.seq), await this.message(b.seq), this.budgetBytes);
      if (!merged) continue;
      const entry: Entry = {
        seq: b.seq,
        firstSeq: a.firstSeq,
        startMs: windowStartMs(merged),
        endMs: windowEndMs(merged),
      };
      await this.write(entry, merged);
      await fs.rm(this.file(a.seq), { force: true });
      this.entries.splice(offset + i, 2, entry);
      return;
    }
    const oldest = candidates[0] as Entry;
    const lost = await this.message(oldest.seq);
    const newest = this.entries[this.entries.length - 1] as Entry;
    const target = await this.message(newest.seq);
    // Counted first, removed second: a crash in between over-reports a drop rather than hiding one.
    await this.write(newest, {
      ...target,
      dropped: {
        observations:
          (target.dropped?.observations ?? 0) +
          (lost.dropped?.observations ?? 0) +
          lost.series.reduce((n, s) => n + s.count, 0),
        windows: (target.dropped?.windows ?? 0) + (lost.dropped?.windows ?? 0) + lost.windowsMerged,
      },
    });
    await fs.rm(this.file(oldest.seq), { force: true });
    this.entries.splice(offset, 1);
    this.logger?.warn(
      { windowStart: lost.windowStart },
      'metrics outbox: full and no windows could merge; dropped the oldest window (counted)',
    );
  }

  /** The next summary to send (the oldest), or undefined when there is none. */
  oldest(): Promise<{ seq: number; message: Metrics } | undefined> {
    return this.serial(async () => {
      const first = this.entries[0];
      if (!first) return undefined;
      return { seq: first.seq, message: await this.message(first.seq) };
    });
  }

  /** Removes a summary the broker acknowledged. */
  remove(seq: number): Promise<void> {
    return this.serial(async () => {
      const i = this.entries.findIndex((e) => e.seq === seq);
      if (i < 0) return;
      await fs.rm(this.file(seq), { force: true });
      this.entries.splice(i, 1);
    });
  }
}
