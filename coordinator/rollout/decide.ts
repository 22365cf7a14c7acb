import { OtaError } from '../../shared/errors.js';
import type { ModelState } from '../../shared/messages.js';
import { versionOfRelease } from '../../shared/release-id.js';
import {
  isAdvancingRollout,
  isFailure,
  isFinishedRollout,
  isOutcome,
  type RolloutStatus,
} from '../../shared/states.js';
import {
  cloneTallies,
  count,
  type DeviceIndex,
  failureTotals,
  indexDevices,
  type WaveTally,
  wavesComplete,
} from './device-index.js';
import type {
  Approval,
  AuditDraft,
  Decision,
  DecisionInputs,
  Rollout,
  RolloutDevice,
  RolloutDeviceState,
  RolloutEvent,
} from './types.js';

/**
 * The rollout engine (design section 6): a pure function of the stored rollout, its device rows,
 * one event and the clock. The shell writes the returned patch, device rows, assignments and
 * audit rows in one transaction, then publishes.
 *
 * Rules, in the words of the design:
 * - A wave is complete when every live (online) device of the waves started so far is terminal
 *   (healthy, rolled_back, failed); offline devices never block. An empty wave is complete at once.
 * - On completion of the current wave: the last wave completes the rollout (and moves the
 *   channel); the next wave starts at once when its gate is `auto` (or the rollout was promoted),
 *   else the rollout parks in `waiting_approval`.
 * - Halt rule, after every report: rate = (failed + rolled_back - acknowledged) / devices assigned
 *   so far; above `maxFailureRate` (strictly) the rollout halts, in the same decision.
 * - A device's outcome is final for the rollout: later reports of the same device are left to
 *   the shell's device history (so failure counts never go down and acknowledged failures stay
 *   meaningful).
 * - A finished rollout (completed, aborted) decides nothing more, but a late report about its
 *   candidate still moves the device's row (an offline device that converged later), and a device
 *   that rolls back or fails late is set back to what it runs (see onAbort).
 * - Waves are 0-based indexes here and in the store; every text and audit row an operator reads
 *   numbers them from 1 (`waveNumber`).
 */
export function decide(
  rollout: Rollout,
  devices: readonly RolloutDevice[] | DeviceIndex,
  event: RolloutEvent,
  now: string,
  inputs: DecisionInputs = {},
): Decision {
  const ctx = new Context(rollout, asIndex(rollout, devices), now, inputs);
  switch (event.type) {
    case 'start':
      onStart(ctx);
      break;
    case 'report':
      onReport(ctx, event);
      break;
    case 'presence':
      onPresence(ctx, event.deviceId, event.online);
      break;
    case 'approve':
      onApprove(ctx, event.actor);
      break;
    case 'promote':
      onPromote(ctx, event.actor);
      break;
    case 'halt':
      onHalt(ctx, event.actor, event.reason);
      break;
    case 'resume':
      onResume(ctx, event.actor);
      break;
    case 'abort':
      onAbort(ctx, event.actor, event.policy);
      break;
    case 'analysis':
      onAnalysis(ctx, event);
      break;
    default: {
      const unknown: never = event;
      throw new OtaError('E_INTERNAL', `unknown rollout event ${JSON.stringify(unknown)}`);
    }
  }
  return ctx.decision();
}

/** The shell passes its live index (no copy); tests and one-off callers pass plain rows. */
export function asIndex(rollout: Rollout, devices: readonly RolloutDevice[] | DeviceIndex): DeviceIndex {
  return Array.isArray(devices)
    ? indexDevices(devices as readonly RolloutDevice[], rollout.strategy.waves.length)
    : (devices as DeviceIndex);
}

const SYSTEM = 'coordinator';
const MAX_REASON = 2000;

/** The wave number operators see (from 1) for a 0-based wave index. */
export function waveNumber(index: number): number {
  return index + 1;
}
const OPS_BY_STATUS: Record<RolloutStatus, string> = {
  running: 'promote, halt, abort',
  waiting_approval: 'approve, promote, halt, abort',
  halted: 'resume, abort',
  completed: 'none (the rollout is finished)',
  aborted: 'none (the rollout is finished)',
};

/** The gate in front of wave `index` as it applies now: wave 0 and promoted rollouts are auto. */
export function effectiveApproval(rollout: Rollout, index: number): Approval {
  if (index === 0 || rollout.promoted) return 'auto';
  return rollout.strategy.waves[index]?.approval ?? 'auto';
}

