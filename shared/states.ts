/**
 * The one vocabulary of states both sides use (design section 2, "one vocabulary of states in
 * shared/"): what a device reports per model, where a device stands in a rollout, and a rollout's
 * status, with the sets every rule is written against. Nothing else defines "terminal", "active"
 * or "failed": import them from here.
 */

// ---- a model on a device (the agent's report) ----

/** What the agent reports per model (docs/protocol.md, "reported"). */
export const MODEL_STATES = [
  'idle',
  'downloading',
  'verifying',
  'applying',
  'probing',
  'healthy',
  'rolled_back',
  'failed',
] as const;
export type ModelState = (typeof MODEL_STATES)[number];

/** An update that has ended, one way or the other: nothing more happens until a new assignment. */
export const OUTCOME_STATES = ['healthy', 'rolled_back', 'failed'] as const satisfies readonly ModelState[];
export type OutcomeState = (typeof OUTCOME_STATES)[number];

/** Outcomes that count against a rollout's failure tolerance. */
export const FAILED_STATES = ['rolled_back', 'failed'] as const satisfies readonly ModelState[];

/** The update pipeline is under way on the device. */
export const IN_PROGRESS_STATES = [
  'downloading',
  'verifying',
  'applying',
  'probing',
] as const satisfies readonly ModelState[];

const OUTCOMES: ReadonlySet<string> = new Set(OUTCOME_STATES);
const FAILURES: ReadonlySet<string> = new Set(FAILED_STATES);

export function isOutcome(state: string): state is OutcomeState {
  return OUTCOMES.has(state);
}

export function isFailure(state: string): boolean {
  return FAILURES.has(state);
}

/** Nothing under way for the model on the device: idle, or an update ended (an outcome). */
export function isAtRest(state: string): boolean {
  return state === 'idle' || OUTCOMES.has(state);
}

// ---- a device in a rollout ----

/**
 * A device's place in a rollout (docs/rollouts.md, "Device states in a rollout"):
 * `pending`: its wave has not started; `assigned`: its desired state names the candidate and no
 * report about the candidate has arrived yet; then what the agent reports about the candidate.
 * A revert on abort does not change this state (the outcome stays what happened); it is recorded
 * beside it (`revertedTo`).
 */
export const ROLLOUT_DEVICE_STATES = ['pending', 'assigned', ...IN_PROGRESS_STATES, ...OUTCOME_STATES] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];

// ---- a rollout ----

export const ROLLOUT_STATUSES = ['running', 'waiting_approval', 'halted', 'completed', 'aborted'] as const;
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number];

/**
 * Not finished: the rollout owns its devices (no other rollout of the model may take them), its
 * reports are decided, and operators can act on it.
 */
export const ACTIVE_ROLLOUT_STATUSES = [
  'running',
  'waiting_approval',
  'halted',
] as const satisfies readonly RolloutStatus[];
/** Finished for good: nothing is decided any more (late reports still update the device picture). */
export const FINISHED_ROLLOUT_STATUSES = ['completed', 'aborted'] as const satisfies readonly RolloutStatus[];
/** Moving forward: the halt rule applies and waves may start (a halted rollout waits for resume). */
export const ADVANCING_ROLLOUT_STATUSES = ['running', 'waiting_approval'] as const satisfies readonly RolloutStatus[];

const ACTIVE: ReadonlySet<string> = new Set(ACTIVE_ROLLOUT_STATUSES);
const ADVANCING: ReadonlySet<string> = new Set(ADVANCING_ROLLOUT_STATUSES);

export function isActiveRollout(status: string): boolean {
  return ACTIVE.has(status);
}

export function isFinishedRollout(status: string): boolean {
  return !ACTIVE.has(status);
}

export function isAdvancingRollout(status: string): boolean {
  return ADVANCING.has(status);
}

/** What a wave shows in a rollout summary. */
export const WAVE_STATES = [
  'pending',
  'waiting_approval',
  'running',
  'halted',
  'completed',
  'aborted',
  'skipped',
] as const;
export type WaveState = (typeof WAVE_STATES)[number];
