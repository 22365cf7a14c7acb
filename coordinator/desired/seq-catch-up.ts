import type { Logger } from '../../shared/logger.js';
import type { Reported } from '../../shared/messages.js';
import { PacedFlush } from '../paced-flush.js';
import type { PlanExecutor } from '../plan/commit-plan.js';
import { emptyPlan, type WritePlan } from '../plan/write-plan.js';
import type { Store } from '../store/store.js';

/**
 * A device's desired `seq` catching up with what the device already accepted.
 *
 * The coordinator issues every desired state with the device's next seq (kept in SQLite) and the
 * agent refuses one whose seq is not above the last it accepted (E_REPLAY, shared/desired.ts).
 * A database restored from a backup issues seqs the devices took before the backup's moment was
 * left behind: every new desired state would be refused until the counter caught up by itself.
 * Devices report the highest seq they accepted (`seq`) and the last state they refused
 * (`rejected`); when that shows the device ahead of the stored seq, the seq moves past it and the
 * device's current desired state is signed and sent again (through the plan executor, audited).
 *
 * No loop: a catch-up leaves the stored seq above the reported one, so the same report (and a
 * refusal of the new state for any other reason: a signature the device does not trust) decides
 * nothing; another catch-up needs a higher reported seq, and only the coordinator issues those.
 * A device that lies about its seq can only move its own counter, and at most once per
 * CATCH_UP_WINDOW_MS (each catch-up is a durable commit and an audit row).
 */

export type SeqDecision =
  | { kind: 'none' }
  /** Move the stored seq up to `reportedSeq` and send the desired state again (as reportedSeq + 1). */
  | { kind: 'catch_up'; reportedSeq: number; storedSeq: number; reason: 'device_ahead' | 'replay_refused' }
  /** A seq no coordinator issues in practice: believing it would leave no room above it (see MAX_CATCH_UP_SEQ). */
  | { kind: 'implausible'; reportedSeq: number; storedSeq: number };

/**
 * The highest reported seq the coordinator moves up to: 2^52, half of what a seq can reach
 * (Number.MAX_SAFE_INTEGER, the schema's cap). At one desired state per second a device would
 * take 140 million years to get there, so only a broken or hostile device reports more; moving to
 * it would leave that device's counter no room, and a desired state that cannot be signed fails
 * the whole plan it is part of (a channel move for the fleet).
 */
export const MAX_CATCH_UP_SEQ = 2 ** 52;

/** At most one catch-up per device in this window; a later one waits for its end. */
export const CATCH_UP_WINDOW_MS = 60_000;

/**
 * What a report means for the device's stored seq. Pure. Two cases mean the device is ahead:
 * - it accepted a higher seq than the one stored (`seq` > stored);
 * - it accepted the stored seq from another history and refused ours with the same number as a
 *   replay (`seq` == stored and `rejected` is E_REPLAY for the stored seq).
 * Anything else (behind, equal and accepted, a refusal for another reason, a refusal of an older
 * seq already superseded) needs nothing.
 */
export function decideSeqCatchUp(storedSeq: number, report: Pick<Reported, 'seq' | 'rejected'>): SeqDecision {
  const { seq, rejected } = report;
  const oursRefusedAsReplay = rejected?.error.code === 'E_REPLAY' && rejected.seq === storedSeq;
  if (seq < storedSeq || (seq === storedSeq && !oursRefusedAsReplay)) return { kind: 'none' };
  if (seq > MAX_CATCH_UP_SEQ) return { kind: 'implausible', reportedSeq: seq, storedSeq };
  return { kind: 'catch_up', reportedSeq: seq, storedSeq, reason: seq > storedSeq ? 'device_ahead' : 'replay_refused' };
}

/** How long a device's next catch-up must wait (0: now), given when its last one was. Pure. */
export function catchUpWait(lastAtMs: number | undefined, nowMs: number, windowMs: number): number {
  return lastAtMs === undefined ? 0 : Math.max(0, lastAtMs + windowMs - nowMs);
}

/** The write plan of the catch-ups decided in one batch. Pure. */
export function planSeqCatchUp(
  catchUps: readonly { deviceId: string; decision: Extract<SeqDecision, { kind: 'catch_up' }> }[],
): WritePlan {
  const plan = emptyPlan();
  for (const { deviceId, decision } of catchUps) {
    plan.seqFloors.push({ deviceId, seq: decision.reportedSeq });
    plan.audit.push({
      actor: 'coordinator',
      action: 'device.seq_caught_up',
      subject: `device:${deviceId}`,
      details: {
        reportedSeq: decision.reportedSeq,
        storedSeq: decision.storedSeq,
        reason: decision.reason,
        resentAsSeq: decision.reportedSeq + 1,
      },
    });
  }
  return plan;
}

