import { verifyArtifact, verifyEnvelope } from '../../shared/envelope.js';
import { OtaError, toOtaError } from '../../shared/errors.js';
import { ownEntry } from '../../shared/id-record.js';
import type { DesiredState, ErrorInfo, ModelState } from '../../shared/messages.js';
import { isSafeVersion } from '../../shared/names.js';
import { effectiveFloor } from '../../shared/rollback-floor.js';
import { isAtRest } from '../../shared/states.js';
import { checkTrustFresh } from '../../shared/trust.js';
import type { AgentState, Links, ModelRecord, Target } from './agent-state.js';
import type { AgentEvent, AgentLimits, Effect, StepContext } from './machine.js';
import { unmetRequirement } from './requirements.js';

/**
 * The per-model transition table (after Mender's state machine: the whole machine as
 * `(state, event) -> next` rows). `step` in machine.ts turns agent-level events into model events
 * and looks each up here; a (state, event) pair with no row is ignored: a late or out-of-order
 * result (a download finishing after its model moved on, a progress report after the bytes were
 * verified) changes nothing and runs nothing. test/agent-transitions.test.ts pins this table and
 * goes over every pair.
 */

/**
 * The table's states: a model's reported phase, with `probing` split in two. A record in
 * `probing` with an error set is rolling back (its probe failed, or the loop guard fired): the
 * reason is persisted before the rollback runs, so a restart redoes the rollback, not the probe.
 */
export type MachineState = ModelState | 'rolling_back';

const STATES = {
  idle: true,
  downloading: true,
  verifying: true,
  applying: true,
  probing: true,
  rolling_back: true,
  healthy: true,
  rolled_back: true,
  failed: true,
} as const satisfies Record<MachineState, true>;
export const MACHINE_STATES = Object.keys(STATES) as MachineState[];

export function machineState(rec: Pick<ModelRecord, 'phase' | 'error'>): MachineState {
  return rec.phase === 'probing' && rec.error ? 'rolling_back' : rec.phase;
}

/**
 * What happens to one model: `started` and `assigned` are the agent-level events `started` and
 * `desired_message` fanned out per model; the rest are the outcomes of effects, each for the
 * generation (assignment) whose effect produced it.
 */
export type ModelEvent =
  | { type: 'started'; model: string; links: Links }
  | { type: 'assigned'; model: string; envelope: DesiredState['models'][string]['envelope']; rolloutId: string | null }
  | Extract<AgentEvent, { generation: number }>;
export type ModelEventType = ModelEvent['type'];

const EVENTS = {
  started: true,
  assigned: true,
  disk_checked: true,
  progress: true,
  download_ok: true,
  download_failed: true,
  retry_due: true,
  hashed: true,
  hash_failed: true,
  applied: true,
  apply_failed: true,
  probe_passed: true,
  probe_failed: true,
  rolled_back: true,
  rollback_failed: true,
} as const satisfies Record<ModelEventType, true>;
export const MODEL_EVENT_TYPES = Object.keys(EVENTS) as ModelEventType[];

/** The working copy of one step: handlers change the state through it and queue effects. */
export interface Txn {
  readonly ctx: StepContext;
  readonly state: AgentState;
  readonly effects: Effect[];
  /** Merges a patch into a model's record and stamps `updatedAt`. */
  put(model: string, patch: Partial<ModelRecord>): void;
  /** Replaces a model's record as given (no stamp). */
  replace(model: string, rec: ModelRecord): void;
  /**
   * Queues a report of the state as it is now, before the step goes on (every step that changed
   * something ends with one anyway): for a state the step passes through that must be seen.
   */
  report(): void;
}

type Handler<T extends ModelEventType> = (tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: T }>) => void;

export interface Transition {
  from: MachineState;
  on: ModelEventType;
  /** Every state the handler may leave the model in (the table test checks each outcome is one). */
  to: readonly MachineState[];
  run: (tx: Txn, rec: ModelRecord, event: ModelEvent) => void;
}

