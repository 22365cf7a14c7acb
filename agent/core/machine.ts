import { verifyDesired } from '../../shared/desired.js';
import { verifyArtifact, verifyEnvelope } from '../../shared/envelope.js';
import { OtaError, toOtaError } from '../../shared/errors.js';
import type {
  DesiredMessage,
  DesiredState,
  DeviceFacts,
  ErrorInfo,
  ModelState,
  Reported,
} from '../../shared/messages.js';
import { effectiveFloor } from '../../shared/rollback-floor.js';
import type { TrustPolicy } from '../../shared/signatures.js';
import { type AgentState, emptyRecord, type Links, type ModelRecord, type Target } from './agent-state.js';
import { unmetRequirement } from './requirements.js';

/**
 * The agent's pure core: `step(state, event, ctx) -> { state, effects }`, one transition table
 * for every model (after Mender's state machine). Effects are data; the shell runs them and
 * feeds their outcome back as events, after persisting the new state. The clock, the trust
 * policies and the device facts come in through `ctx`; nothing here does I/O.
 *
 * Pipeline per model (design section 5):
 *   idle -> downloading -> verifying -> applying -> probing -> healthy
 *                                                        \-> (rollback) -> rolled_back
 *   any step -> failed (with a reason), after bounded retries where retrying can help.
 * A record in `probing` with an error set is rolling back: on restart the rollback is redone.
 */

export interface StepContext {
  now: Date;
  deviceId: string;
  /** Trusted release keys and threshold (release envelopes). */
  releaseTrust: TrustPolicy;
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
  /** Reports kept while the broker is unreachable. */
  outboxLimit: number;
}

export type AgentEvent =
  | { type: 'started'; links: Record<string, Links> }
  | { type: 'desired_message'; message: DesiredMessage }
  | { type: 'desired_invalid'; error: ErrorInfo }
  | { type: 'progress'; model: string; generation: number; bytes: number; total: number }
  | { type: 'download_ok'; model: string; generation: number }
  | { type: 'download_failed'; model: string; generation: number; error: ErrorInfo; retryable: boolean }
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
  | { type: 'download'; model: string; generation: number; target: Target }
  | { type: 'retry_later'; model: string; generation: number; delayMs: number }
  | { type: 'discard_staged'; model: string; target: Target }
  | { type: 'hash_staged'; model: string; generation: number; target: Target }
  | { type: 'apply'; model: string; generation: number; target: Target; rollbackTo: Links }
  | { type: 'probe'; model: string; generation: number; target: Target }
  | { type: 'rollback'; model: string; generation: number; target: Target; rollbackTo: Links }
  | { type: 'gc'; model: string; keep: string[] }
  | { type: 'report' };

export interface StepResult {
  state: AgentState;
  effects: Effect[];
}

const TERMINAL: readonly ModelState[] = ['idle', 'healthy', 'rolled_back', 'failed'];
const RETRYABLE_ARTIFACT_ERRORS = new Set(['E_DIGEST', 'E_SIZE']);

export function isTerminal(phase: ModelState): boolean {
  return TERMINAL.includes(phase);
}

function info(err: unknown): ErrorInfo {
  return toOtaError(err).toJSON();
}