export interface FailureStats {
  /** Devices in rolled_back or failed. */
  count: number;
  acknowledged: number;
  /** Devices assigned so far (every device whose wave started). */
  assigned: number;
  /** max(0, count - acknowledged) / assigned; 0 when nothing is assigned. */
  rate: number;
}

export function failureStats(rollout: Rollout, waves: readonly WaveTally[]): FailureStats {
  const { failed, assigned } = failureTotals(waves);
  const unacknowledged = Math.max(0, failed - rollout.acknowledgedFailures);
  return {
    count: failed,
    acknowledged: rollout.acknowledgedFailures,
    assigned,
    rate: assigned === 0 ? 0 : unacknowledged / assigned,
  };
}

/**
 * True when every live device of the waves started so far (index <= currentWave) is terminal.
 * Devices in `pending` belong to later waves; `reverted` only exists after abort.
 */
export function currentWaveComplete(rollout: Rollout, waves: readonly WaveTally[]): boolean {
  return wavesComplete(waves, rollout.currentWave);
}

/**
 * The working copy one decision edits; it records exactly what changed. Copy-on-write: the
 * stored rows are read through the index and never modified; a device is copied the first time
 * the decision changes it, and the wave tallies (a few numbers per wave) are copied once, so a
 * decision costs what it changes, not the size of the rollout.
 */
class Context {
  readonly rollout: Rollout;
  readonly tallies: WaveTally[];
  private readonly changed = new Map<string, RolloutDevice>();
  private readonly patch: Partial<Rollout> = {};
  private readonly assignments: Decision['assignments'] = [];
  private readonly audits: AuditDraft[] = [];
  private channelMove: Decision['channelMove'] = null;

  constructor(
    rollout: Rollout,
    private readonly index: DeviceIndex,
    readonly now: string,
    private readonly inputs: DecisionInputs = {},
  ) {
    this.rollout = { ...rollout };
    this.tallies = cloneTallies(index.waves);
  }

  get deviceCount(): number {
    return this.index.byId.size;
  }

  device(id: string): RolloutDevice | undefined {
    return this.changed.get(id) ?? this.index.byId.get(id);
  }

  /** Every device, as this decision sees it, in row order. */
  *devices(): Generator<RolloutDevice> {
    for (const [id, d] of this.index.byId) yield this.changed.get(id) ?? d;
  }

  /** The devices of one wave, as this decision sees them. */
  *wave(index: number): Generator<RolloutDevice> {
    for (const id of this.index.waveMembers[index] ?? []) {
      const d = this.device(id);
      if (d) yield d;
    }
  }

  set<K extends keyof Rollout>(key: K, value: Rollout[K]): void {
    if (this.rollout[key] === value) return;
    this.rollout[key] = value;
    this.patch[key] = value;
  }

  updateDevice(device: RolloutDevice, change: Partial<Omit<RolloutDevice, 'deviceId' | 'wave'>>): void {
    const current = this.device(device.deviceId) ?? device;
    const entries = (Object.entries(change) as [keyof typeof change, unknown][]).filter(
      ([key, value]) => current[key] !== value,
    );
    if (entries.length === 0) return;
    const next: RolloutDevice = {
      ...current,
      error: current.error ? { ...current.error } : null,
      revertedTo: current.revertedTo ? { ...current.revertedTo } : null,
    };
    for (const [key, value] of entries) (next as unknown as Record<string, unknown>)[key] = value;
    count(this.tallies, current, -1);
    count(this.tallies, next, 1);
    this.changed.set(next.deviceId, next);
  }

  /** Members of wave `index`, 0 for a wave past the plan. */
  waveSize(index: number): number {
    return this.index.waveMembers[index]?.length ?? 0;
  }

  /** Members of the waves after `index`. */
  devicesAfter(index: number): number {
    let n = 0;
    for (let i = index + 1; i < this.index.waveMembers.length; i++) n += this.waveSize(i);
    return n;
  }

  /**
   * The candidate goes into the device's desired state. Its revert target is taken now, from
   * what it runs at this moment (it may have converged since create); unknown keeps the one
   * computed at create.
   */
  assign(device: RolloutDevice): void {
    const running = this.inputs.revertTargetOf?.(device.deviceId);
    this.updateDevice(device, {
      state: 'assigned',
      assignedAt: this.now,
      ...(running !== undefined ? { previousReleaseId: running } : {}),
    });
    this.assignments.push({ deviceId: device.deviceId, kind: 'assign', releaseId: this.rollout.releaseId });
  }

