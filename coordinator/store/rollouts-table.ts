import { OtaError } from '../../shared/errors.js';
import { ACTIVE_ROLLOUT_STATUSES, FINISHED_ROLLOUT_STATUSES, OUTCOME_STATES } from '../../shared/states.js';
import { bool, type Db, json, jsonOrNull, parse, parseOrNull, type SqlValue, sqlList } from './db.js';
import type { Rollout, RolloutDevice } from './records.js';
import { groupIds, IDS_IN_JSON, jsonIds } from './target-reads.js';

/**
 * The rollouts table and rollout_devices (a rollout's devices, their wave and state):
 * persistence and constraints only. Rollout fields without a column are kept in `rollouts.extra`
 * (JSON text) and come back on read.
 */

const ACTIVE_STATUSES = sqlList(ACTIVE_ROLLOUT_STATUSES);
const DONE_STATUSES = sqlList(FINISHED_ROLLOUT_STATUSES);

interface RolloutRow {
  id: string;
  model: string;
  version: string;
  release_id: string;
  channel: string;
  strategy: string;
  status: Rollout['status'];
  current_wave: number;
  acknowledged_failures: number;
  promoted: number;
  halt_reason: string | null;
  abort_policy: Rollout['abortPolicy'];
  extra: string;
  created_by: string;
  created_at: string;
  updated_at: string;
}

interface RolloutDeviceRow {
  device_id: string;
  wave: number;
  state: RolloutDevice['state'];
  online: number;
  previous_release_id: string | null;
  reverted_to: string | null;
  assigned_at: string | null;
  finished_at: string | null;
  error: string | null;
}

const toRolloutDevice = (row: RolloutDeviceRow): RolloutDevice => ({
  deviceId: row.device_id,
  wave: row.wave,
  state: row.state,
  online: row.online === 1,
  previousReleaseId: row.previous_release_id,
  revertedTo: parseOrNull(row.reverted_to),
  assignedAt: row.assigned_at,
  finishedAt: row.finished_at,
  error: parseOrNull(row.error),
});

/**
 * Rollout fields that have a column, with how each is written when it is not written as it is
 * (JSON text, INTEGER 0/1, NULL for absent).
 */
const ROLLOUT_COLUMNS: Record<string, { column: string; write?: (value: unknown) => SqlValue }> = {
  model: { column: 'model' },
  version: { column: 'version' },
  releaseId: { column: 'release_id' },
  channel: { column: 'channel' },
  strategy: { column: 'strategy', write: json },
  status: { column: 'status' },
  currentWave: { column: 'current_wave' },
  acknowledgedFailures: { column: 'acknowledged_failures' },
  promoted: { column: 'promoted', write: (v) => bool(v === true) },
  haltReason: { column: 'halt_reason', write: (v) => (v ?? null) as string | null },
  abortPolicy: { column: 'abort_policy', write: (v) => (v ?? null) as string | null },
  createdBy: { column: 'created_by' },
  createdAt: { column: 'created_at' },
  updatedAt: { column: 'updated_at' },
};

/** Fields of a rollout that have no column (kept as JSON in `extra`). */
function rolloutExtra(rollout: Partial<Rollout>): Record<string, unknown> {
  const extra: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(rollout)) {
    if (key !== 'id' && !(key in ROLLOUT_COLUMNS) && value !== undefined) extra[key] = value;
  }
  return extra;
}