export interface SeqCatchUpDeps {
  store: Store;
  executor: PlanExecutor;
  now: () => Date;
  logger: Logger;
  /** Catch-ups are committed at most this often (after a restore the whole fleet reconnects at once). */
  everyMs: number;
  /** Per device, at most one catch-up in this window (default CATCH_UP_WINDOW_MS). */
  windowMs?: number;
}

/** The shell: reads the stored seq, decides, commits the catch-ups of a batch as one plan. */
export class SeqCatchUp {
  /**
   * Per device, the last reported seq found not ahead. The stored seq only grows, so a report
   * with that seq and no E_REPLAY refusal decides nothing again (see decideSeqCatchUp): it is
   * not looked up, and most reports (a device's several reports per update) cost no query.
   */
  private readonly settled = new Map<string, number>();
  private readonly pending = new Map<string, Pick<Reported, 'seq' | 'rejected'>>();
  /** When each device's last catch-up was committed (ms). */
  private readonly caughtUpAt = new Map<string, number>();
  private retry: { timer: NodeJS.Timeout; atMs: number } | null = null;
  private readonly writer: PacedFlush;

  constructor(private readonly deps: SeqCatchUpDeps) {
    this.writer = new PacedFlush(
      () => this.decide(),
      deps.everyMs,
      () => deps.now().getTime(),
    );
  }

  onReport(deviceId: string, report: Reported): void {
    if (this.settled.get(deviceId) === report.seq && report.rejected?.error.code !== 'E_REPLAY') return;
    this.pending.set(deviceId, { seq: report.seq, rejected: report.rejected });
    this.writer.schedule();
  }

  /** A removed device: nothing known of it outlives it (the id may be enrolled again). */
  forget(deviceId: string): void {
    this.settled.delete(deviceId);
    this.pending.delete(deviceId);
    this.caughtUpAt.delete(deviceId);
  }

  /** Decides what is waiting now and stops waiting for deferred catch-ups (on the way out). */
  flush(): void {
    this.writer.run();
    if (this.retry) clearTimeout(this.retry.timer);
    this.retry = null;
  }

  /** Decides again in `ms` (deferred catch-ups), unless a retry comes sooner already. */
  private retryAfter(nowMs: number, ms: number): void {
    if (this.retry && this.retry.atMs <= nowMs + ms) return;
    if (this.retry) clearTimeout(this.retry.timer);
    const timer = setTimeout(() => {
      this.retry = null;
      this.writer.schedule();
    }, ms);
    timer.unref();
    this.retry = { timer, atMs: nowMs + ms };
  }

  private decide(): void {
    if (this.pending.size === 0) return;
    const { store, logger } = this.deps;
    const nowMs = this.deps.now().getTime();
    const batch = [...this.pending];
    this.pending.clear();
    const catchUps: Parameters<typeof planSeqCatchUp>[0][number][] = [];
    let retryIn = Number.POSITIVE_INFINITY;
    for (const [deviceId, report] of batch) {
      const stored = store.desiredSeq(deviceId);
      if (stored === null) continue; // removed meanwhile
      const decision = decideSeqCatchUp(stored, report);
      if (decision.kind === 'catch_up') {
        const wait = catchUpWait(this.caughtUpAt.get(deviceId), nowMs, this.deps.windowMs ?? CATCH_UP_WINDOW_MS);
        if (wait > 0) {
          // Kept (a newer report replaces it) and decided again once the window is over.
          this.pending.set(deviceId, report);
          retryIn = Math.min(retryIn, wait);
          continue;
        }
        catchUps.push({ deviceId, decision });
      } else if (decision.kind === 'implausible') {
        logger.warn(
          { deviceId, reportedSeq: decision.reportedSeq, storedSeq: stored, max: MAX_CATCH_UP_SEQ },
          `device ${deviceId} reports desired seq ${decision.reportedSeq}, above any the coordinator issues: not followed`,
        );
      }
      // Decided (a catch-up leaves the stored seq above this one too): the same report decides nothing again.
      this.settled.set(deviceId, report.seq);
    }
    if (retryIn !== Number.POSITIVE_INFINITY) this.retryAfter(nowMs, retryIn);
    if (catchUps.length === 0) return;
    try {
      this.deps.executor.commit(planSeqCatchUp(catchUps), this.deps.now().toISOString());
    } catch (err) {
      // Nothing was written: let the devices' next reports decide again.
      for (const { deviceId } of catchUps) this.settled.delete(deviceId);
      logger.error({ err: (err as Error).message, devices: catchUps.length }, 'desired seq catch-up failed');
      return;
    }
    for (const { deviceId, decision } of catchUps) {
      this.caughtUpAt.set(deviceId, nowMs);
      logger.warn(
        { deviceId, reportedSeq: decision.reportedSeq, storedSeq: decision.storedSeq, reason: decision.reason },
        `device ${deviceId} had accepted desired seq ${decision.reportedSeq}, the database only ${decision.storedSeq} ` +
          `(restored from a backup?): its desired state is sent again as seq ${decision.reportedSeq + 1}`,
      );
    }
  }
}
