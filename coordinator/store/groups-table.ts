import { type Db, jsonOrNull, parseOrNull } from './db.js';
import type { GroupRecord } from './records.js';

/** The groups table (a device list or a label selector, JSON text): persistence and constraints only. */

interface GroupRow {
  name: string;
  devices: string | null;
  selector: string | null;
  created_at: string;
}

const toGroup = (row: GroupRow): GroupRecord => ({
  name: row.name,
  devices: parseOrNull(row.devices),
  selector: parseOrNull(row.selector),
  createdAt: row.created_at,
});

export class GroupsTable {
  constructor(private readonly db: Db) {}

  create(group: {
    name: string;
    devices: string[] | null;
    selector: Record<string, string> | null;
    now: string;
  }): GroupRecord {
    this.db.guard({ conflict: `group ${group.name} already exists` }, () =>
      this.db
        .q('INSERT INTO groups (name, devices, selector, created_at) VALUES (?, ?, ?, ?)')
        .run(group.name, jsonOrNull(group.devices), jsonOrNull(group.selector), group.now),
    );
    return this.get(group.name) as GroupRecord;
  }

  get(name: string): GroupRecord | null {
    const row = this.db.q<GroupRow>('SELECT * FROM groups WHERE name = ?').get(name);
    return row ? toGroup(row) : null;
  }

  list(): GroupRecord[] {
    return this.db.q<GroupRow>('SELECT * FROM groups ORDER BY name').all().map(toGroup);
  }
}
