/**
 * The data of an experiment (docs/experiments.md, design section 11): an explicit A/B split of a
 * group between two published releases of one model, compared on the devices' metric summaries.
 * Pure values: the store keeps them, the planners decide over them.
 */

export type Arm = 'control' | 'candidate';

/**
 * `running` owns its devices (no rollout, channel move or other experiment writes their desired
 * state for the model); every other status is final and releases them.
 *  - `halted`: a guardrail metric was significantly worse than its threshold at a planned look;
 *    the candidate arm was sent back to the control release.
 *  - `stopped`: an operator ended it (`stop`, `stop --revert`).
 *  - `promoted`: an operator handed the candidate to a rollout or a channel move.
 */
export type ExperimentStatus = 'running' | 'halted' | 'stopped' | 'promoted';

/** What a metric is computed from, per device (metric-spec.ts). */
export type MetricName = 'latency_ms' | 'confidence' | 'error_rate' | { value: string };
export type MetricStat = 'p50' | 'p90' | 'p95' | 'p99' | 'mean' | 'rate';

/**
 * One `--metric`: `latency_ms p95 <= +10%` reads "the candidate's p95 latency may be at most 10%
 * above the control's". `<=`: lower is better; `>=`: higher is better.
 */
export interface MetricSpec {
  /** As the operator wrote it, normalized (`latency_ms p95 <= +10%`). */
  text: string;
  metric: 'latency_ms' | 'confidence' | 'error_rate' | 'value';
  /** For `value`: the custom value's name (docs/metrics.md). */
  valueName: string | null;
  stat: MetricStat;
  direction: 'lower_is_better' | 'higher_is_better';
  /**
   * The allowed difference, candidate minus control, on the bad side. `relative`: a fraction of
   * the control (0.1 for +10%); `absolute`: in the metric's unit (0.005 for +0.5pp).
   */
  threshold: { kind: 'relative' | 'absolute'; value: number };
}

export interface Experiment {
  id: string;
  model: string;
  control: { version: string; releaseId: string };
  candidate: { version: string; releaseId: string };
  group: string;
  /** Percent of the group assigned to the candidate arm, 1-99. */
  split: number;
  metrics: MetricSpec[];
  /** No automatic decision before this much time has passed since the start. */
  minDurationMs: number;
  /** No automatic decision before each arm has this many reporting devices. */
  minDevices: number;
  /** The family-wise false-alarm rate of the automatic halt (docs/experiments.md). */
  alpha: number;
  status: ExperimentStatus;
  /** Why it halted or stopped, with the numbers. */
  endReason: string | null;
  /** The last planned look taken by the automatic judge (0: none yet). */
  looksDone: number;
  /** The last look's outcome in a line (what `status` shows), or null before the first. */
  lastLook: LookRecord | null;
  /** Set by promote: what took the candidate on. */
  promotedTo: { rolloutId: string } | { channel: string } | null;
  createdBy: string;
  startedAt: string;
  updatedAt: string;
  endedAt: string | null;
}

export interface LookRecord {
  look: number;
  at: string;
  /** `halt`, or why no decision was taken (`continue`, `not_ready`, `srm`). */
  outcome: 'halt' | 'continue' | 'not_ready' | 'srm';
  detail: string;
}

export interface ExperimentDevice {
  deviceId: string;
  arm: Arm;
  /** The release its desired state named for the model before the experiment (null: none). */
  previousReleaseId: string | null;
}