/** Exponential backoff without jitter (the shell adds jitter: randomness is I/O). */
export function backoffMs(attempt: number, limits: Pick<AgentLimits, 'backoffBaseMs' | 'backoffMaxMs'>): number {
  return Math.min(limits.backoffMaxMs, limits.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
}

export function step(prev: AgentState, event: AgentEvent, ctx: StepContext): StepResult {
  // Copy-on-write of the parts that change; the previous state stays untouched.
  const state: AgentState = {
    ...prev,
    models: { ...prev.models },
    floors: { ...prev.floors },
    outbox: [...prev.outbox],
  };
  const effects: Effect[] = [];
  const ts = ctx.now.toISOString();
  let changed = false;

  const put = (model: string, patch: Partial<ModelRecord>) => {
    const before = state.models[model] ?? emptyRecord(ctx.now);
    state.models[model] = { ...before, ...patch, updatedAt: ts };
    changed = true;
  };
  /** The record an effect result is about, or undefined when the result is stale. */
  const live = (model: string, generation: number): ModelRecord | undefined => {
    const rec = state.models[model];
    return rec && rec.generation === generation ? rec : undefined;
  };
  const fail = (model: string, error: ErrorInfo) =>
    put(model, { phase: 'failed', error, progress: null, rollbackTo: null, starts: 0 });

  switch (event.type) {
    case 'started': {
      for (const [model, rec0] of Object.entries(state.models)) {
        const rec = { ...rec0, links: event.links[model] ?? rec0.links };
        state.models[model] = rec;
        changed = true;
        const target = rec.target;
        if (isTerminal(rec.phase) || !target) continue;
        const starts = rec.starts + 1;
        if (starts > ctx.limits.maxStarts) {
          const error = new OtaError(
            'E_CRASH_LOOP',
            `the agent restarted ${starts - 1} times while ${rec.phase} ${model}@${target.version}; update stopped`,
          ).toJSON();
          if ((rec.phase === 'applying' || rec.phase === 'probing') && rec.rollbackTo) {
            put(model, { phase: 'probing', error, starts });
            effects.push({ type: 'rollback', model, generation: rec.generation, target, rollbackTo: rec.rollbackTo });
          } else {
            fail(model, error);
          }
          continue;
        }
        put(model, { starts });
        effects.push(resumeEffect(model, { ...rec, target, starts }));
      }
      break;
    }

    case 'desired_message': {
      const { message } = event;
      // The broker re-delivers the retained desired state on every (re)subscribe: the same text
      // again is not a replay attack, just nothing new.
      if (message.desired === state.lastDesiredText) break;
      let desired: DesiredState;
      try {
        desired = verifyDesired(message, ctx.coordinatorTrust, { deviceId: ctx.deviceId, lastSeq: state.lastSeq });
      } catch (err) {
        state.rejected = { seq: claimedSeq(message.desired), error: info(err), ts };
        changed = true;
        break;
      }
      state.lastSeq = desired.seq;
      state.lastDesiredText = message.desired;
      state.desired = desired;
      state.rejected = null;
      changed = true;
      for (const [model, entry] of Object.entries(desired.models)) {
        assign(model, entry.envelope, entry.rolloutId);
      }
      break;
    }

    case 'desired_invalid':
      state.rejected = { seq: null, error: event.error, ts };
      changed = true;
      break;

    case 'progress': {
      const rec = live(event.model, event.generation);
      if (rec?.phase === 'downloading') put(event.model, { progress: { bytes: event.bytes, total: event.total } });
      break;
    }

    case 'download_ok': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'downloading' || !rec.target) break;
      put(event.model, { phase: 'verifying', progress: { bytes: rec.target.size, total: rec.target.size } });
      effects.push({ type: 'hash_staged', model: event.model, generation: rec.generation, target: rec.target });
      break;
    }

    case 'download_failed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'downloading' || !rec.target) break;
      retryOrFail(event.model, rec, event.error, event.retryable);
      break;
    }

    case 'retry_due': {
      const rec = live(event.model, event.generation);
      if (rec?.phase === 'downloading' && rec.target) {
        effects.push({ type: 'download', model: event.model, generation: rec.generation, target: rec.target });
      }
      break;
    }

    case 'hashed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'verifying' || !rec.target) break;
      const target = rec.target;
      try {
        // Verify again at the moment of installing (RAUC: verification is its own phase, and
        // nothing is installed before it passes): expiry and floors may have moved since the
        // assignment arrived.
        const { manifest } = verifyEnvelope(target.envelope, ctx.releaseTrust, {
          now: ctx.now,
          persistedFloor: state.floors[event.model] ?? 0,
          expect: { model: event.model, version: target.version },
        });
        const unmet = ctx.facts ? unmetRequirement(manifest.requires, ctx.facts) : null;
        if (unmet) throw new OtaError('E_REQUIREMENTS', unmet);
        verifyArtifact(manifest, { size: event.size, sha256: event.sha256 });
      } catch (err) {
        const error = info(err);
        if (RETRYABLE_ARTIFACT_ERRORS.has(error.code)) {
          // Bytes damaged in transit or on disk: throw them away and fetch again (bounded).
          effects.push({ type: 'discard_staged', model: event.model, target });
          put(event.model, { phase: 'downloading', progress: { bytes: 0, total: target.size } });
          retryOrFail(event.model, { ...rec, phase: 'downloading' }, error, true);
        } else {
          fail(event.model, error);
        }
        break;
      }
      if (event.refusal) {
        // The signed bytes themselves are hostile (design section 4): never installed, not retried.
        effects.push({ type: 'discard_staged', model: event.model, target });
        fail(event.model, event.refusal);
        break;
      }
      state.floors[event.model] = effectiveFloor(state.floors[event.model] ?? 0, target);
      put(event.model, { phase: 'applying', rollbackTo: rec.links, progress: null });
      effects.push({ type: 'apply', model: event.model, generation: rec.generation, target, rollbackTo: rec.links });
      break;
    }

    case 'hash_failed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'verifying' || !rec.target) break;
      effects.push({ type: 'discard_staged', model: event.model, target: rec.target });
      put(event.model, { phase: 'downloading' });
      retryOrFail(event.model, { ...rec, phase: 'downloading' }, event.error, true);
      break;
    }

    case 'applied': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'applying' || !rec.target || !rec.rollbackTo) break;
      const links = linksAfterSwap(rec.rollbackTo, rec.target.version);
      put(event.model, { phase: 'probing', links, error: null });
      effects.push({ type: 'probe', model: event.model, generation: rec.generation, target: rec.target });
      break;
    }

    case 'apply_failed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'applying') break;
      // The apply effect restores the old links itself before reporting failure.
      put(event.model, { links: rec.rollbackTo ?? rec.links });
      fail(event.model, event.error);
      break;
    }

    case 'probe_passed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'probing' || rec.error || !rec.target) break;
      put(event.model, { phase: 'healthy', error: null, rollbackTo: null, starts: 0 });
      effects.push({ type: 'gc', model: event.model, keep: keepList(rec.links) });
      break;
    }

    case 'probe_failed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'probing' || !rec.target || !rec.rollbackTo) break;
      // Persist the reason first: a restart in `probing` with an error set redoes the rollback.
      put(event.model, { error: event.error });
      effects.push({
        type: 'rollback',
        model: event.model,
        generation: rec.generation,
        target: rec.target,
        rollbackTo: rec.rollbackTo,
      });
      break;
    }

    case 'rolled_back': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'probing' || !rec.error || !rec.rollbackTo) break;
      const links = rec.rollbackTo;
      const phase: ModelState = rec.error.code === 'E_CRASH_LOOP' ? 'failed' : 'rolled_back';
      put(event.model, { phase, links, rollbackTo: null, starts: 0 });
      effects.push({ type: 'gc', model: event.model, keep: keepList(links) });
      break;
    }

    case 'rollback_failed': {
      const rec = live(event.model, event.generation);
      if (rec?.phase !== 'probing') break;
      fail(event.model, {
        code: 'E_ROLLBACK',
        message: `${rec.error ? `${rec.error.code}: ${rec.error.message}; ` : ''}rollback failed: ${event.error.message}`,
      });
      break;
    }
  }

  if (!changed && effects.length === 0) return { state: prev, effects };
  if (changed) {
    state.outbox = boundOutbox([...state.outbox, buildReport(state, ctx.deviceId, ts)], ctx.limits.outboxLimit);
    effects.push({ type: 'report' });
  }
  return { state, effects };

  function retryOrFail(model: string, rec: ModelRecord, error: ErrorInfo, retryable: boolean) {
    if (error.code === 'E_UNREACHABLE') {
      // The server was never reached (a coordinator restart, a network outage): waiting for it
      // costs no attempt, or a fleet would fail its downloads every time the coordinator restarts.
      put(model, { error });
      effects.push({
        type: 'retry_later',
        model,
        generation: rec.generation,
        delayMs: Math.min(ctx.limits.backoffMaxMs, ctx.limits.backoffBaseMs * 4),
      });
      return;
    }
    if (retryable && rec.attempt < ctx.limits.maxAttempts) {
      put(model, { attempt: rec.attempt + 1, error });
      effects.push({
        type: 'retry_later',
        model,
        generation: rec.generation,
        delayMs: backoffMs(rec.attempt, ctx.limits),
      });
    } else {
      fail(model, error);
    }
  }

  function assign(model: string, envelope: unknown, rolloutId: string | null) {
    const rec = state.models[model] ?? emptyRecord(ctx.now);
    let target: Target;
    try {
      const { manifest } = verifyEnvelope(envelope, ctx.releaseTrust, {
        now: ctx.now,
        persistedFloor: state.floors[model] ?? 0,
        expect: { model },
      });
      target = {
        version: manifest.version,
        sha256: manifest.sha256,
        size: manifest.size,
        counter: manifest.counter,
        floor: manifest.floor,
        rolloutId,
        envelope: envelope as Target['envelope'],
      };
      if (manifest.size > ctx.limits.maxArtifactBytes) {
        throw new OtaError(
          'E_SIZE',
          `artifact of ${manifest.size} bytes exceeds this device's cap of ${ctx.limits.maxArtifactBytes}`,
        );
      }
      const unmet = ctx.facts ? unmetRequirement(manifest.requires, ctx.facts) : null;
      if (unmet) throw new OtaError('E_REQUIREMENTS', unmet);
    } catch (err) {
      // Refused before a single byte is fetched; `current` is untouched. A new generation makes
      // any work still running for an older assignment irrelevant.
      state.models[model] = { ...rec, target: null, rolloutId, generation: rec.generation + 1 };
      fail(model, info(err));
      return;
    }
    const same = rec.target?.sha256 === target.sha256 && rec.target.version === target.version;
    if (same && rec.rolloutId === rolloutId) return; // nothing new for this model
    if (same && !isTerminal(rec.phase)) {
      put(model, { rolloutId, target }); // same bytes, new rollout label: keep going
      return;
    }
    const installed =
      rec.links.current === target.version && (rec.target === null || rec.target.sha256 === target.sha256);
    if (installed && (rec.phase === 'healthy' || rec.phase === 'idle' || rec.phase === 'rolled_back' || same)) {
      // Already running exactly this release (e.g. a revert to the version it never left).
      put(model, { phase: 'healthy', target, rolloutId, error: null, progress: null, attempt: 0, starts: 0 });
      return;
    }
    put(model, {
      phase: 'downloading',
      target,
      rolloutId,
      generation: rec.generation + 1,
      attempt: 1,
      error: null,
      progress: { bytes: 0, total: target.size },
      rollbackTo: null,
      starts: 0,
    });
    effects.push({ type: 'download', model, generation: rec.generation + 1, target });
  }
}