function row<T extends ModelEventType>(
  from: MachineState,
  on: T,
  to: readonly MachineState[],
  run: Handler<T>,
): Transition {
  return { from, on, to, run: run as unknown as Transition['run'] };
}

// biome-ignore format: a table reads best aligned
export const TRANSITIONS: readonly Transition[] = [
  //   state           event              may end in                                         handler
  row('idle',         'assigned',        ['downloading', 'healthy', 'failed'],                onAssigned),
  row('downloading',  'assigned',        ['downloading', 'failed'],                           onAssigned),
  row('verifying',    'assigned',        ['verifying', 'downloading', 'failed'],              onAssigned),
  row('applying',     'assigned',        ['applying', 'downloading', 'failed'],               onAssigned),
  row('probing',      'assigned',        ['probing', 'downloading', 'failed'],                onAssigned),
  row('rolling_back', 'assigned',        ['rolling_back'],                                    onAssignedWhileRollingBack),
  row('healthy',      'assigned',        ['healthy', 'downloading', 'failed'],                onAssigned),
  row('rolled_back',  'assigned',        ['rolled_back', 'downloading', 'healthy', 'failed'], onAssigned),
  row('failed',       'assigned',        ['failed', 'downloading', 'healthy'],                onAssigned),

  row('idle',         'started',         ['idle'],                                            onStartedAtRest),
  row('healthy',      'started',         ['healthy'],                                         onStartedAtRest),
  row('rolled_back',  'started',         ['rolled_back'],                                     onStartedAtRest),
  row('failed',       'started',         ['failed'],                                          onStartedAtRest),
  row('downloading',  'started',         ['downloading', 'failed'],                           onStartedMidway),
  row('verifying',    'started',         ['verifying', 'failed'],                             onStartedMidway),
  row('applying',     'started',         ['applying', 'rolling_back', 'failed'],              onStartedMidway),
  row('probing',      'started',         ['probing', 'rolling_back', 'failed'],               onStartedMidway),
  row('rolling_back', 'started',         ['rolling_back', 'failed'],                          onStartedMidway),

  row('downloading',  'disk_checked',    ['verifying', 'downloading', 'failed'],              onDiskChecked),
  row('downloading',  'progress',        ['downloading'],                                     onProgress),
  row('downloading',  'download_ok',     ['verifying'],                                       onDownloadOk),
  row('downloading',  'download_failed', ['downloading', 'failed'],                           onDownloadFailed),
  row('downloading',  'retry_due',       ['downloading'],                                     onRetryDue),
  row('verifying',    'hashed',          ['applying', 'downloading', 'failed'],               onHashed),
  row('verifying',    'hash_failed',     ['downloading', 'failed'],                           onHashFailed),
  row('applying',     'applied',         ['probing'],                                         onApplied),
  row('applying',     'apply_failed',    ['failed'],                                          onApplyFailed),
  row('probing',      'probe_passed',    ['healthy'],                                         onProbePassed),
  row('probing',      'probe_failed',    ['rolling_back'],                                    onProbeFailed),
  row('rolling_back', 'rolled_back',     ['rolled_back', 'failed', 'downloading', 'healthy'], onRolledBack),
  row('rolling_back', 'rollback_failed', ['failed', 'downloading', 'healthy'],                onRollbackFailed),
];

const TABLE = new Map(TRANSITIONS.map((t) => [`${t.from} ${t.on}`, t]));

/** The row for a (state, event) pair, or null: the pair is ignored. */
export function transitionFor(state: MachineState, event: ModelEventType): Transition | null {
  return TABLE.get(`${state} ${event}`) ?? null;
}

/** Runs the row for the record's state and the event; does nothing for a pair without one. */
export function transition(tx: Txn, rec: ModelRecord, event: ModelEvent): void {
  transitionFor(machineState(rec), event.type)?.run(tx, rec, event);
}

/**
 * Errors worth another download: the transfer broke (or the server was not reached), or the bytes
 * that arrived cannot be the signed ones (more than the signed size, another digest). The one
 * list: the runtime reports an error's code and this decides.
 */
