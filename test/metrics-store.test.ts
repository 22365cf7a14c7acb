import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { METRICS_SCHEMA_VERSION, MetricsDb } from '../coordinator/metrics/metrics-db.js';
import type { MetricsQuery } from '../coordinator/metrics/query.js';
import { MetricsRecorder, type MetricsRecorderDeps } from '../coordinator/metrics/recorder.js';
import type { PacedTimers } from '../coordinator/paced-flush.js';
import { CACHE_SIZE_PRAGMA } from '../coordinator/store/db.js';
import { runMetricsBench, table } from '../scripts/bench/metrics.js';
import { createLogger } from '../shared/logger.js';
import { type MetricSeries, type Metrics, MetricsSchema } from '../shared/messages.js';
import { CONFIDENCE_BINS, confidenceBin } from '../shared/metrics/limits.js';
import {
  BASE_RELATIVE_ACCURACY,
  coarsen,
  relativeAccuracyAt,
  sketchOfValues,
  type WireSketch,
} from '../shared/metrics/sketch.js';
import { prng } from './helpers/prng.js';
import { exactQuantile } from './helpers/quantiles.js';

/**
 * Device metrics storage (coordinator/metrics/) on real metrics.db files: what a query returns
 * against exact values computed from the same observations, duplicates, groups, device lists,
 * the by-device view, restart, retention, ids like `constructor`, and that fleet queries never
 * read the raw windows.
 */

const silent = createLogger('silent', process.stderr, 'ota-coordinator');
const T0 = Date.UTC(2030, 0, 1, 0, 0, 0);
const MIN = 60_000;
const HOUR = 3_600_000;

async function tempFile(t: Test): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-test-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'metrics.db');
}

function open(t: Test, file: string, deps: Partial<MetricsRecorderDeps> = {}) {
  const clock = { now: T0 + 2 * HOUR };
  const recorder = new MetricsRecorder({
    file,
    now: () => new Date(clock.now),
    logger: silent,
    groupsOf: () => [],
    ...deps,
  });
  t.teardown(() => recorder.close());
  return { recorder, clock };
}

const sketchOf = (values: readonly number[]): WireSketch => sketchOfValues(values);

interface Obs {
  latency: number;
  confidence?: number;
  error?: boolean;
  score?: number;
}

function series(model: string, version: string, obs: readonly Obs[], source: 'app' | 'probe' = 'app'): MetricSeries {
  const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
  let withConfidence = false;
  for (const o of obs) {
    if (o.confidence === undefined) continue;
    withConfidence = true;
    const bin = confidenceBin(o.confidence);
    confidence[bin] = (confidence[bin] as number) + 1;
  }
  const scores = obs.filter((o) => o.score !== undefined).map((o) => o.score as number);
  const out: MetricSeries = {
    model,
    version,
    source,
    count: obs.length,
    errors: obs.filter((o) => o.error).length,
    latencyMs: sketchOf(obs.map((o) => o.latency)),
  };
  if (withConfidence) out.confidence = confidence;
  if (scores.length > 0) {
    const values = Object.create(null) as Record<string, WireSketch>;
    values[VALUE] = sketchOf(scores);
    out.values = values;
  }
  return out;
}

/** A summary as the broker hands it over: parsed by MetricsSchema. */
function message(windowStart: number, list: MetricSeries[], windowsMerged = 1): Metrics {
  return MetricsSchema.parse({
    ts: new Date(windowStart + MIN).toISOString(),
    windowStart: new Date(windowStart).toISOString(),
    windowSeconds: 60 * windowsMerged,
    windowsMerged,
    series: list,
  });
}

const exact = exactQuantile;

function near(t: Test, got: number | null | undefined, want: number, alpha: number, what: string) {
  t.ok(
    typeof got === 'number' && Math.abs(got - want) <= alpha * Math.abs(want) + 1e-9,
    `${what}: ${got} within ${alpha} of ${want}`,
  );
}

/** A custom value's name that is also an Object.prototype property. */
const VALUE = 'constructor';

const range = (since: number, until: number) => ({ since: new Date(since), until: new Date(until) });

