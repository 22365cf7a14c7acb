import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { canonicalJson } from '../../shared/canonical-json.js';
import { OtaError } from '../../shared/errors.js';
import { type AuditEvent, AuditEventSchema } from '../../shared/messages.js';
import { describeZodError } from '../../shared/zod-errors.js';
import type { AuditDraft, AuditVerdict } from './records.js';

/**
 * The append-only, hash-chained audit log (design section 6).
 *
 *   hash(row) = sha256hex(prevHash + canonicalJson({ seq, ts, actor, action, subject, details }))
 *
 * where prevHash is the previous row's hash (64 zeros for seq 1). Rows are numbered 1, 2, 3, ...
 * without gaps. The chain detects a changed row (its hash no longer matches), a removed or
 * inserted row (a seq gap, or a prev_hash that is not the previous row's hash) anywhere before
 * the head. It cannot tell a truncated or rewritten tail from a shorter log: keep the head hash
 * that `otactl audit verify` prints somewhere else to anchor it.
 */

export const GENESIS_HASH = '0'.repeat(64);

const HEX64 = /^[0-9a-f]{64}$/;

/** The hashed content of a row: everything but the hashes. */
export interface AuditContent {
  seq: number;
  ts: string;
  actor: string;
  action: string;
  subject: string | null;
  details: Record<string, unknown>;
}

export function auditHash(prevHash: string, row: AuditContent): string {
  const content = canonicalJson({
    seq: row.seq,
    ts: row.ts,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    details: row.details,
  });
  return createHash('sha256').update(prevHash).update(content).digest('hex');
}

/**
 * A row as read for verification: `details` is whatever the stored text parsed to (or the raw
 * text when it is not JSON), and the other fields are taken as they are.
 */
export interface AuditRowForVerify {
  seq: unknown;
  ts: unknown;
  actor: unknown;
  action: unknown;
  subject: unknown;
  details: unknown;
  prevHash: unknown;
  hash: unknown;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Verifies a chain given in seq order, one row at a time (pass a lazy iterable to verify a chain
 * of any length in constant memory). Pure: also usable on an NDJSON export.
 *
 * `firstBad` is the first seq at which the chain stops verifying: a missing seq, a row whose
 * prev_hash is not its predecessor's hash, or a row whose hash does not match its content.
 */
export function verifyAuditChain(rows: Iterable<AuditRowForVerify>): AuditVerdict {
  let expectedSeq = 1;
  let prev = GENESIS_HASH;
  let count = 0;
  const bad = (firstBad: number, reason: string): AuditVerdict => ({ ok: false, count, head: prev, firstBad, reason });

  for (const row of rows) {
    const seq = row.seq;
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) {
      return bad(expectedSeq, `the row after seq ${expectedSeq - 1} has no valid seq (${String(seq)})`);
    }
    if (seq < expectedSeq) {
      return bad(seq, `seq ${seq} appears again after seq ${expectedSeq - 1}: rows are out of order or duplicated`);
    }
    if (seq > expectedSeq) {
      const missing = seq === expectedSeq + 1 ? `row ${expectedSeq} is` : `rows ${expectedSeq}-${seq - 1} are`;
      return bad(expectedSeq, `${missing} missing: seq jumps from ${expectedSeq - 1} to ${seq} (rows were removed)`);
    }
    if (row.prevHash !== prev) {
      const before = seq === 1 ? 'the genesis hash (64 zeros)' : `the hash of row ${seq - 1}`;
      return bad(
        seq,
        `prev_hash of row ${seq} is not ${before}: a row was removed or inserted before it, ` +
          `or row ${seq - 1} was changed and re-hashed`,
      );
    }
    if (
      typeof row.ts !== 'string' ||
      typeof row.actor !== 'string' ||
      typeof row.action !== 'string' ||
      (row.subject !== null && typeof row.subject !== 'string')
    ) {
      return bad(seq, `row ${seq} has a malformed field (ts, actor, action or subject)`);
    }
    if (!isPlainObject(row.details)) {
      return bad(seq, `row ${seq} was changed: its details are not a JSON object`);
    }
    let computed: string;
    try {
      computed = auditHash(prev, {
        seq,
        ts: row.ts,
        actor: row.actor,
        action: row.action,
        subject: row.subject,
        details: row.details,
      });
    } catch (err) {
      return bad(seq, `row ${seq} cannot be hashed: ${(err as Error).message}`);
    }
    if (typeof row.hash !== 'string' || !HEX64.test(row.hash)) {
      return bad(seq, `row ${seq} has a malformed hash`);
    }
    if (computed !== row.hash) {
      return bad(seq, `row ${seq} was changed: its hash does not match its content`);
    }
    prev = row.hash;
    count += 1;
    expectedSeq += 1;
  }
  return { ok: true, count, head: prev, firstBad: null, reason: null };
}

/** A row of the `audit` table as SQLite returns it. */
interface AuditRow {
  seq: number;
  ts: string;
  actor: string;
  action: string;
  subject: string | null;
  details: string;
  prev_hash: string;
  hash: string;
}

const COLUMNS = 'seq, ts, actor, action, subject, details, prev_hash, hash';