export const RETRYABLE_ERRORS: ReadonlySet<string> = new Set([
  'E_UNREACHABLE',
  'E_DOWNLOAD',
  'E_DOWNLOAD_TIMEOUT',
  'E_DOWNLOAD_STALLED',
  'E_IO',
  'E_SIZE',
  'E_DIGEST',
]);

/**
 * Errors after which the staged bytes are thrown away before fetching again: a server that sent
 * more than the signed size filled the part file with bytes that cannot be the artifact, so
 * resuming from them would only fail the digest later.
 */
const DISCARD_STAGED_ON: ReadonlySet<string> = new Set(['E_SIZE']);

/** At rest: idle or an outcome (shared/states.ts, the one vocabulary). */
export function isTerminal(phase: ModelState): boolean {
  return isAtRest(phase);
}

/** Exponential backoff without jitter (the shell adds jitter: randomness is I/O). */
export function backoffMs(attempt: number, limits: Pick<AgentLimits, 'backoffBaseMs' | 'backoffMaxMs'>): number {
  return Math.min(limits.backoffMaxMs, limits.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
}

/**
 * Not enough free disk for the rest of the artifact plus the reserve: the refusal, or null.
 * `stagedBytes` already downloaded (a resumed download) need no more room.
 */
export function diskSpaceShortfall(
  model: string,
  target: Pick<Target, 'version' | 'size'>,
  measured: { freeBytes: number; stagedBytes: number },
  reserveBytes: number,
): ErrorInfo | null {
  const need = target.size - Math.min(measured.stagedBytes, target.size) + reserveBytes;
  if (measured.freeBytes >= need) return null;
  const reserveMB = Math.round(reserveBytes / (1024 * 1024));
  return new OtaError(
    'E_DISK_SPACE',
    `${model}@${target.version} needs ${need} bytes free (with the ${reserveMB} MB reserve), ${measured.freeBytes} available`,
  ).toJSON();
}

/** The symlinks once `version` is swapped in: the old current becomes previous (unless it is the same version). */
export function linksAfterSwap(before: Links, version: string): Links {
  return {
    current: version,
    previous: before.current !== null && before.current !== version ? before.current : before.previous,
  };
}

function info(err: unknown): ErrorInfo {
  return toOtaError(err).toJSON();
}

function keepList(links: Links): string[] {
  return [links.current, links.previous].filter((v): v is string => v !== null);
}

function fail(tx: Txn, model: string, error: ErrorInfo): void {
  tx.put(model, { phase: 'failed', error, progress: null, rollbackTo: null, starts: 0 });
}

/** After a failed attempt: wait and download again while attempts remain, else `failed`. */
function retryOrFail(tx: Txn, model: string, rec: ModelRecord, error: ErrorInfo, retryable: boolean): void {
  const { limits } = tx.ctx;
  if (error.code === 'E_UNREACHABLE') {
    // The server was never reached (a coordinator restart, a network outage): waiting for it
    // costs no attempt, or a fleet would fail its downloads every time the coordinator restarts.
    tx.put(model, { error });
    tx.effects.push({
      type: 'retry_later',
      model,
      generation: rec.generation,
      delayMs: Math.min(limits.backoffMaxMs, limits.backoffBaseMs * 4),
    });
    return;
  }
  if (retryable && rec.attempt < limits.maxAttempts) {
    tx.put(model, { attempt: rec.attempt + 1, error });
    tx.effects.push({
      type: 'retry_later',
      model,
      generation: rec.generation,
      delayMs: backoffMs(rec.attempt, limits),
    });
  } else {
    fail(tx, model, error);
  }
}

/** The version an envelope names, when it is a well-formed one (it goes into the report as is). */
function namedVersion(envelope: { manifest: string }): string | null {
  try {
    const version = (JSON.parse(envelope.manifest) as { version?: unknown }).version;
    return typeof version === 'string' && isSafeVersion(version) ? version : null;
  } catch {
    return null;
  }
}

// ---- handlers, one per row group ----

function onAssigned(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'assigned' }>): void {
  const { ctx, state } = tx;
  const { model, envelope, rolloutId } = event;
  // Every desired state repeats every model's entry. The release this model runs, healthy, was
  // verified when it was assigned: seen again it is nothing new, and it is not verified again, so
  // a trust rotation (or an expired trust) never turns a running release into a failure; the
  // bytes in place stay, and only what is assigned next needs the new keys (docs/security.md).
  if (
    rec.phase === 'healthy' &&
    rec.target !== null &&
    rec.target.envelope.manifest === envelope.manifest &&
    rec.links.current === rec.target.version &&
    rec.rolloutId === rolloutId
  ) {
    return;
  }
  let target: Target;
  try {
    // A held trust document past its expiry verifies nothing new (TUF 5.3.10: freeze).
    if (ctx.heldTrust) checkTrustFresh(ctx.heldTrust, ctx.now);
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
      envelope,
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
    // any work still running for an older assignment irrelevant. The report names the refused
    // version: the desired state carrying the envelope is the coordinator's, verified above.
    tx.replace(model, {
      ...rec,
      target: null,
      refusedVersion: namedVersion(envelope),
      rolloutId,
      generation: rec.generation + 1,
    });
    fail(tx, model, info(err));
    return;
  }
  const same = rec.target?.sha256 === target.sha256 && rec.target.version === target.version;
  if (same && rec.rolloutId === rolloutId) return; // nothing new for this model
  if (same && !isTerminal(rec.phase)) {
    tx.put(model, { rolloutId, target, refusedVersion: null }); // same bytes, new rollout label: keep going
    return;
  }
  // The record's digest is evidence only about its own target's version. For another version
  // (the one a rollback just restored, or one adopted from disk with no target) the installed
  // version's name is all the device knows, and it was verified when it was installed: so a
  // revert to the version a rollback restored is healthy at once, without a reload or a probe.
  const installed =
    rec.links.current === target.version &&
    (rec.target === null || rec.target.version !== target.version || rec.target.sha256 === target.sha256);
  if (installed && (rec.phase === 'healthy' || rec.phase === 'idle' || rec.phase === 'rolled_back' || same)) {
    // Already running exactly this release (e.g. a revert to the version it never left).
    tx.put(model, {
      phase: 'healthy',
      target,
      refusedVersion: null,
      rolloutId,
      error: null,
      progress: null,
      attempt: 0,
      starts: 0,
    });
    return;
  }
  tx.put(model, {
    phase: 'downloading',
    target,
    refusedVersion: null,
    rolloutId,
    generation: rec.generation + 1,
    attempt: 1,
    error: null,
    progress: { bytes: 0, total: target.size },
    rollbackTo: null,
    starts: 0,
  });
  tx.effects.push({ type: 'download', model, generation: rec.generation + 1, target });
}

