import Database from 'better-sqlite3';
import { OtaError } from '../../shared/errors.js';
import type { AuditEvent } from '../../shared/messages.js';
import { releaseIdOf } from '../../shared/release-id.js';
import { ACTIVE_ROLLOUT_STATUSES, FINISHED_ROLLOUT_STATUSES } from '../../shared/states.js';
import { AuditChain } from './audit-chain.js';
import { checkSchema, migrate, schemaVersion } from './migrations.js';
import type {
  AuditDraft,
  AuditVerdict,
  ChannelRecord,
  DesiredRecord,
  DeviceRecord,
  GroupRecord,
  HistoryRecord,
  OperatorRecord,
  ReleaseRecord,
  Role,
  Rollout,
  RolloutDevice,
  TrustedKeyRecord,
} from './records.js';
import type { Store, TransactionOptions } from './store.js';

/**
 * The Store on SQLite (better-sqlite3): WAL, synchronous=FULL, foreign keys on, busy timeout 5 s,
 * migrations on open (see migrations.ts). One instance per connection, nothing module-wide.
 *
 * Mapping: booleans are INTEGER 0/1; JSON columns (labels, facts, last_report, group devices and
 * selector, envelope, strategy, errors, audit details) are JSON text, parsed on read. Rollout
 * fields without a column are kept in `rollouts.extra` and come back on read.
 *
 * Constraint errors become OtaErrors: a duplicate key is E_CONFLICT naming the object, a missing
 * referenced row E_NOT_FOUND naming it; locked, read-only or full databases are E_IO.
 */

/** SQL lists of the shared vocabulary (shared/states.ts): the statuses are fixed identifiers, not input. */
const sqlList = (values: readonly string[]) => `(${values.map((v) => `'${v}'`).join(', ')})`;
const ACTIVE_STATUSES = sqlList(ACTIVE_ROLLOUT_STATUSES);
const DONE_STATUSES = sqlList(FINISHED_ROLLOUT_STATUSES);

// ---- row shapes ----

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

interface OperatorRow {
  name: string;
  role: Role;
  token_hash: string;
  created_at: string;
}

interface KeyRow {
  key_id: string;
  public_key: string;
  name: string | null;
  revoked: number;
  added_at: string;
}

interface GroupRow {
  name: string;
  devices: string | null;
  selector: string | null;
  created_at: string;
}

interface ReleaseRow {
  id: string;
  model: string;
  version: string;
  counter: number;
  sha256: string;
  size: number;
  envelope: string;
  published_by: string;
  published_at: string;
}

interface ChannelRow {
  model: string;
  channel: string;
  release_id: string;
  updated_at: string;
}

interface DesiredRow {
  device_id: string;
  model: string;
  release_id: string;
  rollout_id: string | null;
  source: string;
  updated_at: string;
}

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

interface HistoryRow {
  device_id: string;
  model: string;
  state: string;
  version: string | null;
  rollout_id: string | null;
  error: string | null;
  ts: string;
}

type SqlValue = string | number | bigint | Buffer | null;

// ---- mapping helpers ----

function json(value: unknown): string {
  return JSON.stringify(value);
}

function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

function parse<T>(text: string): T {
  return JSON.parse(text) as T;
}

function parseOrNull<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

const bool = (value: boolean): number => (value ? 1 : 0);

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

const toOperator = (row: OperatorRow): OperatorRecord => ({
  name: row.name,
  role: row.role,
  createdAt: row.created_at,
});

const toKey = (row: KeyRow): TrustedKeyRecord => ({
  keyId: row.key_id,
  publicKey: row.public_key,
  name: row.name,
  revoked: row.revoked === 1,
  addedAt: row.added_at,
});

const toGroup = (row: GroupRow): GroupRecord => ({
  name: row.name,
  devices: parseOrNull(row.devices),
  selector: parseOrNull(row.selector),
  createdAt: row.created_at,
});

const toRelease = (row: ReleaseRow): ReleaseRecord => ({
  id: row.id,
  model: row.model,
  version: row.version,
  counter: row.counter,
  sha256: row.sha256,
  size: row.size,
  envelope: parse(row.envelope),
  publishedBy: row.published_by,
  publishedAt: row.published_at,
});