  /**
   * The device's desired state goes back to the release it ran before this rollout touched it
   * (or loses the entry when it ran none, or when that release is revoked since: treated like a
   * release not published here, the agent keeps what it runs). Its state stays what happened (an
   * outcome is evidence); `revertedTo` records the move. Returns where it went.
   */
  revert(device: RolloutDevice): string | null {
    const before = device.previousReleaseId;
    const to = before !== null && this.revokedReason(before) ? null : before;
    this.updateDevice(device, { revertedTo: { releaseId: to } });
    this.assignments.push({ deviceId: device.deviceId, kind: 'revert', releaseId: to });
    return to;
  }

  /** Another writer (a later rollout, a running experiment) owns the device's desired state now. */
  ownedElsewhere(deviceId: string): boolean {
    return this.inputs.ownedElsewhere?.(deviceId) ?? false;
  }

  /** Why a release may not be assigned any more (revoked, release-trust.ts), or null. */
  revokedReason(releaseId: string): string | null {
    return this.inputs.revokedReason?.(releaseId) ?? null;
  }

  audit(actor: string, action: string, details: Record<string, unknown>): void {
    this.audits.push({
      actor,
      action,
      subject: `rollout:${this.rollout.id}`,
      details: { rolloutId: this.rollout.id, ...details },
    });
  }

  /**
   * Points the rollout's channel at its release, unless the release was revoked meanwhile (a key
   * revoked during the last wave): a channel never moves to a release nothing may assign
   * (docs/security.md), so it stays where it is and the audit says why. Returns whether it moved.
   */
  moveChannel(actor: string): boolean {
    const revoked = this.revokedReason(this.rollout.releaseId);
    if (revoked !== null) {
      this.audit(actor, 'rollout.channel_not_moved', { channel: this.rollout.channel, reason: revoked });
      return false;
    }
    this.channelMove = { channel: this.rollout.channel, model: this.rollout.model, releaseId: this.rollout.releaseId };
    return true;
  }

  decision(): Decision {
    const devices = [...this.changed.values()];
    const changed =
      Object.keys(this.patch).length > 0 ||
      devices.length > 0 ||
      this.assignments.length > 0 ||
      this.audits.length > 0 ||
      this.channelMove !== null;
    const patch: Partial<Rollout> = changed ? { ...this.patch, updatedAt: this.now } : {};
    return { patch, devices, assignments: this.assignments, audit: this.audits, channelMove: this.channelMove };
  }
}

function refuse(ctx: Context, op: string): never {
  const status = ctx.rollout.status;
  throw new OtaError(
    'E_ROLLOUT_STATE',
    `cannot ${op} rollout ${ctx.rollout.id}: it is ${status}; operations that apply now: ${OPS_BY_STATUS[status]}`,
  );
}

/**
 * Assigns the pending devices of wave `index` and makes it the current wave; when the candidate
 * was revoked since the rollout began (docs/security.md), the rollout halts instead: a revoked
 * release is never assigned again.
 */
function startWave(ctx: Context, index: number, actor: string): void {
  const revoked = ctx.revokedReason(ctx.rollout.releaseId);
  if (revoked) {
    haltRevoked(ctx, revoked, waveNumber(index));
    return;
  }
  let assigned = 0;
  for (const d of ctx.wave(index)) {
    if (d.state === 'pending') {
      ctx.assign(d);
      assigned++;
    }
  }
  ctx.set('currentWave', index);
  ctx.audit(actor, 'rollout.wave_started', { wave: waveNumber(index), devices: assigned });
}

/**
 * While the rollout runs and its current wave is complete: complete the rollout, park at a manual
 * gate, or start the next wave. An empty wave (a small target cut into many waves) passes straight
 * through, its gate included: there is nothing to approve (docs/rollouts.md).
 */