/** At rest: only the links are read again from disk (the symlinks are the truth). */
function onStartedAtRest(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'started' }>): void {
  tx.replace(event.model, { ...rec, links: event.links });
}

/** Stopped mid-update: redo the step it was in, unless the loop guard says it keeps crashing there. */
function onStartedMidway(tx: Txn, rec0: ModelRecord, event: Extract<ModelEvent, { type: 'started' }>): void {
  const { model } = event;
  const rec = { ...rec0, links: event.links };
  tx.replace(model, rec);
  const target = rec.target;
  if (!target) return;
  const starts = rec.starts + 1;
  if (starts > tx.ctx.limits.maxStarts) {
    const error = new OtaError(
      'E_CRASH_LOOP',
      `the agent restarted ${starts - 1} times while ${rec.phase} ${model}@${target.version}; update stopped`,
    ).toJSON();
    if ((rec.phase === 'applying' || rec.phase === 'probing') && rec.rollbackTo) {
      // The links may already point at the new version: restore the old ones first.
      tx.put(model, { phase: 'probing', error, starts });
      tx.effects.push({ type: 'rollback', model, generation: rec.generation, target, rollbackTo: rec.rollbackTo });
    } else {
      fail(tx, model, error);
    }
    return;
  }
  tx.put(model, { starts });
  tx.effects.push(resumeEffect(model, { ...rec, target }));
}

