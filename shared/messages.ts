import { z } from 'zod';
import { EnvelopeSchema } from './envelope.js';
import { ERROR_CODES } from './errors.js';
import { idRecordSchema } from './id-record.js';
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

const MAX_MODELS = 32;
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

// ---- metrics (device -> coordinator; experiments) ----

export const HistogramSchema = z
  .object({
    /** Upper bounds of the buckets, increasing; counts has one more entry (the overflow bucket). */
    bounds: z.array(z.number()).max(64),
    counts: z.array(count).max(65),
  })
  .refine((h) => h.counts.length === h.bounds.length + 1, 'counts must have one entry more than bounds')
  .refine((h) => h.bounds.every((b, i) => i === 0 || b > (h.bounds[i - 1] as number)), 'bounds must increase');

export const MetricsSchema = z.object({
  ts: isoDate,
  models: perModel(
    z.object({
      version,
      windowSeconds: z.number().int().min(1).max(86_400),
      count,
      errors: count.default(0),
      latencyMs: HistogramSchema,
      confidence: HistogramSchema.optional(),
    }),
  ),
});
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