function toRollout(row: RolloutRow): Rollout {
  return {
    ...parse<Record<string, unknown>>(row.extra),
    id: row.id,
    model: row.model,
    version: row.version,
    releaseId: row.release_id,
    channel: row.channel,
    strategy: parse(row.strategy),
    status: row.status,
    currentWave: row.current_wave,
    acknowledgedFailures: row.acknowledged_failures,
    promoted: row.promoted === 1,
    haltReason: row.halt_reason,
    abortPolicy: row.abort_policy,
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export class RolloutsTable {
  constructor(private readonly db: Db) {}

  /**
   * Writes the rollout and its device rows at once. Whether its devices may join it (not in
   * another active rollout of the model) is the planner's rule (rollout/plan-create.ts).
   */
  create(rollout: Rollout, devices: readonly RolloutDevice[]): void {
    this.db.transaction(() => {
      this.db.guard(
        {
          conflict: `rollout ${rollout.id} already exists`,
          missing: () => `release ${rollout.releaseId} not found (rollout ${rollout.id})`,
        },
        () =>
          this.db
            .q(
              `INSERT INTO rollouts (id, model, version, release_id, channel, strategy, status, current_wave,
               acknowledged_failures, promoted, halt_reason, abort_policy, extra, created_by, created_at, updated_at)
             VALUES (@id, @model, @version, @releaseId, @channel, @strategy, @status, @currentWave,
               @acknowledgedFailures, @promoted, @haltReason, @abortPolicy, @extra, @createdBy, @createdAt, @updatedAt)`,
            )
            .run({
              id: rollout.id,
              model: rollout.model,
              version: rollout.version,
              releaseId: rollout.releaseId,
              channel: rollout.channel,
              strategy: json(rollout.strategy),
              status: rollout.status,
              currentWave: rollout.currentWave,
              acknowledgedFailures: rollout.acknowledgedFailures,
              promoted: bool(rollout.promoted === true),
              haltReason: rollout.haltReason ?? null,
              abortPolicy: rollout.abortPolicy ?? null,
              extra: json(rolloutExtra(rollout)),
              createdBy: rollout.createdBy,
              createdAt: rollout.createdAt,
              updatedAt: rollout.updatedAt,
            }),
      );
      this.writeDevices(rollout.id, devices, false);
    });
  }

  get(id: string): Rollout | null {
    const row = this.db.q<RolloutRow>('SELECT * FROM rollouts WHERE id = ?').get(id);
    return row ? toRollout(row) : null;
  }

  /** All rollouts by creation; `active: true` only running/waiting_approval/halted, `false` only finished. */
  list(filter: { active?: boolean } = {}): Rollout[] {
    const where =
      filter.active === undefined ? '' : `WHERE status IN ${filter.active ? ACTIVE_STATUSES : DONE_STATUSES}`;
    return this.db.q<RolloutRow>(`SELECT * FROM rollouts ${where} ORDER BY created_at, id`).all().map(toRollout);
  }

  update(id: string, patch: Partial<Rollout>): void {
    if (patch.id !== undefined && patch.id !== id) {
      throw new OtaError('E_INTERNAL', `cannot rename rollout ${id} to ${patch.id}`);
    }
    const keys = Object.keys(patch)
      .filter((k) => k in ROLLOUT_COLUMNS && (patch as Record<string, unknown>)[k] !== undefined)
      .sort();
    const extra = rolloutExtra(patch);
    this.db.transaction(() => {
      const current = this.db.q<{ extra: string }>('SELECT extra FROM rollouts WHERE id = ?').get(id);
      if (!current) throw new OtaError('E_NOT_FOUND', `rollout ${id} not found`);
      const sets = keys.map((k) => `${(ROLLOUT_COLUMNS[k] as { column: string }).column} = @${k}`);
      const params: Record<string, SqlValue> = { id };
      for (const k of keys) {
        const value = (patch as Record<string, unknown>)[k];
        const write = (ROLLOUT_COLUMNS[k] as { write?: (v: unknown) => SqlValue }).write;
        params[k] = write ? write(value) : (value as SqlValue);
      }
      if (Object.keys(extra).length > 0) {
        sets.push('extra = @extra');
        params.extra = json({ ...parse<Record<string, unknown>>(current.extra), ...extra });
      }
      if (sets.length === 0) return;
      this.db.guard({ missing: () => `release ${String(patch.releaseId)} not found (rollout ${id})` }, () =>
        this.db.q(`UPDATE rollouts SET ${sets.join(', ')} WHERE id = @id`).run(params),
      );
    });
  }

  /** Active (running, waiting_approval, halted) rollouts of `model` that include `deviceId`. */
  activeFor(deviceId: string, model: string): Rollout[] {
    return this.db
      .q<RolloutRow>(
        `SELECT r.* FROM rollouts r JOIN rollout_devices rd ON rd.rollout_id = r.id
       WHERE rd.device_id = ? AND r.model = ? AND r.status IN ${ACTIVE_STATUSES}
       ORDER BY r.created_at, r.id`,
      )
      .all(deviceId, model)
      .map(toRollout);
  }

  /**
   * Per device of `ids` in any: the ids of the active rollouts of `model` it is in, by creation as
   * activeFor lists them (target-reads.ts: one statement).
   */
  activeIdsOf(ids: readonly string[], model: string): Map<string, string[]> {
    return groupIds(
      this.db
        .q<{ device_id: string; id: string }>(
          `SELECT rd.device_id, r.id FROM rollouts r JOIN rollout_devices rd ON rd.rollout_id = r.id
          WHERE rd.device_id IN ${IDS_IN_JSON} AND r.model = ? AND r.status IN ${ACTIVE_STATUSES}
          ORDER BY r.created_at, r.id`,
        )
        .iterate(jsonIds(ids), model),
    );
  }

  // ---- rollout devices ----

  devices(rolloutId: string): RolloutDevice[] {
    return this.db
      .q<RolloutDeviceRow>('SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY wave, device_id')
      .all(rolloutId)
      .map(toRolloutDevice);
  }

  /** Devices of the rollout with no outcome yet and not sent back (what a late report can still move). */
  openDevices(rolloutId: string): string[] {
    return this.db
      .q<{ device_id: string }>(
        // Not the pending ones: a device whose wave never started was never sent this rollout,
        // so no report of it names it (an aborted 1% canary of 50,000 devices left 49,500 of
        // them, 14 MB of ids in the rollout engine's memory for nothing; BENCHMARKS.md,
        // 2026-12-07 "memory at 50,000").
        `SELECT device_id FROM rollout_devices
          WHERE rollout_id = ? AND reverted_to IS NULL AND state <> 'pending' AND state NOT IN ${sqlList(OUTCOME_STATES)}`,
      )
      .all(rolloutId)
      .map((r) => r.device_id);
  }

  upsertDevices(rolloutId: string, devices: readonly RolloutDevice[]): void {
    this.db.transaction(() => this.writeDevices(rolloutId, devices, true));
  }

  private writeDevices(rolloutId: string, devices: readonly RolloutDevice[], upsert: boolean): void {
    const stmt = this.db.q(
      `INSERT INTO rollout_devices (rollout_id, device_id, wave, state, online, previous_release_id,
         reverted_to, assigned_at, finished_at, error)
       VALUES (@rolloutId, @deviceId, @wave, @state, @online, @previousReleaseId, @revertedTo, @assignedAt,
         @finishedAt, @error)
       ${
         upsert
           ? `ON CONFLICT (rollout_id, device_id) DO UPDATE SET wave = excluded.wave, state = excluded.state,
                online = excluded.online, previous_release_id = excluded.previous_release_id,
                reverted_to = excluded.reverted_to, assigned_at = excluded.assigned_at, finished_at = excluded.finished_at, error = excluded.error`
           : ''
       }`,
    );
    for (const d of devices) {
      this.db.guard(
        {
          conflict: `device ${d.deviceId} is listed twice in rollout ${rolloutId}`,
          missing: () => `rollout ${rolloutId} not found`,
        },
        () =>
          stmt.run({
            rolloutId,
            deviceId: d.deviceId,
            wave: d.wave,
            state: d.state,
            online: bool(d.online),
            previousReleaseId: d.previousReleaseId,
            revertedTo: jsonOrNull(d.revertedTo),
            assignedAt: d.assignedAt,
            finishedAt: d.finishedAt,
            error: jsonOrNull(d.error),
          }),
      );
    }
  }
}
