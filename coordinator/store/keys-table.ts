import type { Db } from './db.js';
import type { TrustedKeyRecord } from './records.js';

/** The trusted release keys (trusted_keys): persistence and constraints only. */

interface KeyRow {
  key_id: string;
  public_key: string;
  name: string | null;
  revoked: number;
  added_at: string;
}

const toKey = (row: KeyRow): TrustedKeyRecord => ({
  keyId: row.key_id,
  publicKey: row.public_key,
  name: row.name,
  revoked: row.revoked === 1,
  addedAt: row.added_at,
});

export class KeysTable {
  constructor(private readonly db: Db) {}

  add(key: { keyId: string; publicKey: string; name: string | null; now: string }): TrustedKeyRecord {
    this.db.guard({ conflict: `trusted key ${key.keyId} already exists` }, () =>
      this.db
        .q('INSERT INTO trusted_keys (key_id, public_key, name, revoked, added_at) VALUES (?, ?, ?, 0, ?)')
        .run(key.keyId, key.publicKey, key.name, key.now),
    );
    return { keyId: key.keyId, publicKey: key.publicKey, name: key.name, revoked: false, addedAt: key.now };
  }

  list(): TrustedKeyRecord[] {
    return this.db.q<KeyRow>('SELECT * FROM trusted_keys ORDER BY added_at, key_id').all().map(toKey);
  }

  /** True when the key exists (revoking a revoked key again is a no-op that returns true). */
  revoke(keyId: string): boolean {
    return this.db.q('UPDATE trusted_keys SET revoked = 1 WHERE key_id = ?').run(keyId).changes > 0;
  }
}