function advance(ctx: Context, actor: string): void {
  const r = ctx.rollout;
  while (r.status === 'running' && currentWaveComplete(r, ctx.tallies)) {
    const next = r.currentWave + 1;
    if (next >= r.strategy.waves.length) {
      ctx.set('status', 'completed');
      const outcome = { healthy: 0, rolled_back: 0, failed: 0, unfinished: 0 };
      for (const w of ctx.tallies) {
        outcome.healthy += w.counts.healthy;
        outcome.rolled_back += w.counts.rolled_back;
        outcome.failed += w.counts.failed;
      }
      outcome.unfinished = ctx.deviceCount - outcome.healthy - outcome.rolled_back - outcome.failed;
      ctx.audit(actor, 'rollout.completed', {
        model: r.model,
        version: r.version,
        releaseId: r.releaseId,
        channel: r.channel,
        devices: ctx.deviceCount,
        ...outcome,
      });
      ctx.moveChannel(actor);
      return;
    }
    if (needsAnalysis(r, r.currentWave) && ctx.devicesAfter(r.currentWave) > 0) {
      // The wave bakes; the judge (experiments/analysis-judge.ts) measures it and decides. The
      // gate guards every later wave: an empty next wave does not let the ones after it through.
      ctx.set('status', 'waiting_approval');
      ctx.set('analysis', {
        wave: r.currentWave,
        state: 'baking',
        startedAt: ctx.now,
        measurements: 0,
        failures: 0,
        detail: null,
      });
      ctx.audit(actor, 'rollout.analysis_started', {
        wave: waveNumber(r.currentWave),
        gateBefore: waveNumber(next),
        bakeTimeMs: r.strategy.analysis?.bakeTimeMs ?? null,
      });
      return;
    }
    if (effectiveApproval(r, next) === 'manual' && ctx.waveSize(next) > 0) {
      ctx.set('status', 'waiting_approval');
      ctx.audit(actor, 'rollout.gate_waiting', { wave: waveNumber(next) });
      return;
    }
    startWave(ctx, next, actor);
  }
}

/**
 * Whether the gate after wave `index` still needs its analysis: the wave has one, the rollout was
 * not promoted (promote approves every gate), and no analysis of this wave passed.
 */
export function needsAnalysis(r: Rollout, index: number): boolean {
  if (r.promoted || r.strategy.waves[index]?.analysis !== true) return false;
  return !(r.analysis?.wave === index && r.analysis.state === 'passed');
}

/**
 * An analysis gate still open at the current wave (baking, or inconclusive and waiting) ends
 * without a verdict of its own: `overridden` by an approve or promote, `cancelled` by a halt or
 * abort. The summary then says what happened to it, and the judge and the metrics store stop
 * following it.
 */
function closeAnalysis(ctx: Context, state: 'overridden' | 'cancelled'): void {
  const a = ctx.rollout.analysis;
  if (!a || a.wave !== ctx.rollout.currentWave || (a.state !== 'baking' && a.state !== 'inconclusive')) return;
  ctx.set('analysis', { ...a, state });
}

/**
 * A measurement of the analysis gate (docs/rollouts.md "Analysis gates"): `pass` goes on (to
 * the next wave, or to its manual gate with the evidence recorded), `fail` halts with the
 * numbers, `inconclusive` (the last measurement decided nothing) leaves the rollout waiting for
 * an operator, `measured` records a measurement that decided nothing yet.
 */
function onAnalysis(ctx: Context, event: Extract<RolloutEvent, { type: 'analysis' }>): void {
  const r = ctx.rollout;
  const a = r.analysis;
  if (
    r.status !== 'waiting_approval' ||
    !a ||
    a.state !== 'baking' ||
    a.wave !== event.wave ||
    r.currentWave !== event.wave
  ) {
    throw new OtaError(
      'E_ROLLOUT_STATE',
      `no analysis of wave ${waveNumber(event.wave)} is in progress on rollout ${r.id} (status ${r.status}${a ? `, analysis of wave ${waveNumber(a.wave)} ${a.state}` : ''})`,
    );
  }
  if (!Number.isInteger(event.measurement) || event.measurement <= a.measurements) {
    throw new OtaError(
      'E_ROLLOUT_STATE',
      `measurement ${event.measurement} of the analysis of wave ${waveNumber(a.wave)} on rollout ${r.id} was taken already (${a.measurements} so far)`,
    );
  }
  const measured = {
    ...a,
    measurements: event.measurement,
    failures: a.failures + (event.failed ? 1 : 0),
    detail: event.detail.slice(0, MAX_REASON),
  };
  const numbers = {
    wave: waveNumber(a.wave),
    measurement: measured.measurements,
    failures: measured.failures,
    detail: measured.detail,
  };
  switch (event.outcome) {
    case 'measured':
      ctx.set('analysis', measured);
      ctx.audit(event.actor, 'rollout.analysis_measured', numbers);
      return;
    case 'inconclusive':
      ctx.set('analysis', { ...measured, state: 'inconclusive' });
      ctx.audit(event.actor, 'rollout.analysis_inconclusive', numbers);
      return;
    case 'fail': {
      ctx.set('analysis', { ...measured, state: 'failed' });
      const stats = failureStats(r, ctx.tallies);
      ctx.set('status', 'halted');
      ctx.set('haltReason', `analysis of wave ${waveNumber(a.wave)} failed: ${measured.detail}`.slice(0, MAX_REASON));
      ctx.audit(event.actor, 'rollout.halted', {
        manual: false,
        analysis: numbers,
        ...haltNumbers(r, stats),
        reason: r.haltReason,
      });
      return;
    }
    case 'pass':
      ctx.set('analysis', { ...measured, state: 'passed' });
      ctx.audit(event.actor, 'rollout.analysis_passed', numbers);
      ctx.set('status', 'running');
      advance(ctx, event.actor);
      return;
  }
}

