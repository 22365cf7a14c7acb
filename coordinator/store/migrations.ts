import type Database from 'better-sqlite3';
import { OtaError } from '../../shared/errors.js';

/**
 * The coordinator's schema as versioned migrations (design section 6). Each migration runs once,
 * in order, inside one IMMEDIATE transaction together with its row in `schema_migrations`, so a
 * crash mid-migration leaves the database at the previous version and two processes opening the
 * same file cannot both migrate it. Never edit a released migration: append a new one.
 *
 * Conventions: timestamps are ISO strings (TEXT); JSON columns hold JSON text (objects are parsed
 * on read by the store); booleans are INTEGER 0/1 with a CHECK.
 */
export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

const GENESIS = '0'.repeat(64);

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description:
      'initial schema: devices, operators, keys, groups, releases, channels, rollouts, desired, history, audit',
    sql: `
CREATE TABLE devices (
  id            TEXT PRIMARY KEY,
  labels        TEXT NOT NULL DEFAULT '{}',
  channel       TEXT NOT NULL,
  token_hash    TEXT NOT NULL,
  facts         TEXT,
  agent_version TEXT,
  online        INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
  last_seen     TEXT,
  desired_seq   INTEGER NOT NULL DEFAULT 0 CHECK (desired_seq >= 0),
  last_report   TEXT,
  created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX devices_channel ON devices (channel);

-- The desired seq of removed devices: a device enrolled again under the same id continues above
-- it, so an agent that kept its state never takes a new desired state for a replay.
CREATE TABLE device_seq_floor (
  device_id   TEXT PRIMARY KEY,
  desired_seq INTEGER NOT NULL
) STRICT;

CREATE TABLE operators (
  name       TEXT PRIMARY KEY,
  role       TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
  token_hash TEXT NOT NULL,
  created_at TEXT NOT NULL
) STRICT;

CREATE TABLE trusted_keys (
  key_id     TEXT PRIMARY KEY,
  public_key TEXT NOT NULL,
  name       TEXT,
  revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
  added_at   TEXT NOT NULL
) STRICT;

CREATE TABLE groups (
  name       TEXT PRIMARY KEY,
  devices    TEXT,
  selector   TEXT,
  created_at TEXT NOT NULL,
  CHECK ((devices IS NULL) <> (selector IS NULL))
) STRICT;

CREATE TABLE releases (
  id           TEXT PRIMARY KEY CHECK (id = model || '@' || version),
  model        TEXT NOT NULL,
  version      TEXT NOT NULL,
  counter      INTEGER NOT NULL CHECK (counter >= 0),
  sha256       TEXT NOT NULL,
  size         INTEGER NOT NULL CHECK (size >= 0),
  envelope     TEXT NOT NULL,
  published_by TEXT NOT NULL,
  published_at TEXT NOT NULL,
  UNIQUE (model, version)
) STRICT;

CREATE TABLE channels (
  model      TEXT NOT NULL,
  channel    TEXT NOT NULL,
  release_id TEXT NOT NULL REFERENCES releases (id),
  updated_at TEXT NOT NULL,
  PRIMARY KEY (model, channel)
) STRICT;

CREATE TABLE rollouts (
  id                    TEXT PRIMARY KEY,
  model                 TEXT NOT NULL,
  version               TEXT NOT NULL,
  release_id            TEXT NOT NULL REFERENCES releases (id),
  channel               TEXT NOT NULL,
  strategy              TEXT NOT NULL,
  status                TEXT NOT NULL
                        CHECK (status IN ('running', 'waiting_approval', 'halted', 'completed', 'aborted')),
  current_wave          INTEGER NOT NULL DEFAULT 0,
  acknowledged_failures INTEGER NOT NULL DEFAULT 0,
  promoted              INTEGER NOT NULL DEFAULT 0 CHECK (promoted IN (0, 1)),
  halt_reason           TEXT,
  abort_policy          TEXT CHECK (abort_policy IN ('keep', 'revert')),
  -- Rollout fields this schema has no column for (a newer engine's), as a JSON object.
  extra                 TEXT NOT NULL DEFAULT '{}',
  created_by            TEXT NOT NULL,
  created_at            TEXT NOT NULL,
  updated_at            TEXT NOT NULL
) STRICT;
CREATE INDEX rollouts_status ON rollouts (status);
CREATE INDEX rollouts_model_status ON rollouts (model, status);

CREATE TABLE rollout_devices (
  rollout_id          TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
  device_id           TEXT NOT NULL,
  wave                INTEGER NOT NULL CHECK (wave >= 0),
  state               TEXT NOT NULL,
  online              INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
  previous_release_id TEXT,
  assigned_at         TEXT,
  finished_at         TEXT,
  error               TEXT,
  PRIMARY KEY (rollout_id, device_id)
) STRICT;
CREATE INDEX rollout_devices_device ON rollout_devices (device_id);

CREATE TABLE desired (
  device_id  TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  model      TEXT NOT NULL,
  release_id TEXT NOT NULL REFERENCES releases (id),
  rollout_id TEXT,
  source     TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (device_id, model)
) STRICT;
CREATE INDEX desired_release ON desired (release_id);

CREATE TABLE device_history (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id  TEXT NOT NULL,
  model      TEXT NOT NULL,
  state      TEXT NOT NULL,
  version    TEXT,
  rollout_id TEXT,
  error      TEXT,
  ts         TEXT NOT NULL
) STRICT;
CREATE INDEX device_history_device ON device_history (device_id, id);

CREATE TABLE audit (
  seq       INTEGER PRIMARY KEY,
  ts        TEXT NOT NULL,
  actor     TEXT NOT NULL,
  action    TEXT NOT NULL,
  subject   TEXT,
  details   TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_subject ON audit (subject);
CREATE INDEX audit_rollout ON audit (json_extract(details, '$.rolloutId'));

-- Append-only (design section 6). The insert trigger also blocks INSERT OR REPLACE (which deletes
-- without firing delete triggers) and any insert that does not extend the chain at its head.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
  SELECT RAISE(ABORT, 'audit is append-only');
END;
CREATE TRIGGER audit_append_at_head BEFORE INSERT ON audit
WHEN NEW.seq IS NULL
  OR NEW.seq <> COALESCE((SELECT MAX(seq) FROM audit), 0) + 1
  OR NEW.prev_hash <> COALESCE((SELECT hash FROM audit WHERE seq = NEW.seq - 1), '${GENESIS}')
BEGIN
  SELECT RAISE(ABORT, 'audit is append-only: a row must extend the chain at its head');
END;
`,
  },
  {
    version: 2,
    description: 'rollout_devices.reverted_to: an abort with revert is recorded beside the outcome, not instead of it',
    // Rows written by version 1 in state 'reverted' lost their outcome: they keep no state but
    // 'assigned' (nothing known about the candidate) and their revert target as reverted_to.
    sql: `
ALTER TABLE rollout_devices ADD COLUMN reverted_to TEXT;
UPDATE rollout_devices
   SET reverted_to = json_object('releaseId', previous_release_id), state = 'assigned'
 WHERE state = 'reverted';
`,
  },
  {
    version: 3,
    description: 'trust_documents: signed trust rotations (docs/security.md), relayed to every device',
    // The signed envelope as JSON text, exactly as published; versions start at 1 and follow each
    // other (the service publishes only the next one).
    sql: `
CREATE TABLE trust_documents (
  version      INTEGER PRIMARY KEY CHECK (version >= 1),
  envelope     TEXT NOT NULL,
  published_by TEXT NOT NULL,
  published_at TEXT NOT NULL
) STRICT;
`,
  },
  {
    version: 4,
    description: 'experiments: A/B splits of a group between two releases (docs/experiments.md)',
    // Fields without a column of their own (metrics, thresholds, looks, promotion) are one JSON
    // object in `body`; the columns are what is searched or constrained.
    sql: `
CREATE TABLE experiments (
  id                TEXT PRIMARY KEY,
  model             TEXT NOT NULL,
  control_release   TEXT NOT NULL REFERENCES releases (id),
  candidate_release TEXT NOT NULL REFERENCES releases (id),
  status            TEXT NOT NULL CHECK (status IN ('running', 'halted', 'stopped', 'promoted')),
  body              TEXT NOT NULL,
  created_at        TEXT NOT NULL,
  updated_at        TEXT NOT NULL
) STRICT;
CREATE INDEX experiments_model_status ON experiments (model, status);

CREATE TABLE experiment_devices (
  experiment_id       TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  device_id           TEXT NOT NULL,
  arm                 TEXT NOT NULL CHECK (arm IN ('control', 'candidate')),
  previous_release_id TEXT,
  PRIMARY KEY (experiment_id, device_id)
) STRICT;
CREATE INDEX experiment_devices_device ON experiment_devices (device_id);
`,
  },
];

