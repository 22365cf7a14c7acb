import { OtaError } from '../../shared/errors.js';
import { releaseIdOf } from '../../shared/release-id.js';
import { assertAssignable, type Eligibility } from '../fleet/release-trust.js';
import { emptyPlan, type WritePlan } from '../plan/write-plan.js';
import { armOf } from './assign.js';
import { type Comparison, evidenceOf, formatDuration, MIN_DEVICES_FOR_VERDICT } from './compare.js';
import { parseMetricSpecs } from './metric-spec.js';
import type { Arm, Experiment, ExperimentDevice, LookRecord } from './types.js';

/**
 * The planners of experiments (docs/experiments.md): create, a planned look of the automatic
 * judge, and the ends (halt, stop, promote). Pure: a snapshot and `now` in, one write plan out;
 * the shell (experiment-service.ts) commits it with the one PlanExecutor, which signs and
 * publishes the desired states. An experiment writes desired state like a rollout does: through
 * the normal signed path, so each arm's devices verify, probe and roll back as for any update.
 */

export const DEFAULT_MIN_DURATION_MS = 30 * 60_000;
export const DEFAULT_MIN_DEVICES = 10;
export const DEFAULT_ALPHA = 0.05;
const MIN_DURATION_FLOOR_MS = 60_000;
/** At most a year: planned looks are dated from it (and a date past year 275760 does not exist). */
export const MAX_MIN_DURATION_MS = 365 * 86_400_000;

export interface CreateExperimentInput {
  id: string;
  model: string;
  control: string;
  candidate: string;
  group: string;
  /** Percent of the group in the candidate arm. */
  split: number;
  metrics: readonly string[];
  minDurationMs?: number | undefined;
  minDevices?: number | undefined;
  alpha?: number | undefined;
}

export interface CreateExperimentSnapshot {
  /** Per arm: whether the release is published, and whether it may be assigned (not revoked). */
  release: (releaseId: string) => Eligibility | null;
  /** The id names an experiment or a rollout already. */
  idTaken: boolean;
  /** The group's devices (resolved and checked by the shell). */
  deviceIds: readonly string[];
  /** What owns the device's desired state for the model now (`rollout ro-1`, `experiment exp-2`). */
  ownersOf: (deviceId: string) => readonly string[];
  /** The release the device's desired state names for the model now, or null. */
  desiredBefore: (deviceId: string) => string | null;
}

function spec(message: string): never {
  throw new OtaError('E_EXPERIMENT_SPEC', message);
}

