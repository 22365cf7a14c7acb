import type { Db } from './db.js';
import type { OperatorRecord, Role } from './records.js';

/** The operators table (name, role, token hash): persistence and constraints only. */

interface OperatorRow {
  name: string;
  role: Role;
  token_hash: string;
  created_at: string;
}

const toOperator = (row: OperatorRow): OperatorRecord => ({
  name: row.name,
  role: row.role,
  createdAt: row.created_at,
});

export class OperatorsTable {
  constructor(private readonly db: Db) {}

  add(op: { name: string; role: Role; tokenHash: string; now: string }): OperatorRecord {
    this.db.guard({ conflict: `operator ${op.name} already exists` }, () =>
      this.db
        .q('INSERT INTO operators (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)')
        .run(op.name, op.role, op.tokenHash, op.now),
    );
    return { name: op.name, role: op.role, createdAt: op.now };
  }

  get(name: string): (OperatorRecord & { tokenHash: string }) | null {
    const row = this.db.q<OperatorRow>('SELECT * FROM operators WHERE name = ?').get(name);
    return row ? { ...toOperator(row), tokenHash: row.token_hash } : null;
  }

  list(): OperatorRecord[] {
    return this.db.q<OperatorRow>('SELECT * FROM operators ORDER BY name').all().map(toOperator);
  }

  remove(name: string): boolean {
    return this.db.q('DELETE FROM operators WHERE name = ?').run(name).changes > 0;
  }

  setRole(name: string, role: Role): boolean {
    return this.db.q('UPDATE operators SET role = ? WHERE name = ?').run(role, name).changes > 0;
  }
}
