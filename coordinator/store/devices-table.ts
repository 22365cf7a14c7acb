import { OtaError } from '../../shared/errors.js';
import { bool, type Db, json, jsonOrNull, parse, parseOrNull } from './db.js';
import type { DeviceRecord, DeviceSummary, HistoryRecord } from './records.js';
import { IDS_IN_JSON, jsonIds } from './target-reads.js';

/**
 * The devices table (enrolment, presence, last report, desired seq), `device_seq_floor` (the seq
 * a removed device had reached) and `device_history`: persistence and constraints only.
 */

interface DeviceRow {
  id: string;
  labels: string;
  channel: string;
  facts: string | null;
  agent_version: string | null;
  online: number;
  last_seen: string | null;
  desired_seq: number;
  last_report: string | null;
  created_at: string;
}

interface HistoryRow {
  device_id: string;
  model: string;
  state: string;
  version: string | null;
  rollout_id: string | null;
  error: string | null;
  ts: string;
}

function toDevice(row: DeviceRow): DeviceRecord {
  return {
    id: row.id,
    labels: parse(row.labels),
    channel: row.channel,
    facts: parseOrNull(row.facts),
    agentVersion: row.agent_version,
    online: row.online === 1,
    lastSeen: row.last_seen,
    desiredSeq: row.desired_seq,
    lastReport: parseOrNull(row.last_report),
    createdAt: row.created_at,
  };
}

const toHistory = (row: HistoryRow): HistoryRecord => ({
  deviceId: row.device_id,
  model: row.model,
  state: row.state,
  version: row.version,
  rolloutId: row.rollout_id,
  error: parseOrNull(row.error),
  ts: row.ts,
});

function deviceNotFound(id: string): OtaError {
  return new OtaError('E_NOT_FOUND', `device ${id} not found`);
}

type SummaryRow = Pick<DeviceRow, 'id' | 'labels' | 'channel' | 'online' | 'last_seen' | 'agent_version'>;
const SUMMARY_COLUMNS = 'id, labels, channel, online, last_seen, agent_version';

function toSummary(row: SummaryRow): DeviceSummary {
  return {
    id: row.id,
    labels: parse(row.labels),
    channel: row.channel,
    online: row.online === 1,
    lastSeen: row.last_seen,
    agentVersion: row.agent_version,
  };
}

export class DevicesTable {
  constructor(private readonly db: Db) {}

  add(device: {
    id: string;
    labels: Record<string, string>;
    channel: string;
    tokenHash: string;
    now: string;
  }): DeviceRecord {
    this.db.guard({ conflict: `device ${device.id} already exists` }, () =>
      this.db
        .q(
          `INSERT INTO devices (id, labels, channel, token_hash, desired_seq, created_at)
         VALUES (@id, @labels, @channel, @tokenHash,
                 COALESCE((SELECT desired_seq FROM device_seq_floor WHERE device_id = @id), 0), @now)`,
        )
        .run({
          id: device.id,
          labels: json(device.labels),
          channel: device.channel,
          tokenHash: device.tokenHash,
          now: device.now,
        }),
    );
    return this.get(device.id) as DeviceRecord;
  }

  get(id: string): DeviceRecord | null {
    const row = this.db.q<DeviceRow>('SELECT * FROM devices WHERE id = ?').get(id);
    return row ? toDevice(row) : null;
  }

  tokenHash(id: string): string | null {
    return this.db.q<{ token_hash: string }>('SELECT token_hash FROM devices WHERE id = ?').get(id)?.token_hash ?? null;
  }

  list(): DeviceRecord[] {
    return this.db.q<DeviceRow>('SELECT * FROM devices ORDER BY id').all().map(toDevice);
  }

  summaries(page: { after?: string; limit?: number } = {}): DeviceSummary[] {
    // By the primary key from `after` on: a page costs its own rows, wherever it starts
    // (an OFFSET would step over every row before it). LIMIT -1: no limit (SQLite).
    return this.db
      .q<SummaryRow>(`SELECT ${SUMMARY_COLUMNS} FROM devices WHERE id > ? ORDER BY id LIMIT ?`)
      .all(page.after ?? '', page.limit ?? -1)
      .map(toSummary);
  }

  // Streamed (Statement.iterate): a scan of a large fleet never holds every row at once.
  *eachSummary(): IterableIterator<DeviceSummary> {
    for (const row of this.db.q<SummaryRow>(`SELECT ${SUMMARY_COLUMNS} FROM devices ORDER BY id`).iterate()) {
      yield toSummary(row);
    }
  }

  ids(): string[] {
    return this.db
      .q<{ id: string }>('SELECT id FROM devices ORDER BY id')
      .all()
      .map((r) => r.id);
  }

