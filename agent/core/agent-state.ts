import { z } from 'zod';
import { EnvelopeSchema } from '../../shared/envelope.js';
import { idRecord, idRecordSchema } from '../../shared/id-record.js';
import { DesiredStateSchema, ErrorInfoSchema, ModelStateSchema, ReportedSchema } from '../../shared/messages.js';

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