function haltRevoked(ctx: Context, reason: string, wave: number): void {
  const r = ctx.rollout;
  const stats = failureStats(r, ctx.tallies);
  ctx.set('status', 'halted');
  ctx.set('haltReason', `wave ${wave} not started: ${reason}`.slice(0, MAX_REASON));
  ctx.audit(SYSTEM, 'rollout.halted', {
    manual: false,
    revoked: true,
    ...haltNumbers(r, stats),
    reason: r.haltReason,
  });
}

/** The numbers every `rollout.halted` audit row carries: where the rollout stood when it stopped. */
function haltNumbers(r: Rollout, stats: ReturnType<typeof failureStats>) {
  return {
    wave: waveNumber(r.currentWave),
    failures: stats.count,
    acknowledged: stats.acknowledged,
    assigned: stats.assigned,
    rate: stats.rate,
    maxFailureRate: r.strategy.maxFailureRate,
  };
}

/** approve, promote and resume would assign the candidate: refused when it is revoked. */
function refuseRevoked(ctx: Context, op: string): void {
  const reason = ctx.revokedReason(ctx.rollout.releaseId);
  if (!reason) return;
  throw new OtaError(
    'E_RELEASE_REVOKED',
    `cannot ${op} rollout ${ctx.rollout.id}: ${reason}; abort this rollout (\`otactl rollout abort ${ctx.rollout.id}\`)`,
  );
}

function formatRate(rate: number, max: number): [string, string] {
  for (let digits = 2; digits < 8; digits++) {
    const a = rate.toFixed(digits);
    const b = max.toFixed(digits);
    if (a !== b) return [a, b];
  }
  return [String(rate), String(max)];
}

/** The automatic halt: true when it tripped. */
function applyHaltRule(ctx: Context, trigger: Record<string, unknown>): boolean {
  const r = ctx.rollout;
  if (!isAdvancingRollout(r.status)) return false;
  const stats = failureStats(r, ctx.tallies);
  const max = r.strategy.maxFailureRate;
  if (!(stats.rate > max)) return false;
  const [rate, maxText] = formatRate(stats.rate, max);
  const unacknowledged = stats.count - stats.acknowledged;
  const ack = stats.acknowledged > 0 ? `, ${stats.acknowledged} more acknowledged` : '';
  ctx.set('status', 'halted');
  ctx.set(
    'haltReason',
    `failure rate ${rate} (${unacknowledged} of ${stats.assigned} assigned${ack}) exceeds max ${maxText} in wave ${waveNumber(r.currentWave)}`,
  );
  ctx.audit(SYSTEM, 'rollout.halted', {
    manual: false,
    ...haltNumbers(r, stats),
    reason: r.haltReason,
    ...trigger,
  });
  return true;
}

function onStart(ctx: Context): void {
  const r = ctx.rollout;
  const pending = ctx.tallies.reduce((n, w) => n + w.counts.pending, 0);
  if (r.status !== 'running' || r.currentWave !== 0 || pending !== ctx.deviceCount) {
    throw new OtaError(
      'E_ROLLOUT_STATE',
      `cannot start rollout ${r.id}: it already started (status ${r.status}, wave ${waveNumber(r.currentWave)}); start is only the first event after create`,
    );
  }
  startWave(ctx, 0, SYSTEM);
  advance(ctx, SYSTEM);
}