t.test('a fleet query matches the exact statistics of the observations, per version', async (t) => {
  const { recorder } = open(t, await tempFile(t));
  const random = prng(42).next;
  const all = new Map<string, Obs[]>([
    ['1.0', []],
    ['2.0', []],
  ]);
  const acks: Promise<void>[] = [];
  // 6 devices x 30 minutes; devices 0-2 on 1.0 (slower), 3-5 on 2.0.
  for (let m = 0; m < 30; m++) {
    for (let d = 0; d < 6; d++) {
      const version = d < 3 ? '1.0' : '2.0';
      const obs: Obs[] = Array.from({ length: 20 }, () => ({
        latency: Math.exp((version === '1.0' ? 3 : 2.5) + random()),
        confidence: random(),
        error: random() < 0.05,
        score: 1 + random() * 9,
      }));
      all.get(version)?.push(...obs);
      acks.push(recorder.ingest(`dev-${d}`, message(T0 + m * MIN + d * 1000, [series('detector', version, obs)])));
    }
  }
  await Promise.all(acks);
  const r = recorder.query({ model: 'detector', ...range(T0, T0 + HOUR) });
  t.equal(r.grain, 'minute');
  t.equal(r.scope, 'fleet');
  t.equal(r.from, new Date(T0).toISOString());
  t.same(
    r.rows.map((row) => row.version),
    ['1.0', '2.0'],
    'one row per version, side by side',
  );
  for (const row of r.rows) {
    const obs = all.get(row.version) as Obs[];
    const lat = obs.map((o) => o.latency).sort((a, b) => a - b);
    t.equal(row.devices, 3, `${row.version}: devices`);
    t.equal(row.samples, obs.length, `${row.version}: samples`);
    t.equal(row.windows, 90);
    t.equal(row.errors, obs.filter((o) => o.error).length);
    t.equal(row.errorRate, row.errors / row.samples);
    const l = row.latencyMs;
    if (!l) throw new Error('no latency');
    t.equal(l.relativeAccuracy, relativeAccuracyAt(0));
    near(t, l.p50, exact(lat, 0.5), BASE_RELATIVE_ACCURACY, `${row.version} p50`);
    near(t, l.p95, exact(lat, 0.95), BASE_RELATIVE_ACCURACY, `${row.version} p95`);
    near(t, l.p99, exact(lat, 0.99), BASE_RELATIVE_ACCURACY, `${row.version} p99`);
    near(t, l.mean, lat.reduce((a, b) => a + b, 0) / lat.length, 1e-9, `${row.version} mean`);
    t.equal(l.min, lat[0]);
    t.equal(l.max, lat.at(-1));
    const bins = new Array<number>(CONFIDENCE_BINS).fill(0);
    for (const o of obs) {
      const b = confidenceBin(o.confidence as number);
      bins[b] = (bins[b] as number) + 1;
    }
    t.same(row.confidence, { counts: bins, samples: obs.length });
    const scores = obs.map((o) => o.score as number).sort((a, b) => a - b);
    t.equal(Object.getPrototypeOf(row.values), null, 'values have no prototype');
    near(t, row.values[VALUE]?.p95, exact(scores, 0.95), BASE_RELATIVE_ACCURACY, 'value named constructor');
    t.equal(row.values[VALUE]?.samples, scores.length);
  }

  const one = recorder.query({ model: 'detector', version: '2.0', ...range(T0, T0 + HOUR) });
  t.same(one.rows, [r.rows[1]], 'a version filter returns that version only, with the same numbers');

  const part = recorder.query({ model: 'detector', ...range(T0 + 10 * MIN + 30_000, T0 + 20 * MIN) });
  t.equal(part.from, new Date(T0 + 10 * MIN).toISOString(), 'the range is rounded out to minutes');
  t.equal(part.rows[0]?.windows, 30, 'minutes 10..19 only');

  t.same(recorder.query({ model: 'detector', source: 'probe', ...range(T0, T0 + HOUR) }).rows, [], 'no probe series');
  t.same(recorder.query({ model: 'other', ...range(T0, T0 + HOUR) }).rows, [], 'an unknown model has no rows');
  const stats = recorder.stats();
  t.equal(stats.summaries, 180);
  t.equal(stats.windows, 180);
  t.same(stats.rows, { windows: 180, minuteRollups: 60, deviceHours: 6 });
  t.ok(stats.bytes.file > 0);
});