/** The effect that redoes the step a record was in when the agent stopped. */
function resumeEffect(model: string, rec: ModelRecord & { target: Target }): Effect {
  const base = { model, generation: rec.generation, target: rec.target };
  switch (machineState(rec)) {
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

/**
 * What the runtime found on disk before downloading: the version already installed (a restart
 * after the install) goes straight to verifying; too little free space fails the update; else fetch.
 */
function onDiskChecked(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'disk_checked' }>): void {
  const target = rec.target;
  if (!target) return;
  if (event.installed) {
    onDownloadOk(tx, rec, { type: 'download_ok', model: event.model, generation: event.generation });
    return;
  }
  const shortfall = diskSpaceShortfall(event.model, target, event, tx.ctx.limits.diskReserveBytes);
  if (shortfall) {
    fail(tx, event.model, shortfall);
    return;
  }
  tx.effects.push({ type: 'fetch', model: event.model, generation: rec.generation, target });
}

function onProgress(tx: Txn, _rec: ModelRecord, event: Extract<ModelEvent, { type: 'progress' }>): void {
  tx.put(event.model, { progress: { bytes: event.bytes, total: event.total } });
}

function onDownloadOk(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'download_ok' }>): void {
  const target = rec.target;
  if (!target) return;
  tx.put(event.model, { phase: 'verifying', progress: { bytes: target.size, total: target.size } });
  tx.effects.push({ type: 'hash_staged', model: event.model, generation: rec.generation, target });
}

function onDownloadFailed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'download_failed' }>): void {
  const target = rec.target;
  if (!target) return;
  if (DISCARD_STAGED_ON.has(event.error.code)) tx.effects.push({ type: 'discard_staged', model: event.model, target });
  retryOrFail(tx, event.model, rec, event.error, RETRYABLE_ERRORS.has(event.error.code));
}

function onRetryDue(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'retry_due' }>): void {
  if (rec.target)
    tx.effects.push({ type: 'download', model: event.model, generation: rec.generation, target: rec.target });
}

function onHashed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'hashed' }>): void {
  const { ctx, state } = tx;
  const target = rec.target;
  if (!target) return;
  try {
    // Verify again at the moment of installing (RAUC: verification is its own phase, and
    // nothing is installed before it passes): expiry and floors may have moved since the
    // assignment arrived; so may the trust (a rotation, or its expiry).
    if (ctx.heldTrust) checkTrustFresh(ctx.heldTrust, ctx.now);
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
    if (RETRYABLE_ERRORS.has(error.code)) {
      // Bytes damaged in transit or on disk: throw them away and fetch again (bounded).
      tx.effects.push({ type: 'discard_staged', model: event.model, target });
      tx.put(event.model, { phase: 'downloading', progress: { bytes: 0, total: target.size } });
      retryOrFail(tx, event.model, { ...rec, phase: 'downloading' }, error, true);
    } else {
      fail(tx, event.model, error);
    }
    return;
  }
  if (event.refusal) {
    // The signed bytes themselves are hostile (design section 4): never installed, not retried.
    tx.effects.push({ type: 'discard_staged', model: event.model, target });
    fail(tx, event.model, event.refusal);
    return;
  }
  state.floors[event.model] = effectiveFloor(state.floors[event.model] ?? 0, target);
  tx.put(event.model, { phase: 'applying', rollbackTo: rec.links, progress: null });
  tx.effects.push({ type: 'apply', model: event.model, generation: rec.generation, target, rollbackTo: rec.links });
}

/** The staged bytes could not be read or inspected: fetched again (bounded). */
function onHashFailed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'hash_failed' }>): void {
  const target = rec.target;
  if (!target) return;
  tx.effects.push({ type: 'discard_staged', model: event.model, target });
  tx.put(event.model, { phase: 'downloading' });
  retryOrFail(tx, event.model, { ...rec, phase: 'downloading' }, event.error, true);
}

