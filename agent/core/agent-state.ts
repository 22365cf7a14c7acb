import { z } from 'zod';
import { EnvelopeSchema } from '../../shared/envelope.js';
import { idRecord, idRecordSchema } from '../../shared/id-record.js';
import { publicKeyToJson } from '../../shared/keys.js';
import { DesiredStateSchema, ErrorInfoSchema, ModelStateSchema, ReportedSchema } from '../../shared/messages.js';
import { type AcceptedTrust, TrustEnvelopeSchema } from '../../shared/trust.js';

/**
 * The agent's persisted state (state.json). Every transition is written (tmp + fsync + rename +
 * fsync dir) before its effects run, so after a kill -9 the agent knows which step it was in and
 * redoes it: every step is idempotent.
 */

export const STATE_VERSION = 1;

/** What a model is being moved to: taken from a verified manifest. */
export const TargetSchema = z.object({
  version: z.string(),
  sha256: z.string(),
  size: z.number(),
  counter: z.number(),
  floor: z.number(),
  rolloutId: z.string().nullable(),
  envelope: EnvelopeSchema,
});
export type Target = z.infer<typeof TargetSchema>;

/** The two symlinks of a model directory; null when absent. */
export const LinksSchema = z.object({ current: z.string().nullable(), previous: z.string().nullable() });
export type Links = z.infer<typeof LinksSchema>;

export const ModelRecordSchema = z.object({
  phase: ModelStateSchema,
  target: TargetSchema.nullable(),
  /**
   * The version an assignment named when it was refused before any byte was fetched (another
   * architecture, too little memory, a bad signature...): `target` stays null, since nothing was
   * accepted, but the report must still say which version the `failed` is about (docs/protocol.md).
   * Defaults to null so a state.json written before this field loads unchanged.
   */
  refusedVersion: z.string().nullable().default(null),
  /** Mirrors of models/<name>/current and previous (the symlinks are the truth; read at start). */
  links: LinksSchema,
  /** The links before the swap of the update in progress: a rollback restores exactly these. */
  rollbackTo: LinksSchema.nullable(),
  /** The rollout of the latest assignment, also when its envelope was refused (for the coordinator's counts). */
  rolloutId: z.string().nullable(),
  attempt: z.number(),
  error: ErrorInfoSchema.nullable(),
  progress: z.object({ bytes: z.number(), total: z.number() }).nullable(),
  /** Agent starts seen while this update was in a non-terminal phase (the loop guard). */
  starts: z.number(),
  /** Bumped on every new assignment: results of effects from an older generation are ignored. */
  generation: z.number(),
  updatedAt: z.string(),
});
export type ModelRecord = z.infer<typeof ModelRecordSchema>;

/**
 * The trust document the agent accepted last (shared/trust.ts): its keys and threshold verify
 * releases from then on instead of the config's. Also written to trust.json (agent/state/
 * trust-store.ts), which a damaged state.json cannot take back to the config's keys.
 */
export const TrustRecordSchema = z.object({
  version: z.number(),
  keys: z.array(z.object({ keyId: z.string(), publicKey: z.string() })),
  threshold: z.number(),
  expiresAt: z.string().nullable(),
  envelope: TrustEnvelopeSchema,
});
export type TrustRecord = z.infer<typeof TrustRecordSchema>;

export function trustRecordOf(accepted: AcceptedTrust): TrustRecord {
  return {
    version: accepted.held.version,
    keys: accepted.held.keys.map((k) => {
      const { keyId, publicKey } = publicKeyToJson(k);
      return { keyId, publicKey };
    }),
    threshold: accepted.held.threshold,
    expiresAt: accepted.held.expiresAt,
    envelope: accepted.envelope,
  };
}

export const AgentStateSchema = z.object({
  version: z.literal(STATE_VERSION),
  /** The highest desired-state seq accepted, and its exact signed text (to recognise the retained copy). */
  lastSeq: z.number(),
  lastDesiredText: z.string().nullable(),
  desired: DesiredStateSchema.nullable(),
  /** Highest rollback floor verified, per model (design section 4). Keyed by model: no prototype (id-record.ts). */
  floors: idRecordSchema(z.string(), z.number()),
  models: idRecordSchema(z.string(), ModelRecordSchema),
  rejected: ReportedSchema.shape.rejected,
  /** Reports not yet acknowledged by the broker, oldest first (bounded). */
  outbox: z.array(ReportedSchema),
  /** The trust document held (null: the config's keys). Defaults keep older state.json files loading. */
  trust: TrustRecordSchema.nullable().default(null),
  /** The last trust document refused, and why (reported as `trust.rejected`). */
  trustRejected: z
    .object({ version: z.number().nullable(), error: ErrorInfoSchema, ts: z.string() })
    .nullable()
    .default(null),
});
export type AgentState = z.infer<typeof AgentStateSchema>;

export function initialState(): AgentState {
  return {
    version: STATE_VERSION,
    lastSeq: 0,
    lastDesiredText: null,
    desired: null,
    floors: idRecord(),
    models: idRecord(),
    rejected: null,
    outbox: [],
    trust: null,
    trustRejected: null,
  };
}

export function emptyRecord(now: Date, links: Links = { current: null, previous: null }): ModelRecord {
  return {
    phase: 'idle',
    target: null,
    refusedVersion: null,
    links,
    rollbackTo: null,
    rolloutId: null,
    attempt: 0,
    error: null,
    progress: null,
    starts: 0,
    generation: 0,
    updatedAt: now.toISOString(),
  };
}