const REPORTABLE: readonly RolloutDeviceState[] = ['assigned', 'downloading', 'verifying', 'applying', 'probing'];

function onReport(ctx: Context, event: Extract<RolloutEvent, { type: 'report' }>): void {
  if (!recordReport(ctx, event)) return;
  if (isFinishedRollout(ctx.rollout.status)) return;
  if (applyHaltRule(ctx, { device: event.deviceId })) return;
  advance(ctx, SYSTEM);
}

/**
 * The device-state part of a report; true when something changed. A finished rollout still
 * records a late report about its candidate (decisions are the caller's business).
 */
function recordReport(ctx: Context, event: Extract<RolloutEvent, { type: 'report' }>): boolean {
  const r = ctx.rollout;
  if (event.version !== r.version) return false;
  const device = ctx.device(event.deviceId);
  // Not started (pending), outcome already recorded, or sent back: nothing to act on.
  if (!device || device.revertedTo || !REPORTABLE.includes(device.state)) return false;
  const state: ModelState = event.state;
  if (state === 'idle' || state === device.state) return false;
  const late = isFinishedRollout(r.status);
  if (isOutcome(state)) {
    const error = state === 'healthy' ? null : (event.error ?? null);
    ctx.updateDevice(device, { state, finishedAt: ctx.now, error: error ? { ...error } : null });
    ctx.audit(SYSTEM, 'rollout.device_outcome', {
      device: device.deviceId,
      wave: waveNumber(device.wave),
      state,
      ...(error ? { error: { code: error.code, message: error.message } } : {}),
      ...(late ? { late: true, rolloutStatus: r.status } : {}),
    });
    // After the rollout ended nobody will decide about this device again: one that went back to
    // what it ran keeps it, and its desired state says so (the abort `keep` rule, docs/rollouts.md).
    if (late && isFailure(state) && !ctx.ownedElsewhere(device.deviceId)) {
      const to = ctx.revert(ctx.device(device.deviceId) ?? device);
      ctx.audit(SYSTEM, 'rollout.device_set_back', {
        device: device.deviceId,
        to: versionOrNull(to),
        reason: `${state} after the rollout was ${r.status}`,
      });
    }
  } else {
    ctx.updateDevice(device, { state });
  }
  return true;
}

function versionOrNull(releaseId: string | null): string | null {
  return releaseId === null ? null : versionOfRelease(releaseId);
}

function onPresence(ctx: Context, deviceId: string, online: boolean): void {
  if (recordPresence(ctx, deviceId, online)) advance(ctx, SYSTEM);
}

function recordPresence(ctx: Context, deviceId: string, online: boolean): boolean {
  if (isFinishedRollout(ctx.rollout.status)) return false;
  const device = ctx.device(deviceId);
  if (!device || device.online === online) return false;
  ctx.updateDevice(device, { online });
  return true;
}

export type DeviceEvent = Extract<RolloutEvent, { type: 'report' | 'presence' }>;

/**
 * Many device events at once (what arrived since the last decision), in one decision: each
 * event's device change is recorded in order, then the halt rule and wave progress are evaluated
 * once. The same outcome as one `decide` per event, except that no wave can start in the middle
 * of a batch whose later reports trip the halt rule (strictly safer), and it costs O(events +
 * waves) with the shell's live index (no copy of the rollout's rows, tallies instead of scans):
 * what lets one coordinator ingest a 10,000-device wave.
 */
export function decideBatch(
  rollout: Rollout,
  devices: readonly RolloutDevice[] | DeviceIndex,
  events: readonly DeviceEvent[],
  now: string,
  inputs: DecisionInputs = {},
): Decision {
  const ctx = new Context(rollout, asIndex(rollout, devices), now, inputs);
  const tripped: string[] = [];
  let changed = false;
  for (const event of events) {
    if (event.type === 'report') {
      if (recordReport(ctx, event)) {
        changed = true;
        if (isFailure(event.state)) tripped.push(event.deviceId);
      }
    } else if (recordPresence(ctx, event.deviceId, event.online)) {
      changed = true;
    }
  }
  if (changed && !isFinishedRollout(ctx.rollout.status)) {
    if (!applyHaltRule(ctx, tripped.length > 0 ? { device: tripped.at(-1) } : {})) advance(ctx, SYSTEM);
  }
  return ctx.decision();
}

