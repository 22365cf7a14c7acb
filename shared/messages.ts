import { z } from 'zod';
import { EnvelopeSchema } from './envelope.js';
import { ERROR_CODES } from './errors.js';
import { idRecordSchema } from './id-record.js';
import {
  CONFIDENCE_BINS,
  MAX_SERIES,
  MAX_SKETCH_KEY,
  MAX_VALUE_MAGNITUDE,
  MAX_VALUE_NAMES,
  MAX_WINDOW_SECONDS,
  METRIC_SOURCES,
  VALUE_NAME_PATTERN,
} from './metrics/limits.js';
import { MAX_SKETCH_LEVEL, MAX_WIRE_BINS } from './metrics/sketch.js';
import { ID_PATTERN, VERSION_PATTERN } from './names.js';
import { SignatureSchema } from './signatures.js';
import {
  MODEL_STATES,
  type ModelState,
  ROLLOUT_DEVICE_STATES,
  ROLLOUT_STATUSES,
  type RolloutStatus,
  WAVE_STATES,
} from './states.js';
import { MAX_TRUST_CHAIN, TrustEnvelopeSchema } from './trust.js';

/**
 * Payload schemas for every topic of design section 3. Exported as JSON Schema under
 * docs/schemas/ (`npm run docs:schemas`) so fleet scripts in any language can validate.
 *
 * Messages devices send (reported, status, metrics) accept and drop unknown fields so a newer
 * agent can talk to an older coordinator; signed and command payloads are strict.
 */

export const MAX_MODELS = 32;
const id = z.string().regex(ID_PATTERN, 'must be 1-64 letters, digits, ".", "_", "-" (no "/", "..", "+", "#")');
const version = z.string().regex(VERSION_PATTERN, 'must be a version: 1-64 letters, digits, ".", "_", "+", "-"');
const isoDate = z.iso.datetime({ offset: true });
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const text = (max: number) => z.string().max(max);

/** Keyed by model name: parsed without a prototype, as a model may be named `constructor` (id-record.ts). */
function perModel<T extends z.ZodType>(value: T) {
  return idRecordSchema(id, value).refine(
    (o) => Object.keys(o).length <= MAX_MODELS,
    `at most ${MAX_MODELS} models per device`,
  );
}

export const ErrorInfoSchema = z.object({
  code: text(64).regex(/^E_[A-Z0-9_]+$/, 'must be an error code like E_DIGEST'),
  message: text(2000),
});
export type ErrorInfo = z.infer<typeof ErrorInfoSchema>;
export const KNOWN_ERROR_CODES = Object.keys(ERROR_CODES);

// ---- desired (coordinator -> device, retained, signed by the coordinator key) ----

export const DESIRED_TYPE = 'ota.desired/v1';

export const DesiredModelSchema = z.strictObject({
  /** The signed release envelope, verified on the device against its trusted release keys. */
  envelope: EnvelopeSchema,
  rolloutId: id.nullable(),
});

/** The signed part. `seq` increases with every desired state a device is sent. */
export const DesiredStateSchema = z.strictObject({
  type: z.literal(DESIRED_TYPE),
  deviceId: id,
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  issuedAt: isoDate,
  models: perModel(DesiredModelSchema),
  /**
   * The newest trust documents, oldest first (shared/trust.ts): signed by release keys, relayed
   * by the coordinator, which cannot forge them. Absent until one is published.
   */
  trust: z.array(TrustEnvelopeSchema).min(1).max(MAX_TRUST_CHAIN).optional(),
});
export type DesiredState = z.infer<typeof DesiredStateSchema>;

/** What travels on the topic: the exact signed text of a DesiredState and its signature(s). */
export const DesiredMessageSchema = z.strictObject({
  desired: z.string().min(2).max(200_000),
  signatures: z.array(SignatureSchema).min(1).max(4),
});
export type DesiredMessage = z.infer<typeof DesiredMessageSchema>;