export const LATEST_SCHEMA_VERSION: number = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version     INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at  TEXT NOT NULL
)`;

/** The schema version recorded in the database (0 for a new, empty database). */
export function schemaVersion(db: Database.Database): number {
  const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
  if (!table) return 0;
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null };
  return row.v ?? 0;
}

function refuseNewer(version: number, file: string): void {
  if (version > LATEST_SCHEMA_VERSION) {
    throw new OtaError(
      'E_CONFIG',
      `database ${file} has schema version ${version}, newer than this ota-coordinator knows (${LATEST_SCHEMA_VERSION}): ` +
        'run the newer ota-coordinator that wrote it, or restore a backup made by this version',
    );
  }
}

/**
 * Brings the database up to LATEST_SCHEMA_VERSION. Idempotent: a database already at the latest
 * version is left untouched. Refuses (E_CONFIG) a database written by a newer version.
 * Returns the versions applied now.
 */
export function migrate(
  db: Database.Database,
  options: { file?: string; now?: () => string; migrations?: readonly Migration[] } = {},
): number[] {
  const file = options.file ?? db.name;
  const migrations = [...(options.migrations ?? MIGRATIONS)].sort((a, b) => a.version - b.version);
  const now = options.now ?? (() => new Date().toISOString());
  refuseNewer(schemaVersion(db), file);
  const run = db.transaction((): number[] => {
    db.exec(CREATE_MIGRATIONS_TABLE);
    // Read again inside the write lock: another process may have migrated meanwhile.
    const current = schemaVersion(db);
    refuseNewer(current, file);
    const record = db.prepare('INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)');
    const applied: number[] = [];
    for (const m of migrations) {
      if (m.version <= current) continue;
      db.exec(m.sql);
      record.run(m.version, m.description, now());
      applied.push(m.version);
    }
    return applied;
  });
  return run.immediate();
}

/** For read-only opens: the database must already be at exactly the version this code knows. */
export function checkSchema(db: Database.Database, file: string = db.name): void {
  const version = schemaVersion(db);
  refuseNewer(version, file);
  if (version < LATEST_SCHEMA_VERSION) {
    throw new OtaError(
      'E_CONFIG',
      `database ${file} has schema version ${version}, older than this code needs (${LATEST_SCHEMA_VERSION}): ` +
        'start ota-coordinator on it once (it migrates on open), then open it read-only',
    );
  }
}
