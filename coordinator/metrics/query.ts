import { OtaError } from '../../shared/errors.js';
import { METRIC_SOURCES, type MetricSource } from '../../shared/metrics/limits.js';
import { ID_PATTERN } from '../../shared/names.js';
import type { MetricsDb } from './metrics-db.js';
import {
  emptyMerged,
  type Merged,
  mergedFromJson,
  mergedOfSeries,
  mergeMerged,
  type SeriesSummary,
  type StoredSeries,
  summarize,
} from './series.js';

/**
 * Queries over metrics.db (`otactl metrics`). Which table answers decides the cost, and no query
 * reads the raw windows of the whole fleet:
 *
 *  - by version, fleet or group: the minute rollups of that scope (1,440 rows per version for a
 *    day, whatever the fleet's size), grain 'minute';
 *  - a device list (`--devices a,b`): those devices' raw windows, through the primary key
 *    (device, model, source, window start), grain 'window';
 *  - by device, fleet or group: the device-hour rollups, the range rounded out to whole hours,
 *    grain 'hour' (`from` and `to` say what was covered).
 *
 * Devices per version (fleet and group) are the distinct devices of the device-hour rows of the
 * hours the range touches, read from that table's primary key alone: a device that reported in
 * the touched hours only outside the range counts. A group's samples are its minute rollups,
 * which count a summary in the groups its device was in when it arrived; its devices are the
 * group's members now.
 */

/** The longest device list a query takes (one indexed read per device). */
export const MAX_QUERY_DEVICES = 1000;
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

export interface MetricsQuery {
  model: string;
  version?: string;
  /** Default 'app'. */
  source?: MetricSource;
  since: Date;
  until: Date;
  /** Default 'version'. */
  by?: 'version' | 'device';
  /** A group: its rollups, and its members now for device counts and the by-device view. */
  group?: { name: string; members: ReadonlySet<string> };
  devices?: readonly string[];
}

export interface MetricsRow extends SeriesSummary {
  version: string;
  /** By device only. */
  device?: string;
  devices: number;
}

export interface MetricsResult {
  model: string;
  source: MetricSource;
  by: 'version' | 'device';
  scope: 'fleet' | 'group' | 'devices';
  /** The range the rows cover (the query's, rounded out to the grain). */
  from: string;
  to: string;
  grain: 'window' | 'minute' | 'hour';
  rows: MetricsRow[];
}

const byText = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

function usage(message: string): never {
  throw new OtaError('E_USAGE', message);
}

function check(q: MetricsQuery): void {
  if (!ID_PATTERN.test(q.model)) usage(`metrics query: model "${q.model}" is not a model name`);
  if (q.source !== undefined && !METRIC_SOURCES.includes(q.source))
    usage(`metrics query: source must be one of ${METRIC_SOURCES.join(', ')}, got ${q.source}`);
  if (!(q.since instanceof Date) || Number.isNaN(q.since.getTime())) usage('metrics query: since is not a date');
  if (!(q.until instanceof Date) || Number.isNaN(q.until.getTime())) usage('metrics query: until is not a date');
  if (q.since.getTime() >= q.until.getTime())
    usage(`metrics query: since (${q.since.toISOString()}) must be before until (${q.until.toISOString()})`);
  if (q.group && q.devices) usage('metrics query: give a group or a device list, not both');
  if (q.devices && (q.devices.length === 0 || q.devices.length > MAX_QUERY_DEVICES))
    usage(`metrics query: give 1 to ${MAX_QUERY_DEVICES} devices (got ${q.devices.length}); for more, use a group`);
}

const floorTo = (t: number, step: number) => Math.floor(t / step) * step;
const ceilTo = (t: number, step: number) => Math.ceil(t / step) * step;

export function runQuery(db: MetricsDb, q: MetricsQuery): MetricsResult {
  check(q);
  const source = q.source ?? 'app';
  const by = q.by ?? 'version';
  if (q.devices) return fromWindows(db, q, source, by, q.devices);
  if (by === 'device') return fromDeviceHours(db, q, source);
  return fromMinutes(db, q, source);
}

/** Accumulates merged series per row key, and the distinct devices of each. */
class Rows {
  private readonly rows = new Map<string, { version: string; device?: string; merged: Merged; devices: Set<string> }>();

  add(version: string, device: string | undefined, merged: Merged | null, countDevice?: string): void {
    const key = device === undefined ? version : `${device}\u0000${version}`;
    let row = this.rows.get(key);
    if (!row) {
      row = { version, merged: emptyMerged(), devices: new Set() };
      if (device !== undefined) row.device = device;
      this.rows.set(key, row);
    }
    if (merged) row.merged = mergeMerged(row.merged, merged);
    if (countDevice !== undefined) row.devices.add(countDevice);
  }