// ---- reported (device -> coordinator, retained) ----

export const ModelStateSchema = z.enum(MODEL_STATES);
export type { ModelState };

export const ReportedModelSchema = z.object({
  state: ModelStateSchema,
  /** The version this state is about: the one being installed, or the one installed. */
  version: version.nullable(),
  /** What `models/<name>/current` points at right now. */
  current: version.nullable(),
  previousVersion: version.nullable(),
  rolloutId: id.nullable(),
  progress: z.object({ bytes: count, total: count }).nullable(),
  attempt: z.number().int().min(0).max(1000),
  error: ErrorInfoSchema.nullable(),
  updatedAt: isoDate,
});
export type ReportedModel = z.infer<typeof ReportedModelSchema>;

export const ReportedSchema = z.object({
  deviceId: id,
  /** The highest desired-state `seq` the agent has accepted (0 before the first). */
  seq: count,
  ts: isoDate,
  models: perModel(ReportedModelSchema),
  /** The last desired state the agent refused (replay, bad signature, bad payload), if any. */
  rejected: z.object({ seq: count.nullable(), error: ErrorInfoSchema, ts: isoDate }).nullable().default(null),
  /**
   * The trust document version the agent verifies releases with (0: its config's keys) and the
   * last trust document it refused. Optional: agents before trust rotation do not send it.
   */
  trust: z
    .object({
      version: count,
      rejected: z.object({ version: count.nullable(), error: ErrorInfoSchema, ts: isoDate }).nullable(),
    })
    .optional(),
});
export type Reported = z.infer<typeof ReportedSchema>;
/** A report's models by name (what the coordinator keeps of each device's newest report). */
export type ReportedModels = Reported['models'];

// ---- status (device -> coordinator, retained; also the LWT) ----

export const DeviceFactsSchema = z.object({
  arch: text(32),
  cpuCores: z.number().int().min(0).max(4096),
  memoryMB: count,
  freeDiskMB: count,
  os: text(200),
  kernel: text(200),
  accelerators: z.array(text(100)).max(16),
});
export type DeviceFacts = z.infer<typeof DeviceFactsSchema>;

export const StatusSchema = z.object({
  online: z.boolean(),
  ts: isoDate,
  agentVersion: text(64).optional(),
  facts: DeviceFactsSchema.optional(),
});
export type Status = z.infer<typeof StatusSchema>;

// ---- metrics (device -> coordinator; docs/metrics.md) ----

/**
 * Sketch bins: counts[i] counts the values of bin offset + i. Bins are positions on a log scale
 * (shared/metrics/sketch.ts), so the offset is small: |offset| < 2^20 covers every double.
 */
const SketchBinsSchema = z
  .object({
    offset: z.number().int().min(-MAX_SKETCH_KEY).max(MAX_SKETCH_KEY),
    counts: z.array(count).min(1).max(MAX_WIRE_BINS),
  })
  .refine((b) => b.offset + b.counts.length - 1 <= MAX_SKETCH_KEY, `bin keys must stay within +-${MAX_SKETCH_KEY}`);

const bounded = z.number().min(-MAX_VALUE_MAGNITUDE).max(MAX_VALUE_MAGNITUDE);

/** A DDSketch of one quantity (latency, a custom value) over a window: numbers only. */
export const SketchSchema = z
  .object({
    level: z.number().int().min(0).max(MAX_SKETCH_LEVEL),
    count,
    sum: z.number().finite(),
    min: bounded,
    max: bounded,
    zeros: count,
    positive: SketchBinsSchema.optional(),
    negative: SketchBinsSchema.optional(),
  })
  .refine(
    (s) => (s.positive?.counts.length ?? 0) + (s.negative?.counts.length ?? 0) <= MAX_WIRE_BINS,
    `at most ${MAX_WIRE_BINS} bins per sketch`,
  )
  .refine(
    (s) =>
      s.count ===
      s.zeros +
        (s.positive?.counts.reduce((a, b) => a + b, 0) ?? 0) +
        (s.negative?.counts.reduce((a, b) => a + b, 0) ?? 0),
    'count must equal zeros plus the counts of the bins',
  )
  .refine((s) => s.count === 0 || s.min <= s.max, 'min must not exceed max')
  // Every value is within +-MAX_VALUE_MAGNITUDE, so is the mean: a sum beyond cannot overflow a
  // rollup's sum to Infinity (stored as null) however many summaries it merges.
  .refine((s) => Math.abs(s.sum) <= s.count * MAX_VALUE_MAGNITUDE, 'sum must be within count x 1e12');

