import type { Experiment, ExperimentDevice } from '../experiments/types.js';
import type { Rollout, RolloutDevice } from '../rollout/types.js';
import type { AuditDraft } from '../store/records.js';

/**
 * What one decision writes (design section 2: "every writer of state is a planner returning one
 * write plan, and ONE executor commits any plan and then signs and publishes"). Planners are pure
 * functions of a snapshot and `now`; `commitPlan` (commit-plan.ts) writes a plan in one SQLite
 * transaction, then publishes the signed desired states and the audit rows. Nothing here decides.
 */
export type DesiredChange =
  | {
      kind: 'set';
      deviceId: string;
      model: string;
      releaseId: string;
      rolloutId: string | null;
      /** Which writer: 'rollout', 'revert', 'channel', 'enrolment', 'experiment'. */
      source: DesiredSource;
    }
  /** The device had no release of the model to go back to: the entry goes, the agent keeps what it runs. */
  | { kind: 'remove'; deviceId: string; model: string };

export type DesiredSource = 'rollout' | 'revert' | 'channel' | 'enrolment' | 'experiment';

export interface WritePlan {
  /** A new device (enrolment): its row, with the hash of its token. */
  createDevice: { id: string; labels: Record<string, string>; channel: string; tokenHash: string } | null;
  /** A new rollout and its device rows (rollout create). */
  createRollout: { rollout: Rollout; devices: RolloutDevice[] } | null;
  /** A new experiment and its arms (experiment create). */
  createExperiment: { experiment: Experiment; devices: ExperimentDevice[] } | null;
  /** An existing experiment, whole, as it is after the change (looks, halt, stop, promote). */
  updateExperiment: Experiment | null;
  /** Fields of an existing rollout that change. */
  rolloutPatch: { id: string; patch: Partial<Rollout> } | null;
  /** Rollout device rows that change, whole. */
  rolloutDevices: { rolloutId: string; devices: RolloutDevice[] } | null;
  desired: DesiredChange[];
  /** Channel pointers that move (a completed rollout, `channel set`). */
  channelMoves: { model: string; channel: string; releaseId: string }[];
  /**
   * Devices whose desired seq moves up to at least `seq` (one they reported having accepted: the
   * database was restored from a backup), their desired state then signed again above it.
   */
  seqFloors: { deviceId: string; seq: number }[];
  audit: AuditDraft[];
  /**
   * false: nothing here is lost for good by a power cut (a device row the agents' reports will
   * move again), so the commit skips its own fsync (write-behind); true for everything else.
   */
  durable: boolean;
}

export function emptyPlan(): WritePlan {
  return {
    createDevice: null,
    createRollout: null,
    createExperiment: null,
    updateExperiment: null,
    rolloutPatch: null,
    rolloutDevices: null,
    desired: [],
    channelMoves: [],
    seqFloors: [],
    audit: [],
    durable: true,
  };
}

export function isEmptyPlan(plan: WritePlan): boolean {
  return (
    plan.createDevice === null &&
    plan.createRollout === null &&
    plan.createExperiment === null &&
    plan.updateExperiment === null &&
    (plan.rolloutPatch === null || Object.keys(plan.rolloutPatch.patch).length === 0) &&
    (plan.rolloutDevices === null || plan.rolloutDevices.devices.length === 0) &&
    plan.desired.length === 0 &&
    plan.channelMoves.length === 0 &&
    plan.seqFloors.length === 0 &&
    plan.audit.length === 0
  );
}
