import type { AuditEvent } from '../../shared/messages.js';
import { AuditChain } from './audit-chain.js';
import type { Db } from './db.js';
import type { AuditDraft, AuditVerdict } from './records.js';

/**
 * The audit table: the hash chain of audit-chain.ts over the shared connection. Append computes
 * seq, prevHash and hash = sha256(prevHash || canonical(row)) inside one transaction, so the head
 * it reads is the head it extends.
 */
export class AuditTable {
  private readonly chain: AuditChain;

  constructor(private readonly db: Db) {
    this.chain = new AuditChain(db.connection);
  }

  append(drafts: readonly AuditDraft[], now: string): AuditEvent[] {
    return this.db.transaction(() => this.chain.append(drafts, now));
  }

  list(filter: { rolloutId?: string; afterSeq?: number; limit?: number; newest?: boolean } = {}): AuditEvent[] {
    return this.chain.list(filter);
  }

  count(): number {
    return this.chain.count();
  }

  verify(): AuditVerdict {
    return this.chain.verify();
  }
}