t.test('a summary sent twice counts once, in the same commit or a later one', async (t) => {
  const { recorder } = open(t, await tempFile(t));
  const s = series('m', '1', [{ latency: 10 }, { latency: 20, error: true }]);
  const msg = message(T0, [s]);
  await Promise.all([recorder.ingest('a', msg), recorder.ingest('a', msg)]);
  await recorder.ingest('a', message(T0, [s]));
  await recorder.ingest('b', msg);
  const r = recorder.query({ model: 'm', ...range(T0, T0 + MIN) });
  t.equal(r.rows[0]?.samples, 4, 'a and b once each');
  t.equal(r.rows[0]?.errors, 2);
  t.equal(r.rows[0]?.devices, 2);
  const byDevice = recorder.query({ model: 'm', by: 'device', ...range(T0, T0 + MIN) });
  t.same(
    byDevice.rows.map((row) => [row.device, row.samples]),
    [
      ['a', 2],
      ['b', 2],
    ],
  );
  const stats = recorder.stats();
  t.equal(stats.duplicates, 2);
  t.equal(stats.summaries, 4);
  t.equal(stats.rows.windows, 2);
});

t.test('groups, device lists and the by-device view', async (t) => {
  const members = new Set(['g1', 'g2']);
  const { recorder } = open(t, await tempFile(t), {
    groupsOf: (id) => (members.has(id) ? ['canary', 'constructor'] : []),
  });
  const acks: Promise<void>[] = [];
  const lat = (d: number) => (d + 1) * 10;
  const devices = ['g1', 'g2', 'x1', 'x2', 'x3'];
  for (let h = 0; h < 2; h++) {
    for (const [i, d] of devices.entries()) {
      const version = i % 2 === 0 ? '1' : '2';
      acks.push(recorder.ingest(d, message(T0 + h * HOUR + 5 * MIN, [series('m', version, [{ latency: lat(i) }])])));
    }
  }
  await Promise.all(acks);
  const group = { name: 'canary', members };
  const g = recorder.query({ model: 'm', group, ...range(T0, T0 + 2 * HOUR) });
  t.equal(g.scope, 'group');
  t.same(
    g.rows.map((r) => [r.version, r.devices, r.samples, r.latencyMs?.max]),
    [
      ['1', 1, 2, lat(0)],
      ['2', 1, 2, lat(1)],
    ],
    'the group rollup holds its members only',
  );
  const weird = recorder.query({ model: 'm', group: { name: 'constructor', members }, ...range(T0, T0 + 2 * HOUR) });
  t.same(
    weird.rows.map((r) => r.samples),
    [2, 2],
    'a group named constructor',
  );

  const list = recorder.query({ model: 'm', devices: ['x1', 'x3', 'x3'], ...range(T0, T0 + HOUR) });
  t.equal(list.grain, 'window');
  t.equal(list.scope, 'devices');
  t.same(
    list.rows.map((r) => [r.version, r.devices, r.samples]),
    [['1', 2, 2]],
    'x1 and x3 (both on version 1), hour 0 only',
  );

  const listByDevice = recorder.query({ model: 'm', devices: ['x1', 'g2'], by: 'device', ...range(T0, T0 + 2 * HOUR) });
  t.same(
    listByDevice.rows.map((r) => [r.device, r.version, r.samples, r.windows]),
    [
      ['g2', '2', 2, 2],
      ['x1', '1', 2, 2],
    ],
  );

  const byDevice = recorder.query({ model: 'm', by: 'device', ...range(T0 + HOUR + 30 * MIN, T0 + HOUR + 40 * MIN) });
  t.equal(byDevice.grain, 'hour');
  t.equal(byDevice.from, new Date(T0 + HOUR).toISOString(), 'rounded out to whole hours');
  t.equal(byDevice.to, new Date(T0 + 2 * HOUR).toISOString());
  t.same(
    byDevice.rows.map((r) => [r.device, r.samples, r.devices]),
    devices.map((d) => [d, 1, 1]),
  );
  const groupByDevice = recorder.query({ model: 'm', by: 'device', group, version: '2', ...range(T0, T0 + 2 * HOUR) });
  t.same(
    groupByDevice.rows.map((r) => [r.device, r.samples]),
    [['g2', 2]],
  );
});

