import { ownEntry } from '../../shared/id-record.js';
import type { Logger } from '../../shared/logger.js';
import type { Reported, ReportedModels } from '../../shared/messages.js';
import { PacedFlush } from '../paced-flush.js';
import type { HistoryRecord } from '../store/records.js';
import { type Store, WRITE_BEHIND } from '../store/store.js';
import { StringPool } from '../string-pool.js';
import { type KeptModels, keepModels, keptModel, NO_MODELS, reportedModels, sameModelState } from './kept-models.js';

export interface ReportRecorderDeps {
  store: Store;
  now: () => Date;
  logger: Logger;
  /** Written at most this often under load (group commit); on the next turn when quiet. */
  everyMs: number;
}

/**
 * Devices' reports, written behind: each device's last report and its history rows go to SQLite
 * in one transaction per flush (thousands of reports per second would otherwise be thousands of
 * transactions), without an fsync of its own (WRITE_BEHIND): a kill -9 loses none of them, a
 * power loss at most those since the last durable commit. Rollout decisions do not wait for it:
 * they have their own durable transaction, and agents send their current report again when they
 * reconnect. The models of each device's newest report are kept in memory (`lastModels`), so
 * readers never see an older one than the rollout engine decided on.
 *
 * Only the models, not the whole report: the rest (its id, seq, time, trust, refusals) is read
 * from the store by the one command that shows it (`device show`), and keeping whole reports was
 * the largest owner of the coordinator's heap at 50,000 devices (~28 MB; BENCHMARKS.md,
 * 2026-12-07 "memory at 50,000"). The whole report still goes to the store. And they are kept
 * compact (kept-models.ts): a fixed-shape object per model, with pooled strings.
 */
export class ReportRecorder {
  private readonly latest = new Map<string, KeptModels>();
  private readonly pool = new StringPool();
  private readonly pending = new Map<string, Reported>();
  private history: HistoryRecord[] = [];
  private readonly writer: PacedFlush;

  constructor(private readonly deps: ReportRecorderDeps) {
    this.writer = new PacedFlush(
      () => this.write(),
      deps.everyMs,
      () => deps.now().getTime(),
    );
  }

  /**
   * What the store holds of an enrolled device (its last report's models; none when it has not
   * reported), read by the caller in its one scan of the devices at start.
   *
   * Why: a device's first report after a start is compared with its stored one, and at a start
   * every device's retained report arrives at once; reading each from the store was ~2 s of the
   * coordinator's thread at 50,000 devices (BENCHMARKS.md, 2026-12-07 afternoon).
   */
  seed(deviceId: string, models: ReportedModels | null | undefined): void {
    this.latest.set(deviceId, models ? keepModels(models, this.pool) : NO_MODELS);
  }

  /**
   * A device was enrolled (committed): it starts from nothing, and its first report is compared
   * with nothing, without reading the store for it.
   */
  enrolled(deviceId: string): void {
    // Anything of an earlier device with this id is here only if it reported (record keeps it).
    if (this.latest.has(deviceId)) this.forget(deviceId);
    this.latest.set(deviceId, NO_MODELS);
  }

  /**
   * Records a report: a history row per model whose report says something new (sameModelState:
   * its state, versions, rollout, attempt or error changed; not its progress or time alone, or a
   * 12-second download's progress reports would be all of `device show`'s last 50 rows). Returns
   * false for a device that is not enrolled (removed while connected): nothing is recorded.
   */
  record(deviceId: string, report: Reported): boolean {
    const kept = this.latest.get(deviceId);
    let stored: ReportedModels | undefined;
    if (!kept) {
      const device = this.deps.store.getDevice(deviceId);
      if (!device) return false;
      stored = device.lastReport?.models;
    }
    const ts = this.deps.now().toISOString();
    for (const [model, m] of Object.entries(report.models)) {
      const b = kept ? keptModel(kept, model) : ownEntry(stored, model);
      if (b && sameModelState(b, m)) continue;
      this.history.push({
        deviceId,
        model,
        state: m.state,
        version: m.version,
        rolloutId: m.rolloutId,
        error: m.error,
        ts,
      });
    }
    this.latest.set(deviceId, keepModels(report.models, this.pool));
    this.pending.set(deviceId, report);
    this.writer.schedule();
    return true;
  }

  /**
   * The models of the device's newest report, also while it waits to be written (a new record
   * each call; empty for a device seeded or enrolled without one); undefined when none is known
   * here.
   */
  lastModels(deviceId: string): ReportedModels | undefined {
    const kept = this.latest.get(deviceId);
    return kept ? reportedModels(kept) : undefined;
  }

  /**
   * Drops what is kept of a removed device (its newest report, and what waits to be written), so
   * a device enrolled later with the same id starts from nothing of the old one's.
   */
  forget(deviceId: string): void {
    this.latest.delete(deviceId);
    this.pending.delete(deviceId);
    if (this.history.some((h) => h.deviceId === deviceId)) {
      this.history = this.history.filter((h) => h.deviceId !== deviceId);
    }
  }

  /** Writes what is waiting now (a command is about to read the store). */
  flushIfScheduled(): void {
    this.writer.runIfScheduled();
  }

  /** Writes what is waiting (on the way out). */
  flush(): void {
    this.writer.run();
  }

  private write(): void {
    if (this.pending.size === 0 && this.history.length === 0) return;
    const { store, logger } = this.deps;
    const reports = [...this.pending];
    const history = this.history;
    this.pending.clear();
    this.history = [];
    const ts = this.deps.now().toISOString();
    try {
      store.transaction(() => {
        const gone = new Set<string>();
        for (const [deviceId, report] of reports) {
          try {
            store.setDeviceReport(deviceId, report, ts);
          } catch {
            gone.add(deviceId); // removed while connected: nothing to record
          }
        }
        const rows = gone.size > 0 ? history.filter((h) => !gone.has(h.deviceId)) : history;
        if (rows.length > 0) store.appendHistory(rows);
      }, WRITE_BEHIND);
    } catch (err) {
      logger.error({ err: (err as Error).message, reports: reports.length }, 'recording reports failed');
    }
  }
}

/**
 * The stored devices passed through, each seeding `recorder` with its last report's models: the
 * start's one scan of the devices serves both the recorder and the fleet tally.
 */
export function* seedReports<D extends { id: string; lastReport: Reported | null }>(
  devices: Iterable<D>,
  recorder: ReportRecorder,
): Generator<D> {
  for (const d of devices) {
    recorder.seed(d.id, d.lastReport?.models);
    yield d;
  }
}