function onApprove(ctx: Context, actor: string): void {
  const r = ctx.rollout;
  if (r.status !== 'waiting_approval') refuse(ctx, 'approve');
  refuseRevoked(ctx, 'approve');
  const next = r.currentWave + 1;
  ctx.set('status', 'running');
  // Approving while an analysis bakes or was inconclusive overrides it: the audit says so.
  const overridden = r.analysis && r.analysis.wave === r.currentWave && r.analysis.state !== 'passed';
  ctx.audit(actor, 'rollout.approved', {
    wave: waveNumber(next),
    actor,
    ...(overridden ? { analysis: r.analysis?.state } : {}),
  });
  closeAnalysis(ctx, 'overridden');
  startWave(ctx, next, actor);
  advance(ctx, actor);
}

function onPromote(ctx: Context, actor: string): void {
  const r = ctx.rollout;
  if (!isAdvancingRollout(r.status)) refuse(ctx, 'promote');
  refuseRevoked(ctx, 'promote');
  const waiting = r.status === 'waiting_approval';
  if (waiting) closeAnalysis(ctx, 'overridden');
  ctx.set('promoted', true);
  ctx.audit(actor, 'rollout.promoted', { wave: waveNumber(r.currentWave), actor });
  if (waiting) {
    ctx.set('status', 'running');
    startWave(ctx, r.currentWave + 1, actor);
  }
  advance(ctx, actor);
}

function onHalt(ctx: Context, actor: string, reason: string): void {
  const r = ctx.rollout;
  if (!isAdvancingRollout(r.status)) refuse(ctx, 'halt');
  const text = reason.trim() === '' ? `halted by ${actor}` : reason.trim().slice(0, MAX_REASON);
  const stats = failureStats(r, ctx.tallies);
  if (r.status === 'waiting_approval') closeAnalysis(ctx, 'cancelled');
  ctx.set('status', 'halted');
  ctx.set('haltReason', text);
  ctx.audit(actor, 'rollout.halted', {
    manual: true,
    reason: text,
    actor,
    ...haltNumbers(r, stats),
  });
}

function onResume(ctx: Context, actor: string): void {
  const r = ctx.rollout;
  if (r.status !== 'halted') refuse(ctx, 'resume');
  refuseRevoked(ctx, 'resume');
  const stats = failureStats(r, ctx.tallies);
  ctx.set('acknowledgedFailures', stats.count);
  ctx.set('status', 'running');
  ctx.set('haltReason', null);
  ctx.audit(actor, 'rollout.resumed', { acknowledged: stats.count, actor, wave: waveNumber(r.currentWave) });
  if (applyHaltRule(ctx, {})) return;
  advance(ctx, actor);
}

/**
 * Abort (design section 6, docs/rollouts.md "Abort"). Every device ends with a desired state that
 * says what it should run, and the audit row says which device went to which version:
 * - `revert`: every device whose wave started goes back to the release it last ran healthy
 *   (its revert target), whatever its outcome; devices not yet assigned keep what they have.
 * - `keep`: devices keep what they run. Healthy ones and those still converging keep the
 *   candidate; one that rolled back or failed runs its earlier release, and its desired state is
 *   set back to it (otherwise it would still name a candidate that failed there).
 */
function onAbort(ctx: Context, actor: string, policy: 'keep' | 'revert'): void {
  const r = ctx.rollout;
  if (isFinishedRollout(r.status)) refuse(ctx, 'abort');
  const byTarget = new Map<string | null, string[]>();
  for (const d of ctx.devices()) {
    if (d.state === 'pending' || d.revertedTo) continue;
    if (policy === 'keep' && !isFailure(d.state)) continue;
    const to = versionOrNull(ctx.revert(d));
    const list = byTarget.get(to);
    if (list) list.push(d.deviceId);
    else byTarget.set(to, [d.deviceId]);
  }
  const from = r.status;
  if (from === 'waiting_approval') closeAnalysis(ctx, 'cancelled');
  ctx.set('status', 'aborted');
  ctx.set('abortPolicy', policy);
  const setBack = [...byTarget].map(([version, devices]) => ({ version, devices }));
  const count = setBack.reduce((n, t) => n + t.devices.length, 0);
  ctx.audit(actor, 'rollout.aborted', {
    policy,
    actor,
    wave: waveNumber(r.currentWave),
    from,
    /** Devices whose desired state went back; per target version (null: entry removed, it keeps what it runs). */
    reverted: count,
    setBack,
  });
}