export function planExperimentCreate(
  input: CreateExperimentInput,
  snapshot: CreateExperimentSnapshot,
  actor: string,
  now: string,
): { experiment: Experiment; devices: ExperimentDevice[]; plan: WritePlan } {
  if (!Number.isInteger(input.split) || input.split < 1 || input.split > 99) {
    spec(`--split ${input.split}: give the candidate arm's percent of the group, a whole number from 1 to 99`);
  }
  if (input.control === input.candidate) {
    spec(`control and candidate are both ${input.control}: compare two different versions`);
  }
  const minDurationMs = input.minDurationMs ?? DEFAULT_MIN_DURATION_MS;
  if (!Number.isFinite(minDurationMs) || minDurationMs < MIN_DURATION_FLOOR_MS || minDurationMs > MAX_MIN_DURATION_MS) {
    spec(
      `--min-duration must be from 1m (the first planned look is at the minimum duration) to 365d, got ${minDurationMs} ms`,
    );
  }
  const minDevices = input.minDevices ?? DEFAULT_MIN_DEVICES;
  if (!Number.isInteger(minDevices) || minDevices < MIN_DEVICES_FOR_VERDICT) {
    spec(
      `--min-devices must be a whole number of at least ${MIN_DEVICES_FOR_VERDICT} reporting devices per arm, got ${minDevices}`,
    );
  }
  const alpha = input.alpha ?? DEFAULT_ALPHA;
  if (!(alpha > 0 && alpha <= 0.2)) spec(`--alpha must be in (0, 0.2], got ${alpha}`);
  const metrics = parseMetricSpecs(input.metrics);
  const releases: Record<Arm, string> = {
    control: releaseIdOf(input.model, input.control),
    candidate: releaseIdOf(input.model, input.candidate),
  };
  for (const arm of ['control', 'candidate'] as const) {
    const eligibility = snapshot.release(releases[arm]);
    if (!eligibility) {
      throw new OtaError(
        'E_NOT_FOUND',
        `no release ${releases[arm]} (the ${arm}): publish it first (\`otactl release publish\`), see \`otactl release ls --model ${input.model}\``,
      );
    }
    assertAssignable(eligibility);
  }
  if (snapshot.idTaken) throw new OtaError('E_CONFLICT', `the id ${input.id} is taken by an experiment or a rollout`);
  if (snapshot.deviceIds.length === 0) throw new OtaError('E_NOT_FOUND', `group ${input.group} has no devices`);
  const busy: string[] = [];
  for (const id of snapshot.deviceIds) {
    for (const owner of snapshot.ownersOf(id)) busy.push(`${id} (in ${owner})`);
  }
  if (busy.length > 0) {
    throw new OtaError(
      'E_CONFLICT',
      `${busy.length} device(s) of group ${input.group} are owned by an active rollout or running experiment of ${input.model}: ${busy.slice(0, 20).join(', ')}${busy.length > 20 ? ', ...' : ''}; finish, abort or stop it first, or use a group without them`,
    );
  }
  const devices: ExperimentDevice[] = snapshot.deviceIds.map((deviceId) => ({
    deviceId,
    arm: armOf(input.id, deviceId, input.split),
    previousReleaseId: snapshot.desiredBefore(deviceId),
  }));
  const count = (arm: Arm) => devices.filter((d) => d.arm === arm).length;
  const arms = { control: count('control'), candidate: count('candidate') };
  for (const arm of ['control', 'candidate'] as const) {
    if (arms[arm] === 0) {
      spec(
        `a ${100 - input.split}/${input.split} split of group ${input.group}'s ${devices.length} device(s) puts none in the ${arm} arm: use a larger group or a split nearer 50`,
      );
    }
  }
  const experiment: Experiment = {
    id: input.id,
    model: input.model,
    control: { version: input.control, releaseId: releases.control },
    candidate: { version: input.candidate, releaseId: releases.candidate },
    group: input.group,
    split: input.split,
    metrics,
    minDurationMs,
    minDevices,
    alpha,
    status: 'running',
    endReason: null,
    looksDone: 0,
    lastLook: null,
    promotedTo: null,
    createdBy: actor,
    startedAt: now,
    updatedAt: now,
    endedAt: null,
  };
  const plan = emptyPlan();
  plan.createExperiment = { experiment, devices };
  for (const d of devices) {
    const releaseId = releases[d.arm];
    // A device that already should run its arm's release is left alone: no new signed state.
    if (snapshot.desiredBefore(d.deviceId) === releaseId) continue;
    plan.desired.push({
      kind: 'set',
      deviceId: d.deviceId,
      model: input.model,
      releaseId,
      rolloutId: input.id,
      source: 'experiment',
    });
  }
  plan.audit.push({
    actor,
    action: 'experiment.created',
    subject: `experiment:${input.id}`,
    details: {
      experimentId: input.id,
      model: input.model,
      control: input.control,
      candidate: input.candidate,
      group: input.group,
      split: input.split,
      arms,
      metrics: metrics.map((m) => m.text),
      minDuration: formatDuration(minDurationMs),
      minDevices,
      alpha,
    },
  });
  return { experiment, devices, plan };
}

/** Refuses a change to an experiment that ended. */
export function assertRunning(e: Experiment, action: string): void {
  if (e.status !== 'running') {
    throw new OtaError(
      'E_EXPERIMENT_STATE',
      `experiment ${e.id} is ${e.status}${e.endReason ? ` (${e.endReason})` : ''}: it cannot ${action} any more; create a new experiment`,
    );
  }
}

export interface EndInput {
  status: 'halted' | 'stopped' | 'promoted';
  /** Send the candidate arm back to the control release. */
  revert: boolean;
  reason: string;
  actor: string;
  /** The comparison the end is decided on (its evidence goes to the audit). */
  comparison: Comparison | null;
  look?: LookRecord;
  promotedTo?: Experiment['promotedTo'];
  /** Why the control release may not be assigned any more (revoked since the start), or null. */
  controlRevoked?: string | null;
  /** Whether a device is still enrolled (one removed since the start gets no desired state). */
  exists?: (deviceId: string) => boolean;
}

/** The evidence of a comparison in a line per metric, for the audit. */
export function evidence(c: Comparison): { summary: string; metrics: string[] } {
  const metrics = c.metrics.map(evidenceOf);
  const summary = `after ${c.control.reporting + c.candidate.reporting} reporting devices (control ${c.control.reporting}, candidate ${c.candidate.reporting}) for ${formatDuration(c.elapsedMs)}: ${metrics.join('; ')}`;
  return { summary, metrics };
}