t.test('errors name the problem', async (t) => {
  const file = await tempFile(t);
  const { recorder } = open(t, file);
  const base: MetricsQuery = { model: 'm', ...range(T0, T0 + HOUR) };
  const bad: [Partial<MetricsQuery>, RegExp][] = [
    [{ model: 'a/b' }, /not a model name/],
    [{ source: 'x' as 'app' }, /source must be one of app, probe/],
    [{ since: new Date('nope') }, /since is not a date/],
    [{ until: new Date(Number.NaN) }, /until is not a date/],
    [{ until: new Date(T0) }, /must be before until/],
    [{ devices: ['a'], group: { name: 'g', members: new Set() } }, /not both/],
    [{ devices: [] }, /give 1 to 1000 devices/],
  ];
  for (const [change, message] of bad) {
    t.throws(() => recorder.query({ ...base, ...change }), { code: 'E_USAGE', message });
  }
  await t.rejects(recorder.ingest('a', { ...message(T0, []), windowStart: 'yesterday' }), {
    code: 'E_PAYLOAD_SCHEMA',
  });
  t.throws(
    () => new MetricsRecorder({ file, now: () => new Date(), logger: silent, groupsOf: () => [], retentionDays: 0 }),
    {
      code: 'E_CONFIG',
    },
  );

  const notDb = path.join(path.dirname(file), 'not.db');
  await fs.writeFile(notDb, 'this is not a database, it is text long enough to have a header'.repeat(10));
  t.throws(() => open(t, notDb), { code: 'E_IO', message: /not an SQLite database/ });
  t.throws(() => open(t, path.join(path.dirname(file), 'missing', 'dir', 'm.db')), { code: 'E_IO' });

  const newer = path.join(path.dirname(file), 'newer.db');
  const db = new Database(newer);
  db.exec(
    'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)',
  );
  db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(METRICS_SCHEMA_VERSION + 1, 'future', 'x');
  db.close();
  t.throws(() => open(t, newer), { code: 'E_CONFIG', message: /newer than this ota-coordinator knows/ });

  recorder.close();
  recorder.close();
  await t.rejects(recorder.ingest('a', message(T0, [])), { code: 'E_IO', message: /closed/ });
  t.throws(() => recorder.query(base), { code: 'E_IO' });
  t.throws(() => recorder.stats(), { code: 'E_IO' });
});

t.test('a failed commit rejects its summaries, stores none of them, and the next commit works', async (t) => {
  const file = await tempFile(t);
  const { recorder } = open(t, file);
  const other = new Database(file);
  t.teardown(() => other.close());
  other.exec(
    "CREATE TRIGGER refuse BEFORE INSERT ON windows WHEN NEW.device_id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END",
  );
  const s = series('m', '1', [{ latency: 5 }]);
  const good = recorder.ingest('good', message(T0, [s]));
  const bad = recorder.ingest('bad', message(T0, [s]));
  await t.rejects(good, /refused/, 'the whole transaction fails: the summary beside it too');
  await t.rejects(bad, /refused/);
  t.equal(recorder.stats().rows.windows, 0);
  t.same(recorder.query({ model: 'm', ...range(T0, T0 + MIN) }).rows, [], 'no rollup of a failed commit');
  await recorder.ingest('good', message(T0, [s]));
  t.equal(recorder.query({ model: 'm', ...range(T0, T0 + MIN) }).rows[0]?.samples, 1, 'sent again, stored once');
});

