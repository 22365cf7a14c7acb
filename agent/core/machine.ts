import { verifyDesired } from '../../shared/desired.js';
import { toOtaError } from '../../shared/errors.js';
import { idRecord, ownEntry } from '../../shared/id-record.js';
import { publicKeyFromJson } from '../../shared/keys.js';
import type { DesiredMessage, DesiredState, DeviceFacts, ErrorInfo, Reported } from '../../shared/messages.js';
import type { TrustPolicy } from '../../shared/signatures.js';
import { applyTrustChain, type HeldTrust, trustPolicyOf } from '../../shared/trust.js';
import {
  type AgentState,
  emptyRecord,
  type Links,
  type ModelRecord,
  type Target,
  type TrustRecord,
  trustRecordOf,
} from './agent-state.js';
import { type ModelEvent, type Txn, transition } from './transitions.js';

export {
  backoffMs,
  diskSpaceShortfall,
  isTerminal,
  linksAfterSwap,
  RETRYABLE_ERRORS,
} from './transitions.js';

/**
 * The agent's pure core: `step(state, event, ctx) -> { state, effects }`. Each model moves
 * through one declared transition table (agent/core/transitions.ts, after Mender's state
 * machine). Effects are data; the shell runs them and feeds their raw outcome (an error code,
 * the bytes measured) back as events, after persisting the new state; every decision (retry or
 * fail, enough disk or not, discard staged bytes) is taken here. The clock, the trust policies
 * and the device facts come in through `ctx`; nothing here does I/O.
 *
 * Pipeline per model (design section 5):
 *   idle -> downloading -> verifying -> applying -> probing -> healthy
 *                                                        \-> rolling_back -> rolled_back
 *   any step -> failed (with a reason), after bounded retries where retrying can help.
 * `rolling_back` is reported as `probing` with the error set: on restart the rollback is redone.
 * An assignment that arrives during a rollback waits for it to finish (transitions.ts says why).
 */

export interface StepContext {
  now: Date;
  deviceId: string;
  /**
   * Trusted release keys and threshold (release envelopes): the config's, the initial trust. Once
   * the agent holds a trust document of a higher version (state.trust), `step` verifies with that
   * one instead and passes it on to the transitions here and as `heldTrust`.
   */
  releaseTrust: TrustPolicy;
  /** The trust document version the config's keys come from (config `trustVersion`; default 0). */
  releaseTrustVersion?: number;
  /** Set by `step` for the transitions (the shell leaves it out): the trust releases are verified with. */
  heldTrust?: HeldTrust;
  /** The coordinator key (desired-state messages). */
  coordinatorTrust: TrustPolicy;
  facts: DeviceFacts | null;
  limits: AgentLimits;
}

export interface AgentLimits {
  /** Download + verify attempts per assignment before it is `failed`. */
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Agent starts tolerated in one non-terminal step before the loop guard fails the update. */
  maxStarts: number;
  /** Largest artifact this device accepts. */
  maxArtifactBytes: number;
  /** Free disk kept beyond the artifact: a download that would eat into it is refused (E_DISK_SPACE). */
  diskReserveBytes: number;
  /** Reports kept while the broker is unreachable. */
  outboxLimit: number;
}

export type AgentEvent =
  | { type: 'started'; links: Record<string, Links> }
  | { type: 'desired_message'; message: DesiredMessage }
  | { type: 'desired_invalid'; error: ErrorInfo }
  /** What the disk holds before a download: the version already installed, free bytes, bytes already staged. */
  | {
      type: 'disk_checked';
      model: string;
      generation: number;
      installed: boolean;
      freeBytes: number;
      stagedBytes: number;
    }
  | { type: 'progress'; model: string; generation: number; bytes: number; total: number }
  | { type: 'download_ok'; model: string; generation: number }
  /** The raw error of the transfer: whether it is worth retrying is decided here, from its code. */
  | { type: 'download_failed'; model: string; generation: number; error: ErrorInfo }
  | { type: 'retry_due'; model: string; generation: number }
  /** `refusal`: what the content inspection (external data) found wrong with matching bytes. */
  | { type: 'hashed'; model: string; generation: number; size: number; sha256: string; refusal?: ErrorInfo | null }
  | { type: 'hash_failed'; model: string; generation: number; error: ErrorInfo }
  | { type: 'applied'; model: string; generation: number }
  | { type: 'apply_failed'; model: string; generation: number; error: ErrorInfo }
  | { type: 'probe_passed'; model: string; generation: number }
  | { type: 'probe_failed'; model: string; generation: number; error: ErrorInfo }
  | { type: 'rolled_back'; model: string; generation: number }
  | { type: 'rollback_failed'; model: string; generation: number; error: ErrorInfo };

