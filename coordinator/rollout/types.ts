import type { ModelState, RolloutStatus } from '../../shared/messages.js';

/**
 * The data the rollout engine decides over (design section 6). Pure values: the store loads
 * them, `decide` returns what changes, the shell writes it in one transaction and publishes.
 */

export type Approval = 'auto' | 'manual';

export interface WaveSpec {
  /** Cumulative share of the target, 0 < percent <= 100, strictly increasing; the last is 100. */
  percent: number;
  /** `manual`: the rollout parks in `waiting_approval` before this wave starts (not for wave 0). */
  approval: Approval;
}

export interface Strategy {
  waves: WaveSpec[];
  /** In [0, 1); 0 means the first unacknowledged failure halts. */
  maxFailureRate: number;
}

export type AbortPolicy = 'keep' | 'revert';

/**
 * A device's place in a rollout. `pending`: its wave has not started. `assigned`: its desired
 * state names the candidate, no report for it yet. Then the agent's reported states
 * (`downloading` ... `healthy` | `rolled_back` | `failed`). `reverted`: aborted with revert and
 * its desired state set back.
 */
export type RolloutDeviceState = 'pending' | 'assigned' | Exclude<ModelState, 'idle'> | 'reverted';

export const TERMINAL_DEVICE_STATES: readonly RolloutDeviceState[] = ['healthy', 'rolled_back', 'failed'];
export const FAILED_DEVICE_STATES: readonly RolloutDeviceState[] = ['rolled_back', 'failed'];

export interface RolloutDevice {
  deviceId: string;
  /** Index into strategy.waves; computed once at create time (planWaves), never recomputed. */
  wave: number;
  state: RolloutDeviceState;
  /** Last known connection state (status topic / LWT); offline devices do not block a wave. */
  online: boolean;
  /** The release the device's desired state named before this rollout touched it (revert target). */
  previousReleaseId: string | null;
  assignedAt: string | null;
  finishedAt: string | null;
  /** Error of the terminal report, when it failed. */
  error: { code: string; message: string } | null;
}

export interface Rollout {
  id: string;
  model: string;
  version: string;
  /** The candidate release (model@version). */
  releaseId: string;
  /** Channel whose pointer moves to the candidate on completion (default `stable`). */
  channel: string;
  strategy: Strategy;
  status: RolloutStatus;
  /** Highest wave index started so far (0 once created). */
  currentWave: number;
  /** Failures acknowledged by `resume`: they no longer count towards the halt rule. */
  acknowledgedFailures: number;
  /**
   * Set by `promote`: every remaining wave is approved, later manual gates no longer park the
   * rollout (default false at create).
   */
  promoted: boolean;
  haltReason: string | null;
  abortPolicy: AbortPolicy | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export type RolloutEvent =
  /** Right after create: wave 0 starts. */
  | { type: 'start' }
  /** A device's report for this rollout's model and rollout id. */
  | {
      type: 'report';
      deviceId: string;
      state: ModelState;
      version: string;
      error: { code: string; message: string } | null;
    }
  | { type: 'presence'; deviceId: string; online: boolean }
  | { type: 'approve'; actor: string }
  | { type: 'promote'; actor: string }
  | { type: 'halt'; actor: string; reason: string }
  | { type: 'resume'; actor: string }
  | { type: 'abort'; actor: string; policy: AbortPolicy };

/** What the shell must do to a device's desired state for this rollout's model. */
export type Assignment =
  | { deviceId: string; kind: 'assign'; releaseId: string }
  /** Back to `releaseId`; null: the device had no release of this model before, remove the entry. */
  | { deviceId: string; kind: 'revert'; releaseId: string | null };

/** An audit row to append (the shell adds seq, ts, hashes). */
export interface AuditDraft {
  actor: string;
  action: string;
  subject: string | null;
  details: Record<string, unknown>;
}

export interface Decision {
  /** Fields of the rollout that change (updatedAt included when anything changes). */
  patch: Partial<Rollout>;
  /** Device rows that change, whole (state, assignedAt, finishedAt, online, error). */
  devices: RolloutDevice[];
  assignments: Assignment[];
  audit: AuditDraft[];
  /** On completion: move `channel` to the candidate release. */
  channelMove: { channel: string; model: string; releaseId: string } | null;
}
