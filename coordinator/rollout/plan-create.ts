import { OtaError } from '../../shared/errors.js';
import { releaseIdOf } from '../../shared/release-id.js';
import { assertAssignable, type Eligibility } from '../fleet/release-trust.js';
import type { WritePlan } from '../plan/write-plan.js';
import { decide } from './decide.js';
import { decisionPlan } from './decision-plan.js';
import { planWaves } from './plan-waves.js';
import { validateStrategy } from './strategy.js';
import type { DecisionInputs, Rollout, RolloutDevice } from './types.js';

/** What `planRolloutCreate` reads: a snapshot the shell takes from the store. */
export interface CreateSnapshot {
  releaseExists: boolean;
  /** Whether the candidate may still be assigned (release-trust.ts: not revoked). */
  eligibility: Eligibility;
  rolloutExists: boolean;
  /** The target, resolved and checked by the shell (every id is an enrolled device). */
  deviceIds: readonly string[];
  online(deviceId: string): boolean;
  /**
   * What owns the device's desired state for the model now: active rollouts (their id) and
   * running experiments (`experiment ID`).
   */
  busyIn(deviceId: string): readonly string[];
  /** The release the device's desired state names for the model before this rollout. */
  desiredBefore(deviceId: string): string | null;
  inputs: DecisionInputs;
}

export interface CreateInput {
  id: string;
  model: string;
  version: string;
  strategy: unknown;
  channel?: string | undefined;
}

/**
 * A new rollout (design section 6, `create`): the strategy checked, the candidate published and
 * not revoked (docs/security.md), no device in another active rollout of the model (one message,
 * naming them), the wave split computed once from the rollout id, each device's revert target
 * taken from what it runs, and wave 1 started in the same plan. Pure: a snapshot and `now` in, one write plan out.
 */
export function planRolloutCreate(
  input: CreateInput,
  snapshot: CreateSnapshot,
  actor: string,
  now: string,
): { rollout: Rollout; devices: RolloutDevice[]; plan: WritePlan } {
  const strategy = validateStrategy(input.strategy);
  const releaseId = releaseIdOf(input.model, input.version);
  if (!snapshot.releaseExists) {
    throw new OtaError(
      'E_NOT_FOUND',
      `no release ${releaseId}: publish it first (\`otactl release publish\`), see \`otactl release ls\``,
    );
  }
  assertAssignable(snapshot.eligibility);
  if (snapshot.rolloutExists) throw new OtaError('E_CONFLICT', `rollout ${input.id} already exists`);
  if (snapshot.deviceIds.length === 0) throw new OtaError('E_NOT_FOUND', 'the target resolves to no devices');
  const busy: string[] = [];
  for (const id of snapshot.deviceIds) {
    for (const other of snapshot.busyIn(id)) busy.push(`${id} (in ${other})`);
  }
  if (busy.length > 0) {
    throw new OtaError(
      'E_CONFLICT',
      `${busy.length} device(s) are already in an active rollout or running experiment of ${input.model}: ${busy.slice(0, 20).join(', ')}${busy.length > 20 ? ', ...' : ''}; finish or abort that rollout (stop that experiment) first, or leave these devices out`,
    );
  }
  const waves = planWaves(snapshot.deviceIds, strategy, input.id);
  const rollout: Rollout = {
    id: input.id,
    model: input.model,
    version: input.version,
    releaseId,
    channel: input.channel ?? 'stable',
    strategy,
    status: 'running',
    currentWave: 0,
    acknowledgedFailures: 0,
    haltReason: null,
    abortPolicy: null,
    promoted: false,
    createdBy: actor,
    createdAt: now,
    updatedAt: now,
  };
  const devices: RolloutDevice[] = snapshot.deviceIds.map((deviceId) => {
    // What it runs, as it reports it; a device that never reported: its desired state before.
    const running = snapshot.inputs.revertTargetOf?.(deviceId);
    return {
      deviceId,
      wave: waves.get(deviceId) ?? 0,
      state: 'pending',
      online: snapshot.online(deviceId),
      previousReleaseId: running === undefined ? snapshot.desiredBefore(deviceId) : running,
      revertedTo: null,
      assignedAt: null,
      finishedAt: null,
      error: null,
    };
  });
  const start = decide(rollout, devices, { type: 'start' }, now, snapshot.inputs);
  const plan = decisionPlan(rollout, start);
  plan.createRollout = { rollout, devices };
  plan.durable = true;
  plan.audit.unshift({
    actor,
    action: 'rollout.created',
    subject: `rollout:${input.id}`,
    details: {
      rolloutId: input.id,
      model: input.model,
      version: input.version,
      devices: snapshot.deviceIds.length,
      strategy,
      channel: rollout.channel,
    },
  });
  return { rollout, devices, plan };
}