export type Effect =
  /** Start (or redo) the download step: check the disk and report it as `disk_checked`. */
  | { type: 'download'; model: string; generation: number; target: Target }
  /** Fetch the artifact into the staging file (resuming what is there). */
  | { type: 'fetch'; model: string; generation: number; target: Target }
  | { type: 'retry_later'; model: string; generation: number; delayMs: number }
  | { type: 'discard_staged'; model: string; target: Target }
  | { type: 'hash_staged'; model: string; generation: number; target: Target }
  | { type: 'apply'; model: string; generation: number; target: Target; rollbackTo: Links }
  | { type: 'probe'; model: string; generation: number; target: Target }
  | { type: 'rollback'; model: string; generation: number; target: Target; rollbackTo: Links }
  | { type: 'gc'; model: string; keep: string[] }
  | { type: 'report' };

export interface StepResult {
  /** The previous state object itself when nothing changed (then nothing needs saving). */
  state: AgentState;
  effects: Effect[];
}

/** The trust releases are verified with: the held trust document, or the config's keys. */
export function heldTrust(
  state: Pick<AgentState, 'trust'>,
  ctx: Pick<StepContext, 'releaseTrust' | 'releaseTrustVersion'>,
): HeldTrust {
  const initial = ctx.releaseTrustVersion ?? 0;
  if (state.trust && state.trust.version > initial) return heldOfRecord(state.trust);
  return { version: initial, keys: ctx.releaseTrust.keys, threshold: ctx.releaseTrust.threshold, expiresAt: null };
}

function heldOfRecord(record: TrustRecord): HeldTrust {
  return {
    version: record.version,
    keys: record.keys.map((k, i) => publicKeyFromJson(k, `trust.keys[${i}]`)),
    threshold: record.threshold,
    expiresAt: record.expiresAt,
  };
}

function withTrust(ctx: StepContext, held: HeldTrust): StepContext {
  return { ...ctx, releaseTrust: trustPolicyOf(held), heldTrust: held };
}