/**
 * Ends a running experiment: its status, why, and (revert) the candidate arm's devices sent back
 * to the control release through the normal signed path. The devices are released to other
 * writers once this commits.
 */
export function planExperimentEnd(
  e: Experiment,
  devices: readonly ExperimentDevice[],
  input: EndInput,
  now: string,
): { experiment: Experiment; plan: WritePlan } {
  assertRunning(e, input.status === 'promoted' ? 'be promoted' : 'be stopped');
  const experiment: Experiment = {
    ...e,
    status: input.status,
    endReason: input.reason,
    endedAt: now,
    updatedAt: now,
    promotedTo: input.promotedTo ?? null,
  };
  if (input.look) {
    experiment.lastLook = input.look;
    experiment.looksDone = Math.max(e.looksDone, input.look.look);
  }
  const plan = emptyPlan();
  plan.updateExperiment = experiment;
  const reverted: string[] = [];
  let gone = 0;
  if (input.revert) {
    for (const d of devices) {
      if (d.arm !== 'candidate') continue;
      if (input.exists && !input.exists(d.deviceId)) {
        gone++;
        continue;
      }
      reverted.push(d.deviceId);
      // A control revoked since the start is never assigned again (docs/security.md): the entry
      // goes, and the agent keeps what it runs, as a rollout's revert does.
      plan.desired.push(
        input.controlRevoked
          ? { kind: 'remove', deviceId: d.deviceId, model: e.model }
          : {
              kind: 'set',
              deviceId: d.deviceId,
              model: e.model,
              releaseId: e.control.releaseId,
              rolloutId: null,
              source: 'revert',
            },
      );
    }
  }
  const proof = input.comparison ? evidence(input.comparison) : null;
  plan.audit.push({
    actor: input.actor,
    action: `experiment.${input.status}`,
    subject: `experiment:${e.id}`,
    details: {
      experimentId: e.id,
      model: e.model,
      control: e.control.version,
      candidate: e.candidate.version,
      reason: input.reason,
      revertedDevices: reverted.length,
      ...(gone > 0 ? { removedDevices: gone } : {}),
      ...(input.revert && input.controlRevoked ? { controlRevoked: input.controlRevoked } : {}),
      ...(input.look && input.comparison ? { look: input.look.look, level: input.comparison.look.level } : {}),
      ...(input.promotedTo ? { promotedTo: input.promotedTo } : {}),
      ...(proof ? { evidence: proof.summary, metrics: proof.metrics } : {}),
    },
  });
  return { experiment, plan };
}

/**
 * The automatic judge at a planned look (docs/experiments.md, "Automatic decisions"): nothing
 * before the minimum duration and device count, nothing while the sample ratio is off, a halt
 * with a revert of the candidate arm when a metric is significantly worse than its threshold,
 * otherwise on to the next look. Returns null when the look was taken already.
 */
export function planLook(
  e: Experiment,
  devices: readonly ExperimentDevice[],
  c: Comparison,
  now: string,
  facts: Pick<EndInput, 'controlRevoked' | 'exists'> = {},
): { experiment: Experiment; plan: WritePlan; halted: boolean } | null {
  if (e.status !== 'running' || c.look.index <= e.looksDone) return null;
  const worse = c.metrics.filter((m) => m.verdict === 'worse');
  let look: LookRecord;
  if (!c.ready) {
    look = {
      look: c.look.index,
      at: now,
      outcome: c.srm.flagged ? 'srm' : 'not_ready',
      detail: `no automatic decision: ${c.notReady.join('; ')}`,
    };
  } else if (worse.length > 0) {
    look = {
      look: c.look.index,
      at: now,
      outcome: 'halt',
      detail: `guardrail breached: ${worse.map(evidenceOf).join('; ')}`,
    };
    const ended = planExperimentEnd(
      e,
      devices,
      { status: 'halted', revert: true, reason: look.detail, actor: 'coordinator', comparison: c, look, ...facts },
      now,
    );
    return { ...ended, halted: true };
  } else {
    look = {
      look: c.look.index,
      at: now,
      outcome: 'continue',
      detail: `no guardrail breached: ${c.metrics.map(evidenceOf).join('; ')}`,
    };
  }
  const experiment: Experiment = { ...e, looksDone: c.look.index, lastLook: look, updatedAt: now };
  const plan = emptyPlan();
  plan.updateExperiment = experiment;
  plan.audit.push({
    actor: 'coordinator',
    action: 'experiment.look',
    subject: `experiment:${e.id}`,
    details: { experimentId: e.id, look: look.look, outcome: look.outcome, detail: look.detail, level: c.look.level },
  });
  return { experiment, plan, halted: false };
}