t.test('group commit: summaries queued meanwhile commit together when the interval ends', async (t) => {
  const file = await tempFile(t);
  const pending: (() => void)[] = [];
  const timers: PacedTimers = {
    setTimeout: (fn) => {
      pending.push(fn);
      return fn;
    },
    clearTimeout: (h) => {
      const i = pending.indexOf(h as () => void);
      if (i >= 0) pending.splice(i, 1);
    },
  };
  const { recorder } = open(t, file, { timers, commitEveryMs: 100 });
  const reader = new Database(file, { readonly: true });
  t.teardown(() => reader.close());
  const rows = () => (reader.prepare('SELECT COUNT(*) AS n FROM windows').get() as { n: number }).n;
  const s = series('m', '1', [{ latency: 5 }]);
  await recorder.ingest('first', message(T0, [s]));
  t.equal(rows(), 1, 'a lone summary after a quiet spell commits on the next turn');
  let settled = 0;
  const later = ['a', 'b', 'c'].map((d) => recorder.ingest(d, message(T0, [s])).then(() => settled++));
  await new Promise((r) => setImmediate(r));
  t.equal(settled, 0, 'within the interval: not yet acknowledged');
  t.equal(rows(), 1, 'nor committed');
  t.equal(recorder.stats().pending, 3);
  t.equal(pending.length, 1, 'one commit scheduled');
  pending.shift()?.();
  await Promise.all(later);
  t.equal(rows(), 4, 'all three in one commit');
});

t.test('a restart keeps everything acknowledged: another connection sees it before close', async (t) => {
  const file = await tempFile(t);
  const first = open(t, file).recorder;
  const s = series('m', '1', [{ latency: 7 }, { latency: 9 }]);
  await Promise.all([first.ingest('a', message(T0, [s])), first.ingest('b', message(T0 + MIN, [s], 3))]);
  // Not closed: what a crash leaves is what is committed, and the acknowledgement came after it.
  const second = open(t, file).recorder;
  const r = second.query({ model: 'm', ...range(T0, T0 + HOUR) });
  t.equal(r.rows[0]?.samples, 4);
  t.equal(r.rows[0]?.windows, 4, 'a merged summary counts its windows');
  t.equal(r.rows[0]?.devices, 2);
  t.same(second.stats().rows, { windows: 2, minuteRollups: 2, deviceHours: 2 });
  first.close();
  second.close();
  const third = open(t, file).recorder;
  t.same(third.query({ model: 'm', ...range(T0, T0 + HOUR) }).rows, r.rows, 'the same after close and reopen');
});

t.test('retention: prune deletes old windows and rollups everywhere, and old summaries are not stored', async (t) => {
  const file = await tempFile(t);
  const { recorder, clock } = open(t, file, { retentionDays: 1, groupsOf: () => ['g'] });
  const s = series('m', '1', [{ latency: 3 }]);
  clock.now = T0 + 3 * HOUR;
  const acks: Promise<void>[] = [];
  for (let h = 0; h < 3; h++)
    for (let d = 0; d < 3; d++) acks.push(recorder.ingest(`d${d}`, message(T0 + h * HOUR + 2 * MIN, [s])));
  await Promise.all(acks);
  t.same(recorder.stats().rows, { windows: 9, minuteRollups: 6, deviceHours: 9 });
  // One day later plus 90 minutes: the windows of 00:02 and 01:02 are past; of the device
  // hours, only hour 0 is wholly past.
  const at = new Date(T0 + 24 * HOUR + 90 * MIN);
  const pruned = await recorder.prune(at);
  t.same(pruned, { windows: 6, minuteRollups: 4, deviceHours: 3, cohortSeries: 0 });
  t.same(recorder.stats().rows, { windows: 3, minuteRollups: 2, deviceHours: 6 });
  t.same(recorder.query({ model: 'm', ...range(T0, T0 + 2 * HOUR) }).rows, [], 'nothing left of 00:00-02:00');
  t.equal(recorder.query({ model: 'm', ...range(T0, T0 + 3 * HOUR) }).rows[0]?.samples, 3);
  t.same(recorder.query({ model: 'm', by: 'device', ...range(T0, T0 + HOUR) }).rows, [], 'no device hour of hour 0');
  t.same(await recorder.prune(at), { windows: 0, minuteRollups: 0, deviceHours: 0, cohortSeries: 0 }, 'idempotent');

  clock.now = at.getTime();
  await recorder.ingest('late', message(T0 + 5 * MIN, [s]));
  t.equal(recorder.stats().expired, 1, 'a window older than the retention is counted, not stored');
  t.same(recorder.query({ model: 'm', ...range(T0, T0 + HOUR) }).rows, []);
});