const valueName = z.string().regex(VALUE_NAME_PATTERN, 'must be 1-32 lowercase letters, digits, "_", from a letter');

export const MetricSeriesSchema = z
  .object({
    model: id,
    /** The version the application says it ran (it may change under it during a swap). */
    version,
    source: z.enum(METRIC_SOURCES),
    /** Observations in the window (each has a latency). */
    count,
    errors: count,
    latencyMs: SketchSchema,
    /** Observations with a confidence, by bin of width 1/CONFIDENCE_BINS over [0, 1]. */
    confidence: z.array(count).length(CONFIDENCE_BINS).optional(),
    /** Named custom values (names declared in the agent config). */
    values: idRecordSchema(valueName, SketchSchema)
      .refine((v) => Object.keys(v).length <= MAX_VALUE_NAMES, `at most ${MAX_VALUE_NAMES} values per series`)
      .optional(),
  })
  .refine((s) => s.errors <= s.count, 'errors must not exceed count')
  .refine((s) => s.latencyMs.count === s.count, 'latencyMs.count must equal count');
export type MetricSeries = z.infer<typeof MetricSeriesSchema>;

export const MetricsSchema = z
  .object({
    /** When the agent closed the window (or merged it). */
    ts: isoDate,
    windowStart: isoDate,
    windowSeconds: z.number().int().min(1).max(MAX_WINDOW_SECONDS),
    /** Windows this summary stands for: more than 1 after the agent merged windows during an outage. */
    windowsMerged: z.number().int().min(1).max(1_000_000).default(1),
    series: z.array(MetricSeriesSchema).max(MAX_SERIES * 2),
    /** What the agent could not keep since its previous summary (never silently). */
    dropped: z
      .object({
        /** Observations refused: bad lines, unknown models, versions or value names, series over the cap. */
        observations: count.default(0),
        /** Whole windows the outbox had to drop (merging was not enough). */
        windows: count.default(0),
      })
      .optional(),
  })
  .refine(
    (m) => new Set(m.series.map((s) => `${s.model}\u0000${s.version}\u0000${s.source}`)).size === m.series.length,
    'one series per (model, version, source)',
  );
export type Metrics = z.infer<typeof MetricsSchema>;

// ---- rollout summary (coordinator, retained) ----

export { ROLLOUT_STATUSES, type RolloutStatus };
export const RolloutStatusSchema = z.enum(ROLLOUT_STATUSES);

/** Waves are numbered from 1 everywhere an operator sees them (wave 1 is the canary cohort). */
const waveNumber = z.number().int().min(1).max(100);

export const WaveSummarySchema = z.strictObject({
  wave: waveNumber,
  percent: z.number().min(0).max(100),
  /** The gate in front of this wave as it applies now (`auto` for wave 1 and promoted rollouts). */
  approval: z.enum(['auto', 'manual']),
  /** An analysis gate after this wave (docs/rollouts.md "Analysis gates"). */
  analysis: z.boolean().optional(),
  state: z.enum(WAVE_STATES),
  devices: count,
  /** Devices of the wave by rollout device state (shared/states.ts); states with none are left out. */
  counts: z.partialRecord(z.enum(ROLLOUT_DEVICE_STATES), count),
  /** Devices of the wave whose desired state an abort with revert set back. */
  reverted: count,
});