export function step(prev: AgentState, event: AgentEvent, ctx: StepContext): StepResult {
  // Copy-on-write of the parts that change; the previous state stays untouched. The copies keyed
  // by model have no prototype: a model may be named `constructor` (shared/id-record.ts).
  const state: AgentState = {
    ...prev,
    models: idRecord(prev.models),
    floors: idRecord(prev.floors),
    outbox: [...prev.outbox],
  };
  const ts = ctx.now.toISOString();
  let changed = false;
  // A trust document accepted below changes the keys for the rest of this step.
  let held = heldTrust(prev, ctx);
  let modelCtx = withTrust(ctx, held);
  const tx: Txn = {
    get ctx() {
      return modelCtx;
    },
    state,
    effects: [],
    put(model, patch) {
      const before = state.models[model] ?? emptyRecord(ctx.now);
      state.models[model] = { ...before, ...patch, updatedAt: ts };
      changed = true;
    },
    replace(model, rec) {
      state.models[model] = rec;
      changed = true;
    },
    report() {
      state.outbox = boundOutbox(
        [...state.outbox, buildReport(state, ctx.deviceId, ts, held.version)],
        ctx.limits.outboxLimit,
      );
    },
  };
  // A model the agent has no record of yet starts idle.
  const apply = (rec: ModelRecord | undefined, e: ModelEvent) => transition(tx, rec ?? emptyRecord(ctx.now), e);

  switch (event.type) {
    case 'started':
      for (const [model, rec] of Object.entries(prev.models)) {
        apply(rec, { type: 'started', model, links: ownEntry(event.links, model) ?? rec.links });
      }
      break;

    case 'desired_message': {
      const { message } = event;
      // The broker re-delivers the retained desired state on every (re)subscribe: the same text
      // again is not a replay attack, just nothing new.
      if (message.desired === state.lastDesiredText) break;
      let desired: DesiredState;
      try {
        desired = verifyDesired(message, ctx.coordinatorTrust, { deviceId: ctx.deviceId, lastSeq: state.lastSeq });
      } catch (err) {
        state.rejected = { seq: claimedSeq(message.desired), error: toOtaError(err).toJSON(), ts };
        changed = true;
        break;
      }
      state.lastSeq = desired.seq;
      state.lastDesiredText = message.desired;
      state.desired = desired;
      state.rejected = null;
      changed = true;
      // Trust first (docs/security.md): the documents above the version held, in order, each
      // signed by a threshold of the keys held then and of its own. A refused one leaves the trust
      // as it is and is reported; the models below are verified with the trust as updated.
      if (desired.trust) {
        const outcome = applyTrustChain(desired.trust, held);
        const newest = outcome.accepted.at(-1);
        if (newest) {
          state.trust = trustRecordOf(newest);
          held = outcome.held;
          modelCtx = withTrust(ctx, held);
        }
        state.trustRejected = outcome.rejected
          ? { version: outcome.rejected.version, error: outcome.rejected.error.toJSON(), ts }
          : null;
      } else {
        state.trustRejected = null;
      }
      for (const [model, entry] of Object.entries(desired.models)) {
        apply(state.models[model], {
          type: 'assigned',
          model,
          envelope: entry.envelope,
          rolloutId: entry.rolloutId,
        });
      }
      break;
    }

    case 'desired_invalid':
      state.rejected = { seq: null, error: event.error, ts };
      changed = true;
      break;

    default: {
      // The outcome of an effect: only for the assignment (generation) that ran it. A result of
      // an older one is stale: the model has moved on.
      const rec = state.models[event.model];
      if (rec && rec.generation === event.generation) apply(rec, event);
    }
  }

  const { effects } = tx;
  if (!changed) return { state: prev, effects };
  tx.report();
  effects.push({ type: 'report' });
  return { state, effects };
}

function claimedSeq(text: string): number | null {
  try {
    const seq = (JSON.parse(text) as { seq?: unknown }).seq;
    return typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
  } catch {
    return null;
  }
}

/** Keeps the newest reports; each is a full snapshot, so the latest always carries the truth. */
function boundOutbox(outbox: Reported[], limit: number): Reported[] {
  return outbox.length > limit ? outbox.slice(outbox.length - limit) : outbox;
}

/**
 * `trustVersion`: the version of the trust releases are verified with (`heldTrust`); by default
 * the held document's, or 0.
 */
export function buildReport(state: AgentState, deviceId: string, ts: string, trustVersion?: number): Reported {
  const models: Reported['models'] = idRecord();
  for (const [name, rec] of Object.entries(state.models)) {
    models[name] = {
      state: rec.phase,
      version: rec.target?.version ?? rec.refusedVersion,
      current: rec.links.current,
      previousVersion: rec.links.previous,
      rolloutId: rec.rolloutId,
      progress: rec.phase === 'downloading' ? rec.progress : null,
      attempt: rec.attempt,
      error: rec.error,
      updatedAt: rec.updatedAt,
    };
  }
  return {
    deviceId,
    seq: state.lastSeq,
    ts,
    models,
    rejected: state.rejected,
    trust: { version: trustVersion ?? state.trust?.version ?? 0, rejected: state.trustRejected },
  };
}