t.test('a shorter raw retention prunes raw windows only; rollups keep answering', async (t) => {
  const file = await tempFile(t);
  const { recorder, clock } = open(t, file, { retentionDays: 3, rawRetentionDays: 1 });
  clock.now = T0 + HOUR;
  await recorder.ingest('a', message(T0, [series('m', '1', [{ latency: 3 }])]));
  const pruned = await recorder.prune(new Date(T0 + 2 * 24 * HOUR));
  t.same(pruned, { windows: 1, minuteRollups: 0, deviceHours: 0, cohortSeries: 0 });
  t.equal(recorder.query({ model: 'm', ...range(T0, T0 + HOUR) }).rows[0]?.samples, 1, 'the fleet view still has it');
  t.same(recorder.query({ model: 'm', devices: ['a'], ...range(T0, T0 + HOUR) }).rows, [], 'the raw window is gone');
  t.throws(
    () =>
      new MetricsRecorder({ file, now: () => new Date(), logger: silent, groupsOf: () => [], rawRetentionDays: 30 }),
    { code: 'E_CONFIG', message: /at most the retention \(14\)/ },
  );
});

t.test('prune works in slices and yields between them', async (t) => {
  const file = await tempFile(t);
  const { recorder, clock } = open(t, file, { retentionDays: 1 });
  clock.now = T0 + 2 * HOUR;
  const s = series('m', '1', [{ latency: 3 }]);
  const acks: Promise<void>[] = [];
  for (let d = 0; d < 12_000; d++) acks.push(recorder.ingest(`d${d}`, message(T0, [s])));
  await Promise.all(acks);
  let turns = 0;
  const ticker = setInterval(() => turns++, 0);
  const pruned = await recorder.prune(new Date(T0 + 26 * HOUR));
  clearInterval(ticker);
  t.same(pruned, { windows: 12_000, minuteRollups: 1, deviceHours: 12_000, cohortSeries: 0 });
  t.ok(turns > 0, 'the event loop ran between slices');
  t.same(recorder.stats().rows, { windows: 0, minuteRollups: 0, deviceHours: 0 });
});

t.test('ids like constructor, and sketches of different levels', async (t) => {
  const { recorder } = open(t, await tempFile(t), { groupsOf: () => ['constructor'] });
  const fine = series('constructor', 'constructor', [{ latency: 100 }, { latency: 200 }]);
  const coarse = { ...series('constructor', 'constructor', [{ latency: 300 }]) };
  coarse.latencyMs = coarsen(coarse.latencyMs, 2);
  await recorder.ingest('constructor', message(T0, [fine]));
  await recorder.ingest('toString', message(T0 + MIN, [coarse]));
  const r = recorder.query({ model: 'constructor', ...range(T0, T0 + HOUR) });
  t.equal(r.rows[0]?.version, 'constructor');
  t.equal(r.rows[0]?.samples, 3);
  t.equal(r.rows[0]?.latencyMs?.relativeAccuracy, relativeAccuracyAt(2), 'merged at the coarser level');
  t.equal(r.rows[0]?.latencyMs?.max, 300);
  t.equal(r.rows[0]?.confidence, null, 'no confidence reported');
  t.same(Object.keys(r.rows[0]?.values ?? {}), []);
  const byDevice = recorder.query({ model: 'constructor', by: 'device', ...range(T0, T0 + HOUR) });
  t.same(
    byDevice.rows.map((row) => row.device),
    ['constructor', 'toString'],
  );
  const g = recorder.query({
    model: 'constructor',
    group: { name: 'constructor', members: new Set(['constructor']) },
    ...range(T0, T0 + HOUR),
  });
  t.same(
    g.rows.map((row) => [row.samples, row.devices]),
    [[3, 1]],
  );
});