const toChannel = (row: ChannelRow): ChannelRecord => ({
  model: row.model,
  channel: row.channel,
  releaseId: row.release_id,
  updatedAt: row.updated_at,
});

const toDesired = (row: DesiredRow): DesiredRecord => ({
  deviceId: row.device_id,
  model: row.model,
  releaseId: row.release_id,
  rolloutId: row.rollout_id,
  source: row.source,
  updatedAt: row.updated_at,
});

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

const toHistory = (row: HistoryRow): HistoryRecord => ({
  deviceId: row.device_id,
  model: row.model,
  state: row.state,
  version: row.version,
  rolloutId: row.rollout_id,
  error: parseOrNull(row.error),
  ts: row.ts,
});

/** Rollout fields that have a column, with how each is written. */
const ROLLOUT_COLUMNS: Record<string, { column: string; write: (value: unknown) => SqlValue }> = {
  model: { column: 'model', write: (v) => v as string },
  version: { column: 'version', write: (v) => v as string },
  releaseId: { column: 'release_id', write: (v) => v as string },
  channel: { column: 'channel', write: (v) => v as string },
  strategy: { column: 'strategy', write: json },
  status: { column: 'status', write: (v) => v as string },
  currentWave: { column: 'current_wave', write: (v) => v as number },
  acknowledgedFailures: { column: 'acknowledged_failures', write: (v) => v as number },
  promoted: { column: 'promoted', write: (v) => bool(v === true) },
  haltReason: { column: 'halt_reason', write: (v) => (v ?? null) as string | null },
  abortPolicy: { column: 'abort_policy', write: (v) => (v ?? null) as string | null },
  createdBy: { column: 'created_by', write: (v) => v as string },
  createdAt: { column: 'created_at', write: (v) => v as string },
  updatedAt: { column: 'updated_at', write: (v) => v as string },
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

// ---- errors ----

interface ErrorNames {
  /** Message for a duplicate primary key / unique constraint. */
  conflict?: string;
  /** Message for a foreign-key violation, computed after the failure (it may look rows up). */
  missing?: () => string;
}

const IO_CODES = /^SQLITE_(BUSY|LOCKED|READONLY|FULL|IOERR|CORRUPT|NOTADB|CANTOPEN|PERM)/;

function translateError(err: unknown, names: ErrorNames = {}): unknown {
  if (!(err instanceof Database.SqliteError)) return err;
  const code = err.code;
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') {
    return new OtaError('E_CONFLICT', names.conflict ?? `already exists (${err.message})`, { cause: err });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
    return new OtaError('E_NOT_FOUND', names.missing?.() ?? `a referenced object does not exist (${err.message})`, {
      cause: err,
    });
  }
  if (code === 'SQLITE_CONSTRAINT_CHECK' || code === 'SQLITE_CONSTRAINT_NOTNULL') {
    return new OtaError('E_INTERNAL', `invalid value written to the store: ${err.message}`, { cause: err });
  }
  if (IO_CODES.test(code)) {
    const hint =
      code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
        ? ' (another process holds the database lock)'
        : code.startsWith('SQLITE_READONLY')
          ? ' (the store is open read-only)'
          : '';
    return new OtaError('E_IO', `database error ${code}: ${err.message}${hint}`, { cause: err });
  }
  return err;
}

export interface StoreOptions {
  /** Open an existing database without writing to it (no migrations: it must be current). */
  readonly?: boolean;
}

/** The connection settings the store runs with (for diagnostics and tests). */
export interface StoreSettings {
  journalMode: string;
  synchronous: number;
  foreignKeys: boolean;
  busyTimeoutMs: number;
  schemaVersion: number;
}