/** The effect that redoes the step a record was in when the agent stopped. */
function resumeEffect(model: string, rec: ModelRecord & { target: Target }): Effect {
  const base = { model, generation: rec.generation, target: rec.target };
  switch (rec.phase) {
    case 'downloading':
      return { type: 'download', ...base };
    case 'verifying':
      return { type: 'hash_staged', ...base };
    case 'applying':
      return { type: 'apply', ...base, rollbackTo: rec.rollbackTo ?? rec.links };
    default:
      // probing: with an error recorded the rollback was under way; otherwise probe again.
      return rec.error && rec.rollbackTo
        ? { type: 'rollback', ...base, rollbackTo: rec.rollbackTo }
        : { type: 'probe', ...base };
  }
}

/** The symlinks once `version` is swapped in: the old current becomes previous (unless it is the same version). */
export function linksAfterSwap(before: Links, version: string): Links {
  return {
    current: version,
    previous: before.current !== null && before.current !== version ? before.current : before.previous,
  };
}

function keepList(links: Links): string[] {
  return [links.current, links.previous].filter((v): v is string => v !== null);
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

export function buildReport(state: AgentState, deviceId: string, ts: string): Reported {
  const models: Reported['models'] = {};
  for (const [name, rec] of Object.entries(state.models)) {
    models[name] = {
      state: rec.phase,
      version: rec.target?.version ?? null,
      current: rec.links.current,
      previousVersion: rec.links.previous,
      rolloutId: rec.rolloutId,
      progress: rec.phase === 'downloading' ? rec.progress : null,
      attempt: rec.attempt,
      error: rec.error,
      updatedAt: rec.updatedAt,
    };
  }
  return { deviceId, seq: state.lastSeq, ts, models, rejected: state.rejected };
}
