import { OtaError } from '../../shared/errors.js';
import type { Db } from './db.js';
import type { DesiredRecord } from './records.js';
import { checkReleaseOf } from './releases-table.js';
import { IDS_IN_JSON, jsonIds } from './target-reads.js';

/** The desired table (per device and model, the release it should run): persistence and constraints only. */

interface DesiredRow {
  device_id: string;
  model: string;
  release_id: string;
  rollout_id: string | null;
  source: string;
  updated_at: string;
}

const toDesired = (row: DesiredRow): DesiredRecord => ({
  deviceId: row.device_id,
  model: row.model,
  releaseId: row.release_id,
  rolloutId: row.rollout_id,
  source: row.source,
  updatedAt: row.updated_at,
});

export class DesiredTable {
  constructor(private readonly db: Db) {}

  set(entry: DesiredRecord): void {
    const result = this.db.guard(
      {
        missing: () =>
          this.db.q('SELECT 1 FROM devices WHERE id = ?').get(entry.deviceId) === undefined
            ? `device ${entry.deviceId} not found`
            : `release ${entry.releaseId} not found (desired state of device ${entry.deviceId})`,
      },
      () =>
        // Inserts only when the release exists and is of this model (checked below when not).
        this.db
          .q(
            `INSERT INTO desired (device_id, model, release_id, rollout_id, source, updated_at)
           SELECT @deviceId, @model, @releaseId, @rolloutId, @source, @updatedAt
           FROM releases WHERE id = @releaseId AND model = @model
           ON CONFLICT (device_id, model) DO UPDATE SET
             release_id = excluded.release_id, rollout_id = excluded.rollout_id,
             source = excluded.source, updated_at = excluded.updated_at`,
          )
          .run({
            deviceId: entry.deviceId,
            model: entry.model,
            releaseId: entry.releaseId,
            rolloutId: entry.rolloutId,
            source: entry.source,
            updatedAt: entry.updatedAt,
          }),
    );
    if (result.changes === 0) {
      checkReleaseOf(this.db, entry.releaseId, entry.model, `desired state of device ${entry.deviceId}`);
      throw new OtaError('E_INTERNAL', `desired state of ${entry.deviceId}/${entry.model} was not written`);
    }
  }

  remove(deviceId: string, model: string): void {
    this.db.q('DELETE FROM desired WHERE device_id = ? AND model = ?').run(deviceId, model);
  }

  get(deviceId: string, model: string): DesiredRecord | null {
    const row = this.db.q<DesiredRow>('SELECT * FROM desired WHERE device_id = ? AND model = ?').get(deviceId, model);
    return row ? toDesired(row) : null;
  }

  /** Per device of `ids` with a desired state for `model`: its release (target-reads.ts: one statement). */
  releasesOf(ids: readonly string[], model: string): Map<string, string> {
    const out = new Map<string, string>();
    const rows = this.db
      .q<{ device_id: string; release_id: string }>(
        `SELECT device_id, release_id FROM desired WHERE model = ? AND device_id IN ${IDS_IN_JSON}`,
      )
      .iterate(model, jsonIds(ids));
    for (const row of rows) out.set(row.device_id, row.release_id);
    return out;
  }

  listFor(deviceId: string): DesiredRecord[] {
    return this.db
      .q<DesiredRow>('SELECT * FROM desired WHERE device_id = ? ORDER BY model')
      .all(deviceId)
      .map(toDesired);
  }

  countsByRelease(): Map<string, number> {
    const rows = this.db
      .q<{ release_id: string; n: number }>('SELECT release_id, COUNT(*) AS n FROM desired GROUP BY release_id')
      .all();
    return new Map(rows.map((r) => [r.release_id, r.n]));
  }

  /** Every device id that has at least one desired entry (republished at start). */
  devicesWithDesired(): string[] {
    return this.db
      .q<{ device_id: string }>('SELECT DISTINCT device_id FROM desired ORDER BY device_id')
      .all()
      .map((r) => r.device_id);
  }
}
