import { OtaError } from '../../shared/errors.js';
import { type Db, json, parse } from './db.js';
import type { TrustDocumentRecord } from './records.js';

/** The trust_documents table (signed trust rotations): persistence and constraints only. */

interface TrustRow {
  version: number;
  envelope: string;
  published_by: string;
  published_at: string;
}

const toTrust = (row: TrustRow): TrustDocumentRecord => ({
  version: row.version,
  envelope: parse(row.envelope),
  publishedBy: row.published_by,
  publishedAt: row.published_at,
});

export class TrustTable {
  constructor(private readonly db: Db) {}

  add(doc: TrustDocumentRecord): TrustDocumentRecord {
    this.db.guard({ conflict: `trust document version ${doc.version} already exists` }, () =>
      this.db
        .q('INSERT INTO trust_documents (version, envelope, published_by, published_at) VALUES (?, ?, ?, ?)')
        .run(doc.version, json(doc.envelope), doc.publishedBy, doc.publishedAt),
    );
    const stored = this.latest();
    if (stored?.version !== doc.version) throw new OtaError('E_INTERNAL', `trust document ${doc.version} not stored`);
    return stored;
  }

  latest(): TrustDocumentRecord | null {
    const row = this.db.q<TrustRow>('SELECT * FROM trust_documents ORDER BY version DESC LIMIT 1').get();
    return row ? toTrust(row) : null;
  }

  /** The newest `limit` documents, oldest first (the chain a desired state carries). */
  newest(limit: number): TrustDocumentRecord[] {
    return this.db
      .q<TrustRow>('SELECT * FROM trust_documents ORDER BY version DESC LIMIT ?')
      .all(limit)
      .map(toTrust)
      .reverse();
  }
}