  result(devicesOf?: Map<string, number>): MetricsRow[] {
    const out: MetricsRow[] = [];
    for (const r of this.rows.values()) {
      const row: MetricsRow = {
        version: r.version,
        devices: devicesOf ? (devicesOf.get(r.version) ?? 0) : r.devices.size,
        ...summarize(r.merged),
      };
      if (r.device !== undefined) row.device = r.device;
      out.push(row);
    }
    return out.sort((a, b) => byText(a.device ?? '', b.device ?? '') || byText(a.version, b.version));
  }
}

function fromWindows(
  db: MetricsDb,
  q: MetricsQuery,
  source: MetricSource,
  by: 'version' | 'device',
  devices: readonly string[],
): MetricsResult {
  const from = q.since.getTime();
  const to = q.until.getTime();
  const read = db.q<{ version: string; windows_merged: number; count: number; errors: number; series: string }>(
    `SELECT version, windows_merged, count, errors, series FROM windows
      WHERE device_id = ? AND model = ? AND source = ? AND window_start >= ? AND window_start < ?`,
  );
  const rows = new Rows();
  for (const device of new Set(devices)) {
    for (const r of read.iterate(device, q.model, source, from, to)) {
      if (q.version !== undefined && r.version !== q.version) continue;
      const merged = mergedOfSeries(JSON.parse(r.series) as StoredSeries, r.count, r.errors, r.windows_merged);
      rows.add(r.version, by === 'device' ? device : undefined, merged, device);
    }
  }
  return result(q, source, by, 'devices', from, to, 'window', rows.result());
}

function fromMinutes(db: MetricsDb, q: MetricsQuery, source: MetricSource): MetricsResult {
  const from = floorTo(q.since.getTime(), MINUTE_MS);
  const to = ceilTo(q.until.getTime(), MINUTE_MS);
  const scope = q.group ? `group:${q.group.name}` : 'fleet';
  const versionFilter = q.version === undefined ? '' : ' AND version = ?';
  const params: (string | number)[] = [scope, q.model, source, from, to];
  if (q.version !== undefined) params.push(q.version);
  const rows = new Rows();
  for (const r of db
    .q<{ version: string; series: string }>(
      `SELECT version, series FROM minute_rollups
        WHERE scope = ? AND model = ? AND source = ? AND minute >= ? AND minute < ?${versionFilter}`,
    )
    .iterate(...params)) {
    rows.add(r.version, undefined, mergedFromJson(r.series));
  }
  const devices = distinctDevices(db, q, source, floorTo(from, HOUR_MS), ceilTo(to, HOUR_MS));
  return result(q, source, 'version', q.group ? 'group' : 'fleet', from, to, 'minute', rows.result(devices));
}

/** Devices per version over whole hours, members of the group only when there is one. */
function distinctDevices(db: MetricsDb, q: MetricsQuery, source: MetricSource, from: number, to: number) {
  const versionFilter = q.version === undefined ? '' : ' AND version = ?';
  const params: (string | number)[] = [q.model, source, from, to];
  if (q.version !== undefined) params.push(q.version);
  const out = new Map<string, number>();
  const members = q.group?.members;
  for (const r of db
    .q<{ version: string; device_id: string }>(
      `SELECT DISTINCT version, device_id FROM device_hours
        WHERE model = ? AND source = ? AND hour >= ? AND hour < ?${versionFilter}`,
    )
    .iterate(...params)) {
    if (members && !members.has(r.device_id)) continue;
    out.set(r.version, (out.get(r.version) ?? 0) + 1);
  }
  return out;
}

function fromDeviceHours(db: MetricsDb, q: MetricsQuery, source: MetricSource): MetricsResult {
  const from = floorTo(q.since.getTime(), HOUR_MS);
  const to = ceilTo(q.until.getTime(), HOUR_MS);
  const versionFilter = q.version === undefined ? '' : ' AND version = ?';
  const params: (string | number)[] = [q.model, source, from, to];
  if (q.version !== undefined) params.push(q.version);
  const members = q.group?.members;
  const rows = new Rows();
  for (const r of db
    .q<{ device_id: string; version: string; series: string }>(
      `SELECT device_id, version, series FROM device_hours
        WHERE model = ? AND source = ? AND hour >= ? AND hour < ?${versionFilter}`,
    )
    .iterate(...params)) {
    if (members && !members.has(r.device_id)) continue;
    rows.add(r.version, r.device_id, mergedFromJson(r.series), r.device_id);
  }
  return result(q, source, 'device', q.group ? 'group' : 'fleet', from, to, 'hour', rows.result());
}

function result(
  q: MetricsQuery,
  source: MetricSource,
  by: 'version' | 'device',
  scope: MetricsResult['scope'],
  from: number,
  to: number,
  grain: MetricsResult['grain'],
  rows: MetricsRow[],
): MetricsResult {
  return {
    model: q.model,
    source,
    by,
    scope,
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    grain,
    rows,
  };
}