t.test('fleet and group queries never read the raw windows', async (t) => {
  const file = await tempFile(t);
  const { recorder } = open(t, file, { groupsOf: () => ['g'] });
  const acks: Promise<void>[] = [];
  for (let d = 0; d < 20; d++)
    acks.push(recorder.ingest(`d${d}`, message(T0 + d * MIN, [series('m', `${d % 2}`, [{ latency: d + 1 }])])));
  await Promise.all(acks);
  const queries: MetricsQuery[] = [
    { model: 'm', ...range(T0, T0 + HOUR) },
    { model: 'm', version: '1', ...range(T0, T0 + HOUR) },
    { model: 'm', group: { name: 'g', members: new Set(['d1', 'd2']) }, ...range(T0, T0 + HOUR) },
    { model: 'm', by: 'device', ...range(T0, T0 + HOUR) },
  ];
  const before = queries.map((q) => recorder.query(q));
  const other = new Database(file);
  t.teardown(() => other.close());
  // The plans: primary-key ranges, and the device count from the device-hour key alone.
  const plan = (sql: string) =>
    (other.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(sql.match(/\?/g) ?? []).map(() => 'x')) as { detail: string }[])
      .map((r) => r.detail)
      .join('; ');
  t.match(
    plan(
      'SELECT DISTINCT version, device_id FROM device_hours WHERE model = ? AND source = ? AND hour >= ? AND hour < ?',
    ),
    /COVERING INDEX sqlite_autoindex_device_hours_1/,
  );
  t.match(
    plan(
      'SELECT version, series FROM minute_rollups WHERE scope = ? AND model = ? AND source = ? AND minute >= ? AND minute < ?',
    ),
    /USING INDEX sqlite_autoindex_minute_rollups_1 \(scope=\? AND model=\? AND source=\? AND minute>\? AND minute<\?\)/,
  );
  t.match(
    plan(
      'SELECT version, series FROM windows WHERE device_id = ? AND model = ? AND source = ? AND window_start >= ? AND window_start < ?',
    ),
    /USING INDEX sqlite_autoindex_windows_1 \(device_id=\? AND model=\? AND source=\? AND window_start>\? AND window_start<\?\)/,
  );
  other.exec('DELETE FROM windows');
  t.same(
    queries.map((q) => recorder.query(q)),
    before,
    'the same answers with the raw table empty',
  );
  t.same(
    recorder.query({ model: 'm', devices: ['d1'], ...range(T0, T0 + HOUR) }).rows,
    [],
    'a device list does read it',
  );
});

t.test('bench:metrics runs (tiny) and prints its table', async (t) => {
  const result = await runMetricsBench({
    devices: 12,
    hours: 2,
    fullHours: 1,
    every: 3,
    groupSize: 4,
    observations: 5,
    queryRuns: 1,
    seed: 3,
  });
  t.equal(result.ingest.full?.summaries, 12 * 60);
  t.equal(result.ingest.sparse?.summaries, 12 * 20);
  t.equal(result.queries.fleetByVersion1h.devices, 12);
  t.equal(result.queries.groupByVersionAll.devices, 4);
  t.equal(result.queries.fleetByDevice1h.rows, 12);
  t.ok(result.storage.bytesPerSummary > 0);
  t.ok(result.prune.deleted.windows > 0);
  t.match(table(result), /bytes stored per summary/);
});

t.test('a rollup stays bounded when devices report far-apart values', async (t) => {
  const { mergeMerged, emptyMerged } = await import('../coordinator/metrics/series.js');
  const { MAX_WIRE_BINS, binCount } = await import('../shared/metrics/sketch.js');
  const sketch = (v: number) => sketchOfValues([v]);
  let merged = emptyMerged();
  // 1e-9 ms and 1e12 ms: ~2,400 bins apart at 1%; a naive merge keeps every bin in between.
  for (const v of [1e-9, 1e12, 3, 5e6])
    merged = mergeMerged(merged, { ...emptyMerged(), count: 1, windows: 1, latencyMs: sketch(v) });
  t.ok(
    binCount(merged.latencyMs) <= MAX_WIRE_BINS,
    `${binCount(merged.latencyMs)} bins at level ${merged.latencyMs.level}`,
  );
  t.equal(merged.latencyMs.count, 4);
  t.equal(merged.latencyMs.max, 1e12);
});

t.test('the metrics database keeps a 4 MiB page cache, like the store (db.ts CACHE_SIZE_PRAGMA)', async (t) => {
  const db = MetricsDb.open(await tempFile(t));
  t.teardown(() => db.close());
  t.equal(db.connection.pragma('cache_size', { simple: true }), CACHE_SIZE_PRAGMA);
  t.equal(CACHE_SIZE_PRAGMA, -4096, 'KiB (negative), not pages');
});
