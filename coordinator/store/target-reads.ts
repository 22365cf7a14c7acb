/**
 * Reads about a list of devices (a rollout's, an experiment's or a channel's target) in one
 * statement each, instead of one statement per device.
 *
 * Why: `rollout create` over 50,000 devices read each device's presence, desired state, active
 * rollouts and running experiments row by row, ~2 s of the coordinator's only thread, during which
 * it took no report and answered no command (BENCHMARKS.md, issue 16, 2026-12-08). The list goes
 * in as one JSON array parameter (SQLite's json_each), so no statement is built per list length
 * and no limit on bound parameters applies; `IN (SELECT ...)` makes SQLite look each id up by the
 * table's index, so a small target in a large fleet still reads only its own rows.
 */

/** `IN` + this, with the list bound as `jsonIds(ids)`. */
export const IDS_IN_JSON = '(SELECT value FROM json_each(?))';

export function jsonIds(ids: readonly string[]): string {
  return JSON.stringify(ids);
}

/** Rows of (device, owner id) grouped per device, in the rows' order. */
export function groupIds(rows: Iterable<{ device_id: string; id: string }>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const row of rows) {
    const list = out.get(row.device_id);
    if (list) list.push(row.id);
    else out.set(row.device_id, [row.id]);
  }
  return out;
}