function onApplied(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'applied' }>): void {
  if (!rec.target || !rec.rollbackTo) return;
  const links = linksAfterSwap(rec.rollbackTo, rec.target.version);
  tx.put(event.model, { phase: 'probing', links, error: null });
  tx.effects.push({ type: 'probe', model: event.model, generation: rec.generation, target: rec.target });
}

function onApplyFailed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'apply_failed' }>): void {
  // The apply effect restores the old links itself before reporting failure.
  tx.put(event.model, { links: rec.rollbackTo ?? rec.links });
  fail(tx, event.model, event.error);
}

function onProbePassed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'probe_passed' }>): void {
  tx.put(event.model, { phase: 'healthy', error: null, rollbackTo: null, starts: 0 });
  tx.effects.push({ type: 'gc', model: event.model, keep: keepList(rec.links) });
}

function onProbeFailed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'probe_failed' }>): void {
  if (!rec.target || !rec.rollbackTo) return;
  // Persist the reason first: a restart in `probing` with an error set redoes the rollback.
  tx.put(event.model, { error: event.error });
  tx.effects.push({
    type: 'rollback',
    model: event.model,
    generation: rec.generation,
    target: rec.target,
    rollbackTo: rec.rollbackTo,
  });
}

/**
 * An assignment that arrives while a rollback runs waits until the rollback has finished, and is
 * then taken up exactly as if it had arrived just after it (takeUpDeferredAssignment). Why: during
 * the rollback the record's links still name the failed candidate as `current` (they become the
 * restored ones only when the rollback is done), while the rollback effect is rewriting the
 * symlinks on disk. Taking the assignment at once started the next update from that stale copy:
 * its rollback target named the failed version, so a failing new version rolled the device back
 * onto the one that had just failed, and a revert to the restored version kept the failed one as
 * `previous`. Waiting also keeps one effect at a time on a model's symlinks. The wait is short
 * (a rollback is a symlink swap and the reload action) and survives a restart: the assignment is
 * in the persisted `desired`, and a restart redoes the rollback first.
 */
function onAssignedWhileRollingBack(): void {
  // Nothing to do now: `step` has already persisted the desired state that carries it.
}

/**
 * After a rollback: an assignment that waited for it is taken up. The latest accepted desired
 * state is persisted (`state.desired`); an entry for this model that is not what was being rolled
 * back (another manifest or another rollout) arrived during the rollback, since any earlier one
 * was taken up at once and became the record's target.
 */
function takeUpDeferredAssignment(tx: Txn, model: string): void {
  const entry = ownEntry(tx.state.desired?.models, model);
  const rec = tx.state.models[model];
  if (!entry || !rec) return;
  if (entry.rolloutId === rec.rolloutId && entry.envelope.manifest === rec.target?.envelope.manifest) return;
  // The rollback's outcome is reported first: the rollout that assigned the failed version learns
  // that it was rolled back (its only outcome report) before the device moves on.
  tx.report();
  onAssigned(tx, rec, { type: 'assigned', model, envelope: entry.envelope, rolloutId: entry.rolloutId });
}

function onRolledBack(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'rolled_back' }>): void {
  if (!rec.error || !rec.rollbackTo) return;
  const links = rec.rollbackTo;
  const phase: ModelState = rec.error.code === 'E_CRASH_LOOP' ? 'failed' : 'rolled_back';
  tx.put(event.model, { phase, links, rollbackTo: null, starts: 0 });
  takeUpDeferredAssignment(tx, event.model);
  // The garbage collection runs alongside the update just taken up: it keeps that update's version.
  const after = tx.state.models[event.model];
  const working = after?.target && !isTerminal(after.phase) ? [after.target.version] : [];
  tx.effects.push({ type: 'gc', model: event.model, keep: [...new Set([...keepList(links), ...working])] });
}

function onRollbackFailed(tx: Txn, rec: ModelRecord, event: Extract<ModelEvent, { type: 'rollback_failed' }>): void {
  fail(tx, event.model, {
    code: 'E_ROLLBACK',
    message: `${rec.error ? `${rec.error.code}: ${rec.error.message}; ` : ''}rollback failed: ${event.error.message}`,
  });
  takeUpDeferredAssignment(tx, event.model);
}