function toEvent(row: AuditRow): AuditEvent {
  return {
    seq: row.seq,
    ts: row.ts,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function* forVerify(rows: Iterable<AuditRow>): Generator<AuditRowForVerify> {
  for (const row of rows) {
    let details: unknown;
    try {
      details = JSON.parse(row.details);
    } catch {
      details = row.details;
    }
    yield {
      seq: row.seq,
      ts: row.ts,
      actor: row.actor,
      action: row.action,
      subject: row.subject,
      details,
      prevHash: row.prev_hash,
      hash: row.hash,
    };
  }
}

export interface AuditListFilter {
  rolloutId?: string;
  afterSeq?: number;
  limit?: number;
  /** The newest `limit` events instead of the oldest (still returned in seq order). */
  newest?: boolean;
}

/**
 * The audit table of one connection: statements prepared once. It runs no transaction of its
 * own: `append` must run inside the caller's (audit-table.ts wraps it), so the seq it reads at the
 * head and the rows it writes are one atomic step.
 */
export class AuditChain {
  private readonly headStmt: Database.Statement<[], { seq: number; hash: string }>;
  private readonly insertStmt: Database.Statement<
    [number, string, string, string, string | null, string, string, string]
  >;
  private readonly countStmt: Database.Statement<[], { n: number }>;
  private readonly allStmt: Database.Statement<[], AuditRow>;
  private readonly listStmt: Database.Statement<[number, number], AuditRow>;
  private readonly listRolloutStmt: Database.Statement<[string, string, number, number], AuditRow>;
  private readonly newestStmt: Database.Statement<[number, number], AuditRow>;
  private readonly newestRolloutStmt: Database.Statement<[string, string, number, number], AuditRow>;

  constructor(private readonly db: Database.Database) {
    this.headStmt = db.prepare('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1');
    this.insertStmt = db.prepare(`INSERT INTO audit (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`);
    this.countStmt = db.prepare('SELECT COUNT(*) AS n FROM audit');
    this.allStmt = db.prepare(`SELECT ${COLUMNS} FROM audit ORDER BY seq`);
    this.listStmt = db.prepare(`SELECT ${COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`);
    this.listRolloutStmt = db.prepare(
      `SELECT ${COLUMNS} FROM audit
       WHERE (json_extract(details, '$.rolloutId') = ? OR subject = ?) AND seq > ?
       ORDER BY seq LIMIT ?`,
    );
    this.newestStmt = db.prepare(`SELECT ${COLUMNS} FROM audit WHERE seq > ? ORDER BY seq DESC LIMIT ?`);
    this.newestRolloutStmt = db.prepare(
      `SELECT ${COLUMNS} FROM audit
       WHERE (json_extract(details, '$.rolloutId') = ? OR subject = ?) AND seq > ?
       ORDER BY seq DESC LIMIT ?`,
    );
  }

  /** Appends drafts as consecutive rows at the head; returns the rows as stored. */
  append(drafts: readonly AuditDraft[], now: string): AuditEvent[] {
    if (drafts.length === 0) return [];
    if (!this.db.inTransaction) {
      throw new OtaError('E_INTERNAL', 'AuditChain.append must run inside a transaction');
    }
    const head = this.headStmt.get();
    let seq = head?.seq ?? 0;
    let prev = head?.hash ?? GENESIS_HASH;
    const out: AuditEvent[] = [];
    for (const draft of drafts) {
      seq += 1;
      let detailsText: string;
      try {
        detailsText = canonicalJson(draft.details ?? {});
      } catch (err) {
        throw new OtaError('E_INTERNAL', `audit ${draft.action}: details are not JSON: ${(err as Error).message}`, {
          cause: err,
        });
      }
      // Hash exactly what a reader gets back from the stored text.
      const details = JSON.parse(detailsText) as Record<string, unknown>;
      const content: AuditContent = {
        seq,
        ts: now,
        actor: draft.actor,
        action: draft.action,
        subject: draft.subject,
        details,
      };
      const hash = auditHash(prev, content);
      const event: AuditEvent = { ...content, prevHash: prev, hash };
      const checked = AuditEventSchema.safeParse(event);
      if (!checked.success) {
        throw new OtaError('E_INTERNAL', `audit ${draft.action}: invalid row: ${describeZodError(checked.error)}`);
      }
      this.insertStmt.run(seq, now, draft.actor, draft.action, draft.subject, detailsText, prev, hash);
      out.push(event);
      prev = hash;
    }
    return out;
  }

  /** Rows in seq order; `rolloutId` keeps rows whose details.rolloutId or subject (`rollout:ID`) name it. */
  list(filter: AuditListFilter = {}): AuditEvent[] {
    const after = filter.afterSeq ?? 0;
    const limit = filter.limit ?? -1; // SQLite: a negative LIMIT is no limit
    if (filter.newest) {
      // The last `limit` rows, read from the end through the primary key, returned oldest first.
      const rows =
        filter.rolloutId === undefined
          ? this.newestStmt.all(after, limit)
          : this.newestRolloutStmt.all(filter.rolloutId, `rollout:${filter.rolloutId}`, after, limit);
      return rows.reverse().map(toEvent);
    }
    const rows =
      filter.rolloutId === undefined
        ? this.listStmt.all(after, limit)
        : this.listRolloutStmt.all(filter.rolloutId, `rollout:${filter.rolloutId}`, after, limit);
    return rows.map(toEvent);
  }

  count(): number {
    return this.countStmt.get()?.n ?? 0;
  }

  head(): { seq: number; hash: string } {
    return this.headStmt.get() ?? { seq: 0, hash: GENESIS_HASH };
  }

  /** Walks the whole chain in seq order, row by row (statement iterator: constant memory). */
  verify(): AuditVerdict {
    return verifyAuditChain(forVerify(this.allStmt.iterate()));
  }
}