export const RolloutSummarySchema = z.strictObject({
  id,
  model: id,
  version,
  status: RolloutStatusSchema,
  /** The highest wave started so far, from 1. */
  currentWave: waveNumber,
  maxFailureRate: z.number().min(0).lt(1),
  /** rolled_back + failed devices, those acknowledged by resume, devices assigned so far, and the rate the halt rule uses. */
  failures: z.strictObject({ count, acknowledged: count, assigned: count, rate: z.number().min(0) }),
  waves: z.array(WaveSummarySchema).max(100),
  haltReason: text(2000).nullable(),
  /** Set when the rollout was aborted. */
  abortPolicy: z.enum(['keep', 'revert']).nullable(),
  /** Devices whose desired state the abort set back (policy revert). */
  reverted: count,
  /** The analysis gate in progress or last decided (docs/rollouts.md "Analysis gates"); absent: none. */
  analysis: z
    .strictObject({
      /** The wave analysed, from 1; the gate is before the next. */
      wave: waveNumber,
      state: z.enum(['baking', 'passed', 'failed', 'inconclusive', 'overridden', 'cancelled']),
      startedAt: isoDate,
      measurements: count,
      maxMeasurements: count,
      failures: count,
      failureLimit: count,
      bakeTimeMs: count,
      detail: text(2000).nullable(),
    })
    .optional(),
  updatedAt: isoDate,
});
export type RolloutSummary = z.infer<typeof RolloutSummarySchema>;

// ---- fleet summary (coordinator, retained) ----

/**
 * What the whole fleet runs, counted by the coordinator as reports and presence arrive and
 * published retained on `ota/v1/fleet` at most about once a second while it changes (design
 * section 10): a dashboard's fleet view reads this one message instead of every device's
 * reports (45,000 messages in a 9,000-device wave). Lists, not objects keyed by model or
 * version: any name may be `constructor`.
 */
export const FleetSummarySchema = z.strictObject({
  /** Enrolled devices. */
  devices: count,
  /** Devices connected to the broker now. */
  online: count,
  models: z
    .array(
      z.strictObject({
        model: id,
        /** Devices that reported this model. */
        devices: count,
        /** Which version how many of them run (`current`; null: none yet), most devices first. */
        running: z.array(z.strictObject({ version: version.nullable(), devices: count })),
        /** How many are in each model state (shared/states.ts); states with none are left out. */
        states: z.array(z.strictObject({ state: z.enum(MODEL_STATES), devices: count })),
      }),
    )
    .max(10_000),
  /** When the counts last changed. */
  updatedAt: isoDate,
});
export type FleetSummary = z.infer<typeof FleetSummarySchema>;

// ---- audit (coordinator, not retained) ----

export const AuditEventSchema = z.strictObject({
  seq: z.number().int().min(1),
  ts: isoDate,
  actor: text(128),
  action: text(64),
  subject: text(256).nullable(),
  details: z.record(z.string(), z.unknown()),
  prevHash: z.string().regex(/^[0-9a-f]{64}$/),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
});
export type AuditEvent = z.infer<typeof AuditEventSchema>;

// ---- commands (otactl / scripts -> coordinator, reply on replyTo) ----

export const CommandRequestSchema = z.strictObject({
  correlationId: z.string().min(1).max(128),
  /** Must lie under `{prefix}/reply/{clientId}/`; the broker ACL enforces it. */
  replyTo: z.string().min(1).max(512),
  args: z.record(z.string(), z.unknown()).default({}),
});
export type CommandRequest = z.infer<typeof CommandRequestSchema>;

export const CommandReplySchema = z.discriminatedUnion('ok', [
  z.strictObject({ correlationId: z.string().max(128), ok: z.literal(true), result: z.unknown() }),
  z.strictObject({ correlationId: z.string().max(128), ok: z.literal(false), error: ErrorInfoSchema }),
]);
export type CommandReply = z.infer<typeof CommandReplySchema>;