  // Rows streamed (Statement.iterate): one parsed at a time, garbage as soon as the caller moves on.
  *each(): IterableIterator<DeviceRecord> {
    for (const row of this.db.q<DeviceRow>('SELECT * FROM devices ORDER BY id').iterate()) yield toDevice(row);
  }

  *eachLabels(): IterableIterator<{ id: string; labels: Record<string, string> }> {
    const rows = this.db.q<{ id: string; labels: string }>('SELECT id, labels FROM devices ORDER BY id').iterate();
    for (const row of rows) yield { id: row.id, labels: parse(row.labels) };
  }

  count(): number {
    return this.db.q<{ n: number }>('SELECT COUNT(*) AS n FROM devices').get()?.n ?? 0;
  }

  /** Of `ids`, each enrolled device and whether it is online (target-reads.ts: one statement). */
  onlineOf(ids: readonly string[]): Map<string, boolean> {
    const out = new Map<string, boolean>();
    const rows = this.db
      .q<{ id: string; online: number }>(`SELECT id, online FROM devices WHERE id IN ${IDS_IN_JSON}`)
      .iterate(jsonIds(ids));
    for (const row of rows) out.set(row.id, row.online === 1);
    return out;
  }

  /**
   * Removes the device and (cascade) its desired entries. Its rollout rows and history stay as
   * evidence; its desired seq is remembered so the same id enrolled again continues above it.
   */
  remove(id: string): boolean {
    return this.db.transaction(() => {
      const seq = this.db.q<{ desired_seq: number }>('SELECT desired_seq FROM devices WHERE id = ?').get(id);
      if (!seq) return false;
      this.db
        .q(
          `INSERT INTO device_seq_floor (device_id, desired_seq) VALUES (?, ?)
         ON CONFLICT (device_id) DO UPDATE SET desired_seq = MAX(desired_seq, excluded.desired_seq)`,
        )
        .run(id, seq.desired_seq);
      return this.db.q('DELETE FROM devices WHERE id = ?').run(id).changes > 0;
    });
  }

  markAllOffline(): number {
    return this.db.q('UPDATE devices SET online = 0 WHERE online = 1').run().changes;
  }

  setPresence(
    id: string,
    online: boolean,
    now: string,
    facts?: { facts: DeviceRecord['facts']; agentVersion: string | null },
  ): void {
    const result = facts
      ? this.db
          .q('UPDATE devices SET online = ?, last_seen = ?, facts = ?, agent_version = ? WHERE id = ?')
          .run(bool(online), now, jsonOrNull(facts.facts), facts.agentVersion, id)
      : this.db.q('UPDATE devices SET online = ?, last_seen = ? WHERE id = ?').run(bool(online), now, id);
    if (result.changes === 0) throw deviceNotFound(id);
  }

  setReport(id: string, report: DeviceRecord['lastReport'], now: string): void {
    const result = this.db
      .q('UPDATE devices SET last_report = ?, last_seen = ? WHERE id = ?')
      .run(jsonOrNull(report), now, id);
    if (result.changes === 0) throw deviceNotFound(id);
  }

  /** The last desired seq issued to the device; null when it is not enrolled. */
  desiredSeq(id: string): number | null {
    return (
      this.db.q<{ desired_seq: number }>('SELECT desired_seq FROM devices WHERE id = ?').get(id)?.desired_seq ?? null
    );
  }

  /** Moves the device's desired seq up to `atLeast` (never down); false when it is not enrolled. */
  raiseDesiredSeq(id: string, atLeast: number): boolean {
    return (
      this.db.guard({}, () =>
        this.db.q('UPDATE devices SET desired_seq = MAX(desired_seq, ?) WHERE id = ?').run(atLeast, id),
      ).changes > 0
    );
  }

  nextDesiredSeq(id: string): number {
    const row = this.db.guard({}, () =>
      this.db
        .q<{ desired_seq: number }>(
          'UPDATE devices SET desired_seq = desired_seq + 1 WHERE id = ? RETURNING desired_seq',
        )
        .get(id),
    );
    if (!row) throw deviceNotFound(id);
    return row.desired_seq;
  }

  // ---- device history ----

  appendHistory(rows: readonly HistoryRecord[]): void {
    if (rows.length === 0) return;
    const stmt = this.db.q(
      `INSERT INTO device_history (device_id, model, state, version, rollout_id, error, ts)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.db.transaction(() => {
      for (const r of rows) {
        this.db.guard({}, () =>
          stmt.run(r.deviceId, r.model, r.state, r.version, r.rolloutId, jsonOrNull(r.error), r.ts),
        );
      }
    });
  }

  /** The device's last `limit` history rows, oldest first. */
  listHistory(deviceId: string, limit: number): HistoryRecord[] {
    return this.db
      .q<HistoryRow>(
        `SELECT * FROM (SELECT * FROM device_history WHERE device_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id`,
      )
      .all(deviceId, Math.max(0, Math.floor(limit)))
      .map(toHistory);
  }
}