export class SqliteStore implements Store {
  private readonly statements = new Map<string, Database.Statement<unknown[], unknown>>();
  private readonly audit: AuditChain;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
    /** Opened with `readonly`: reads only, and transactions take no write lock. */
    readonly readonly: boolean,
  ) {
    this.audit = new AuditChain(db);
  }

  static open(file: string, options: StoreOptions = {}): SqliteStore {
    const readonly = options.readonly === true;
    const db = connect(file, readonly);
    try {
      db.pragma('busy_timeout = 5000');
      if (!readonly) {
        const mode = db.pragma('journal_mode = WAL', { simple: true });
        if (mode !== 'wal')
          throw new OtaError('E_IO', `database ${file} cannot use WAL mode (journal_mode is ${mode})`);
      }
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      if (readonly) checkSchema(db, file);
      else migrate(db, { file });
      return new SqliteStore(db, file, readonly);
    } catch (err) {
      db.close();
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_NOTADB') {
        throw new OtaError('E_IO', `${file} is not an SQLite database`, { cause: err });
      }
      throw translateError(err);
    }
  }

  // ---- plumbing ----

  /** A prepared statement, prepared once per connection. */
  private q<R = unknown>(sql: string): Database.Statement<unknown[], R> {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt as Database.Statement<unknown[], R>;
  }

  private guard<T>(names: ErrorNames, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw translateError(err, names);
    }
  }

  transaction<T>(fn: () => T, options: TransactionOptions = {}): T {
    // Nested calls join the outer transaction (better-sqlite3 uses a savepoint). A top-level
    // write transaction takes the write lock at BEGIN (IMMEDIATE), so it never fails halfway
    // through on a lock upgrade.
    const tx = this.db.transaction(fn);
    const relaxed = options.durable === false && !this.readonly && !this.db.inTransaction;
    try {
      if (relaxed) this.db.pragma('synchronous = NORMAL');
      return this.readonly ? tx.deferred() : tx.immediate();
    } catch (err) {
      throw translateError(err);
    } finally {
      if (relaxed) this.db.pragma('synchronous = FULL');
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  settings(): StoreSettings {
    return {
      journalMode: String(this.db.pragma('journal_mode', { simple: true })),
      synchronous: Number(this.db.pragma('synchronous', { simple: true })),
      foreignKeys: Number(this.db.pragma('foreign_keys', { simple: true })) === 1,
      busyTimeoutMs: Number(this.db.pragma('busy_timeout', { simple: true })),
      schemaVersion: schemaVersion(this.db),
    };
  }

  // ---- devices ----

  addDevice(device: {
    id: string;
    labels: Record<string, string>;
    channel: string;
    tokenHash: string;
    now: string;
  }): DeviceRecord {
    this.guard({ conflict: `device ${device.id} already exists` }, () =>
      this.q(
        `INSERT INTO devices (id, labels, channel, token_hash, desired_seq, created_at)
         VALUES (@id, @labels, @channel, @tokenHash,
                 COALESCE((SELECT desired_seq FROM device_seq_floor WHERE device_id = @id), 0), @now)`,
      ).run({
        id: device.id,
        labels: json(device.labels),
        channel: device.channel,
        tokenHash: device.tokenHash,
        now: device.now,
      }),
    );
    return this.getDevice(device.id) as DeviceRecord;
  }

  getDevice(id: string): DeviceRecord | null {
    const row = this.q<DeviceRow>('SELECT * FROM devices WHERE id = ?').get(id);
    return row ? toDevice(row) : null;
  }

  deviceTokenHash(id: string): string | null {
    return this.q<{ token_hash: string }>('SELECT token_hash FROM devices WHERE id = ?').get(id)?.token_hash ?? null;
  }

  listDevices(): DeviceRecord[] {
    return this.q<DeviceRow>('SELECT * FROM devices ORDER BY id').all().map(toDevice);
  }

  /**
   * Removes the device and (cascade) its desired entries. Its rollout rows and history stay as
   * evidence; its desired seq is remembered so the same id enrolled again continues above it.
   */
  removeDevice(id: string): boolean {
    return this.transaction(() => {
      const seq = this.q<{ desired_seq: number }>('SELECT desired_seq FROM devices WHERE id = ?').get(id);
      if (!seq) return false;
      this.q(
        `INSERT INTO device_seq_floor (device_id, desired_seq) VALUES (?, ?)
         ON CONFLICT (device_id) DO UPDATE SET desired_seq = MAX(desired_seq, excluded.desired_seq)`,
      ).run(id, seq.desired_seq);
      return this.q('DELETE FROM devices WHERE id = ?').run(id).changes > 0;
    });
  }

  markAllOffline(): number {
    return this.q('UPDATE devices SET online = 0 WHERE online = 1').run().changes;
  }

  setDevicePresence(
    id: string,
    online: boolean,
    now: string,
    facts?: { facts: DeviceRecord['facts']; agentVersion: string | null },
  ): void {
    const result = facts
      ? this.q('UPDATE devices SET online = ?, last_seen = ?, facts = ?, agent_version = ? WHERE id = ?').run(
          bool(online),
          now,
          jsonOrNull(facts.facts),
          facts.agentVersion,
          id,
        )
      : this.q('UPDATE devices SET online = ?, last_seen = ? WHERE id = ?').run(bool(online), now, id);
    if (result.changes === 0) throw deviceNotFound(id);
  }

  setDeviceReport(id: string, report: DeviceRecord['lastReport'], now: string): void {
    const result = this.q('UPDATE devices SET last_report = ?, last_seen = ? WHERE id = ?').run(
      jsonOrNull(report),
      now,
      id,
    );
    if (result.changes === 0) throw deviceNotFound(id);
  }

  nextDesiredSeq(id: string): number {
    const row = this.guard({}, () =>
      this.q<{ desired_seq: number }>(
        'UPDATE devices SET desired_seq = desired_seq + 1 WHERE id = ? RETURNING desired_seq',
      ).get(id),
    );
    if (!row) throw deviceNotFound(id);
    return row.desired_seq;
  }

  // ---- operators ----

  addOperator(op: { name: string; role: Role; tokenHash: string; now: string }): OperatorRecord {
    this.guard({ conflict: `operator ${op.name} already exists` }, () =>
      this.q('INSERT INTO operators (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)').run(
        op.name,
        op.role,
        op.tokenHash,
        op.now,
      ),
    );
    return { name: op.name, role: op.role, createdAt: op.now };
  }

  getOperator(name: string): (OperatorRecord & { tokenHash: string }) | null {
    const row = this.q<OperatorRow>('SELECT * FROM operators WHERE name = ?').get(name);
    return row ? { ...toOperator(row), tokenHash: row.token_hash } : null;
  }

  listOperators(): OperatorRecord[] {
    return this.q<OperatorRow>('SELECT * FROM operators ORDER BY name').all().map(toOperator);
  }

  // ---- trusted release keys ----

  addKey(key: { keyId: string; publicKey: string; name: string | null; now: string }): TrustedKeyRecord {
    this.guard({ conflict: `trusted key ${key.keyId} already exists` }, () =>
      this.q('INSERT INTO trusted_keys (key_id, public_key, name, revoked, added_at) VALUES (?, ?, ?, 0, ?)').run(
        key.keyId,
        key.publicKey,
        key.name,
        key.now,
      ),
    );
    return { keyId: key.keyId, publicKey: key.publicKey, name: key.name, revoked: false, addedAt: key.now };
  }

  listKeys(): TrustedKeyRecord[] {
    return this.q<KeyRow>('SELECT * FROM trusted_keys ORDER BY added_at, key_id').all().map(toKey);
  }

  /** True when the key exists (revoking a revoked key again is a no-op that returns true). */
  revokeKey(keyId: string): boolean {
    return this.q('UPDATE trusted_keys SET revoked = 1 WHERE key_id = ?').run(keyId).changes > 0;
  }

  // ---- groups ----

  createGroup(group: {
    name: string;
    devices: string[] | null;
    selector: Record<string, string> | null;
    now: string;
  }): GroupRecord {
    this.guard({ conflict: `group ${group.name} already exists` }, () =>
      this.q('INSERT INTO groups (name, devices, selector, created_at) VALUES (?, ?, ?, ?)').run(
        group.name,
        jsonOrNull(group.devices),
        jsonOrNull(group.selector),
        group.now,
      ),
    );
    return this.getGroup(group.name) as GroupRecord;
  }

  getGroup(name: string): GroupRecord | null {
    const row = this.q<GroupRow>('SELECT * FROM groups WHERE name = ?').get(name);
    return row ? toGroup(row) : null;
  }

  listGroups(): GroupRecord[] {
    return this.q<GroupRow>('SELECT * FROM groups ORDER BY name').all().map(toGroup);
  }

  // ---- releases and channels ----

  addRelease(release: ReleaseRecord): ReleaseRecord {
    const expected = releaseIdOf(release.model, release.version);
    if (release.id !== expected) {
      throw new OtaError('E_INTERNAL', `release id ${release.id} must be ${expected}`);
    }
    this.guard({ conflict: `release ${release.id} already exists` }, () =>
      this.q(
        `INSERT INTO releases (id, model, version, counter, sha256, size, envelope, published_by, published_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        release.id,
        release.model,
        release.version,
        release.counter,
        release.sha256,
        release.size,
        json(release.envelope),
        release.publishedBy,
        release.publishedAt,
      ),
    );
    return this.getRelease(release.id) as ReleaseRecord;
  }

  getRelease(id: string): ReleaseRecord | null {
    const row = this.q<ReleaseRow>('SELECT * FROM releases WHERE id = ?').get(id);
    return row ? toRelease(row) : null;
  }

  /** Ordered by model, then counter (publication order within a model). */
  listReleases(model?: string): ReleaseRecord[] {
    const rows =
      model === undefined
        ? this.q<ReleaseRow>('SELECT * FROM releases ORDER BY model, counter, published_at, version').all()
        : this.q<ReleaseRow>('SELECT * FROM releases WHERE model = ? ORDER BY counter, published_at, version').all(
            model,
          );
    return rows.map(toRelease);
  }

  setChannel(channel: { model: string; channel: string; releaseId: string; now: string }): ChannelRecord {
    this.checkReleaseOf(channel.releaseId, channel.model, `channel ${channel.model}/${channel.channel}`);
    this.guard({ missing: () => `release ${channel.releaseId} not found` }, () =>
      this.q(
        `INSERT INTO channels (model, channel, release_id, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (model, channel) DO UPDATE SET release_id = excluded.release_id, updated_at = excluded.updated_at`,
      ).run(channel.model, channel.channel, channel.releaseId, channel.now),
    );
    return { model: channel.model, channel: channel.channel, releaseId: channel.releaseId, updatedAt: channel.now };
  }

  getChannel(model: string, channel: string): ChannelRecord | null {
    const row = this.q<ChannelRow>('SELECT * FROM channels WHERE model = ? AND channel = ?').get(model, channel);
    return row ? toChannel(row) : null;
  }

  listChannels(): ChannelRecord[] {
    return this.q<ChannelRow>('SELECT * FROM channels ORDER BY model, channel').all().map(toChannel);
  }

  /** E_NOT_FOUND when the release does not exist, E_CONFLICT when it belongs to another model. */
  private checkReleaseOf(releaseId: string, model: string, where: string): void {
    const row = this.q<{ model: string }>('SELECT model FROM releases WHERE id = ?').get(releaseId);
    if (!row) throw new OtaError('E_NOT_FOUND', `release ${releaseId} not found (for ${where})`);
    if (row.model !== model) {
      throw new OtaError(
        'E_CONFLICT',
        `release ${releaseId} is a release of model ${row.model}, not ${model} (${where})`,
      );
    }
  }

  // ---- desired state ----

  setDesired(entry: DesiredRecord): void {
    const result = this.guard(
      {
        missing: () =>
          this.getDevice(entry.deviceId) === null
            ? `device ${entry.deviceId} not found`
            : `release ${entry.releaseId} not found (desired state of device ${entry.deviceId})`,
      },
      () =>
        // Inserts only when the release exists and is of this model (checked below when not).
        this.q(
          `INSERT INTO desired (device_id, model, release_id, rollout_id, source, updated_at)
           SELECT @deviceId, @model, @releaseId, @rolloutId, @source, @updatedAt
           FROM releases WHERE id = @releaseId AND model = @model
           ON CONFLICT (device_id, model) DO UPDATE SET
             release_id = excluded.release_id, rollout_id = excluded.rollout_id,
             source = excluded.source, updated_at = excluded.updated_at`,
        ).run({
          deviceId: entry.deviceId,
          model: entry.model,
          releaseId: entry.releaseId,
          rolloutId: entry.rolloutId,
          source: entry.source,
          updatedAt: entry.updatedAt,
        }),
    );
    if (result.changes === 0) {
      this.checkReleaseOf(entry.releaseId, entry.model, `desired state of device ${entry.deviceId}`);
      throw new OtaError('E_INTERNAL', `desired state of ${entry.deviceId}/${entry.model} was not written`);
    }
  }

  removeDesired(deviceId: string, model: string): void {
    this.q('DELETE FROM desired WHERE device_id = ? AND model = ?').run(deviceId, model);
  }

  getDesired(deviceId: string, model: string): DesiredRecord | null {
    const row = this.q<DesiredRow>('SELECT * FROM desired WHERE device_id = ? AND model = ?').get(deviceId, model);
    return row ? toDesired(row) : null;
  }

  listDesiredFor(deviceId: string): DesiredRecord[] {
    return this.q<DesiredRow>('SELECT * FROM desired WHERE device_id = ? ORDER BY model').all(deviceId).map(toDesired);
  }

  devicesWithDesired(): string[] {
    return this.q<{ device_id: string }>('SELECT DISTINCT device_id FROM desired ORDER BY device_id')
      .all()
      .map((r) => r.device_id);
  }

  // ---- rollouts ----

  /**
   * Writes the rollout and its device rows at once. Whether its devices may join it (not in
   * another active rollout of the model) is the planner's rule (rollout/plan-create.ts).
   */
  createRollout(rollout: Rollout, devices: RolloutDevice[]): void {
    this.transaction(() => {
      this.guard(
        {
          conflict: `rollout ${rollout.id} already exists`,
          missing: () => `release ${rollout.releaseId} not found (rollout ${rollout.id})`,
        },
        () =>
          this.q(
            `INSERT INTO rollouts (id, model, version, release_id, channel, strategy, status, current_wave,
               acknowledged_failures, promoted, halt_reason, abort_policy, extra, created_by, created_at, updated_at)
             VALUES (@id, @model, @version, @releaseId, @channel, @strategy, @status, @currentWave,
               @acknowledgedFailures, @promoted, @haltReason, @abortPolicy, @extra, @createdBy, @createdAt, @updatedAt)`,
          ).run({
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
      this.writeRolloutDevices(rollout.id, devices, false);
    });
  }

  getRollout(id: string): Rollout | null {
    const row = this.q<RolloutRow>('SELECT * FROM rollouts WHERE id = ?').get(id);
    return row ? toRollout(row) : null;
  }

  /** All rollouts by creation; `active: true` only running/waiting_approval/halted, `false` only finished. */
  listRollouts(filter: { active?: boolean } = {}): Rollout[] {
    const where =
      filter.active === undefined ? '' : `WHERE status IN ${filter.active ? ACTIVE_STATUSES : DONE_STATUSES}`;
    return this.q<RolloutRow>(`SELECT * FROM rollouts ${where} ORDER BY created_at, id`).all().map(toRollout);
  }

  updateRollout(id: string, patch: Partial<Rollout>): void {
    if (patch.id !== undefined && patch.id !== id) {
      throw new OtaError('E_INTERNAL', `cannot rename rollout ${id} to ${patch.id}`);
    }
    const keys = Object.keys(patch)
      .filter((k) => k in ROLLOUT_COLUMNS && (patch as Record<string, unknown>)[k] !== undefined)
      .sort();
    const extra = rolloutExtra(patch);
    this.transaction(() => {
      const current = this.q<{ extra: string }>('SELECT extra FROM rollouts WHERE id = ?').get(id);
      if (!current) throw new OtaError('E_NOT_FOUND', `rollout ${id} not found`);
      const sets = keys.map((k) => `${(ROLLOUT_COLUMNS[k] as { column: string }).column} = @${k}`);
      const params: Record<string, SqlValue> = { id };
      for (const k of keys) {
        params[k] = (ROLLOUT_COLUMNS[k] as { write: (v: unknown) => SqlValue }).write(
          (patch as Record<string, unknown>)[k],
        );
      }
      if (Object.keys(extra).length > 0) {
        sets.push('extra = @extra');
        params.extra = json({ ...parse<Record<string, unknown>>(current.extra), ...extra });
      }
      if (sets.length === 0) return;
      this.guard({ missing: () => `release ${String(patch.releaseId)} not found (rollout ${id})` }, () =>
        this.q(`UPDATE rollouts SET ${sets.join(', ')} WHERE id = @id`).run(params),
      );
    });
  }

  rolloutDevices(rolloutId: string): RolloutDevice[] {
    return this.q<RolloutDeviceRow>('SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY wave, device_id')
      .all(rolloutId)
      .map(toRolloutDevice);
  }

  upsertRolloutDevices(rolloutId: string, devices: RolloutDevice[]): void {
    this.transaction(() => this.writeRolloutDevices(rolloutId, devices, true));
  }

  private writeRolloutDevices(rolloutId: string, devices: readonly RolloutDevice[], upsert: boolean): void {
    const stmt = this.q(
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
      this.guard(
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

  activeRolloutsFor(deviceId: string, model: string): Rollout[] {
    return this.q<RolloutRow>(
      `SELECT r.* FROM rollouts r JOIN rollout_devices rd ON rd.rollout_id = r.id
       WHERE rd.device_id = ? AND r.model = ? AND r.status IN ${ACTIVE_STATUSES}
       ORDER BY r.created_at, r.id`,
    )
      .all(deviceId, model)
      .map(toRollout);
  }

  // ---- device history ----

  appendHistory(rows: HistoryRecord[]): void {
    if (rows.length === 0) return;
    const stmt = this.q(
      `INSERT INTO device_history (device_id, model, state, version, rollout_id, error, ts)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.transaction(() => {
      for (const r of rows) {
        this.guard({}, () => stmt.run(r.deviceId, r.model, r.state, r.version, r.rolloutId, jsonOrNull(r.error), r.ts));
      }
    });
  }

  /** The device's last `limit` history rows, oldest first. */
  listHistory(deviceId: string, limit: number): HistoryRecord[] {
    return this.q<HistoryRow>(
      `SELECT * FROM (SELECT * FROM device_history WHERE device_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id`,
    )
      .all(deviceId, Math.max(0, Math.floor(limit)))
      .map(toHistory);
  }

  // ---- audit ----

  appendAudit(drafts: AuditDraft[], now: string): AuditEvent[] {
    return this.transaction(() => this.audit.append(drafts, now));
  }

  listAudit(filter: { rolloutId?: string; afterSeq?: number; limit?: number } = {}): AuditEvent[] {
    return this.audit.list(filter);
  }

  auditCount(): number {
    return this.audit.count();
  }

  verifyAudit(): AuditVerdict {
    return this.audit.verify();
  }
}

/**
 * Opens the connection. A read-only connection cannot create the WAL index (`-shm`) that a WAL
 * database needs once its last writer closed (SQLite then fails with SQLITE_CANTOPEN): in that
 * case the file is opened read-write with `PRAGMA query_only`, which refuses every write.
 */
function connect(file: string, readonly: boolean): Database.Database {
  try {
    return new Database(file, { readonly, fileMustExist: readonly, timeout: 5000 });
  } catch (err) {
    if (readonly && err instanceof Database.SqliteError && err.code === 'SQLITE_CANTOPEN') {
      try {
        const db = new Database(file, { fileMustExist: true, timeout: 5000 });
        db.pragma('query_only = ON');
        return db;
      } catch {
        // report the first error
      }
    }
    throw new OtaError('E_IO', `cannot open database ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function deviceNotFound(id: string): OtaError {
  return new OtaError('E_NOT_FOUND', `device ${id} not found`);
}

/** Opens (creating and migrating when needed) the coordinator database at `file`. */
export function openStore(file: string, options: StoreOptions = {}): SqliteStore {
  return SqliteStore.open(file, options);
}
