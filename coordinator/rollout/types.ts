import type { ModelState, RolloutSummary } from '../../shared/messages.js';
import type { RolloutDeviceState, RolloutStatus } from '../../shared/states.js';
import type { AnalysisSpec } from './analysis-spec.js';

export type { RolloutDeviceState };

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
  /**
   * An analysis gate after this wave (`5:analysis`): once it completes, the next wave waits for
   * the strategy's analysis to pass (docs/rollouts.md "Analysis gates"). Not on the last wave.
   */
  analysis?: boolean;
}

export interface Strategy {
  waves: WaveSpec[];
  /** In [0, 1); 0 means the first unacknowledged failure halts. */
  maxFailureRate: number;
  /** What analysis gates check; required when a wave has one. */
  analysis?: AnalysisSpec;
}

/**
 * Where the rollout's analysis gate stands (null: none started). `baking` until a measurement
 * decides: `passed` lets the rollout go on, `failed` halted it, `inconclusive` waits for an
 * operator (approve, halt or abort); `overridden` by an approve or promote before a verdict,
 * `cancelled` by a halt or abort.
 */
export interface AnalysisState {
  /** The wave (0-based) whose devices are analysed; the gate is before the next one. */
  wave: number;
  state: 'baking' | 'passed' | 'failed' | 'inconclusive' | 'overridden' | 'cancelled';
  startedAt: string;
  /** Measurements taken, and how many of them failed. */
  measurements: number;
  failures: number;
  /** The last measurement in a line, with its numbers. */
  detail: string | null;
}

export type AbortPolicy = 'keep' | 'revert';

export interface RolloutDevice {
  deviceId: string;
  /** Index into strategy.waves; computed once at create time (planWaves), never recomputed. */
  wave: number;
  state: RolloutDeviceState;
  /** Last known connection state (status topic / LWT); offline devices do not block a wave. */
  online: boolean;
  /**
   * Where an abort with revert sends the device (design section 6, "a revert goes back to the
   * release the device last ran healthy"): the release it reported as current and healthy before
   * this rollout touched it; null when it ran no release of the model (the entry is removed).
   */
  previousReleaseId: string | null;
  /** Set when an abort with revert set the device's desired state back: the release it went to (null: removed). */
  revertedTo: { releaseId: string | null } | null;
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
  /** The analysis gate in progress or last decided (absent on rollouts made before analysis existed). */
  analysis?: AnalysisState | null;
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
  | { type: 'abort'; actor: string; policy: AbortPolicy }
  /**
   * A measurement of the analysis gate of `wave` (the judge, experiments/analysis-judge.ts):
   * `pass` and `fail` decide the gate; `measured` records one that did not decide; `inconclusive`
   * is the last measurement without a decision (the rollout waits for an operator).
   */
  | {
      type: 'analysis';
      actor: string;
      wave: number;
      /** The measurement's number, from 1 (measurements missed while the coordinator was down are skipped). */
      measurement: number;
      outcome: 'pass' | 'fail' | 'measured' | 'inconclusive';
      failed: boolean;
      detail: string;
    };

/** What the shell must do to a device's desired state for this rollout's model. */
export type Assignment =
  | { deviceId: string; kind: 'assign'; releaseId: string }
  /** Back to `releaseId`; null: the device had no release of this model before, remove the entry. */
  | { deviceId: string; kind: 'revert'; releaseId: string | null };

/**
 * What a decision may read besides the rollout's own rows: a snapshot the shell passes in, so the
 * engine stays a pure function.
 */
export interface DecisionInputs {
  /**
   * The revert target of a device as of now (revert-target.ts: the release it runs, if published
   * here; null: none), or undefined when the device never reported the model.
   */
  revertTargetOf?: (deviceId: string) => string | null | undefined;
  /**
   * Why a published release may not be assigned any more (revoked: its valid signatures from
   * keys the coordinator trusts fell below the threshold, fleet/release-trust.ts), or null.
   * Checked for the candidate before each wave and for each revert target.
   */
  revokedReason?: (releaseId: string) => string | null;
  /**
   * Whether another writer owns the device's desired state for the model now (an active rollout
   * other than this one, a running experiment): a finished rollout then leaves it alone.
   */
  ownedElsewhere?: (deviceId: string) => boolean;
}

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

/**
 * One device of a rollout as `rollout.status` returns it (otactl, the dashboard, scripts): waves
 * numbered from 1 like everywhere an operator looks, and what the device reports now for the
 * model (its last report), so an operator sees where a reverted or late device is.
 */
export interface RolloutDeviceView {
  id: string;
  /** From 1. */
  wave: number;
  state: RolloutDeviceState;
  online: boolean;
  assignedAt: string | null;
  finishedAt: string | null;
  /** The error of its outcome (rolled_back, failed). */
  error: { code: string; message: string } | null;
  /** Set when an abort with revert set its desired state back: the version it was sent (null: none, it keeps what it runs). */
  revertedTo: { version: string | null } | null;
  /** Its last report for the rollout's model: state, the version that state is about, what it runs, progress, error. */
  now: {
    state: ModelState;
    version: string | null;
    current: string | null;
    progress: { bytes: number; total: number } | null;
    error: { code: string; message: string } | null;
    updatedAt: string;
  } | null;
}

/** The reply of `rollout.status`. */
export interface RolloutStatusResult {
  summary: RolloutSummary;
  rollout: {
    channel: string;
    strategy: Strategy;
    promoted: boolean;
    createdBy: string;
    createdAt: string;
  };
  /** The devices asked for (all of them, or the page `offset`/`limit` chose), by wave, then device id. */
  devices: RolloutDeviceView[];
  /** How many devices the rollout has (more than `devices` when a page was asked for). */
  devicesTotal: number;
}

/** Which of a rollout's devices `rollout.status` lists: from `offset` (default 0), at most `limit` (default all). */
export interface DevicePage {
  /** Only the devices of this wave (1-based, as shown), before the page is taken. */
  wave?: number | undefined;
  /** Only the devices in this rollout state, before the page is taken. */
  state?: string | undefined;
  /** 'attention': failed first, then unfinished, then healthy (attention-order.ts), by id within each. */
  order?: 'attention' | undefined;
  offset?: number | undefined;
  limit?: number | undefined;
}
