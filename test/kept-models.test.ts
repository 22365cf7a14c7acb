import path from 'node:path';
import t from 'tap';
import { KeptModel, keepModels, keptModel, reportedModels } from '../coordinator/ingest/kept-models.js';
import { ReportRecorder, seedReports } from '../coordinator/ingest/report-recorder.js';
import { openStore } from '../coordinator/store/sqlite-store.js';
import { StringPool } from '../coordinator/string-pool.js';
import { idRecord } from '../shared/id-record.js';
import { createLogger } from '../shared/logger.js';
import { type Reported, ReportedSchema } from '../shared/messages.js';

// What the coordinator keeps of each device's newest report: the same models, in less memory.

const at = '2026-12-07T09:00:00.000Z';
const model = (over: Partial<Reported['models'][string]> = {}): Reported['models'][string] => ({
  state: 'healthy',
  version: '2.0.0',
  current: '2.0.0',
  previousVersion: '1.0.0',
  rolloutId: 'ro-1',
  progress: null,
  attempt: 0,
  error: null,
  updatedAt: at,
  ...over,
});
const report = (deviceId: string, models: Record<string, Reported['models'][string]>, seq = 1): Reported =>
  ReportedSchema.parse({ deviceId, seq, ts: at, models, rejected: null });

t.test('kept models read back as the report had them, also several and a model named constructor', async (t) => {
  const pool = new StringPool();
  const one = report('cam-1', { det: model() }).models;
  const kept = keepModels(one, pool);
  t.ok(kept instanceof KeptModel, 'one model: kept without an array');
  t.same(reportedModels(kept), one);
  t.equal(Object.getPrototypeOf(reportedModels(kept)), null, 'an id record, as a parsed report has it');

  const several = report('cam-2', {
    det: model(),
    constructor: model({ state: 'failed', error: { code: 'E_PROBE', message: 'probe failed' }, progress: null }),
    seg: model({ state: 'downloading', progress: { bytes: 10, total: 100 }, current: null }),
  }).models;
  const keptSeveral = keepModels(several, pool);
  t.ok(Array.isArray(keptSeveral));
  t.same(reportedModels(keptSeveral), several);
  t.equal(keptModel(keptSeveral, 'constructor')?.state, 'failed');
  t.equal(keptModel(keptSeveral, 'toString'), undefined, 'a name it does not hold: nothing, not a prototype member');
  t.equal(keptModel(kept, 'seg'), undefined);
  t.equal(keptModel(kept, 'det')?.version, '2.0.0');

  const plain = JSON.parse(JSON.stringify(one)) as Reported['models'];
  t.same(reportedModels(keepModels(plain, pool)), one, 'a stored row (plain JSON) is kept alike');
  t.same(reportedModels(keepModels(idRecord(), pool)), {}, 'no models: nothing');

  const handedOut = reportedModels(kept);
  (handedOut.det as { state: string }).state = 'failed';
  t.equal(keptModel(kept, 'det')?.state, 'healthy', 'what is handed out is a copy');
});

t.test('the string pool keeps each string once; at its limit it starts again', async (t) => {
  const pool = new StringPool(4);
  for (let i = 0; i < 3; i++) keepModels(report(`cam-${i}`, { det: model() }).models, pool);
  t.equal(pool.size, 4, 'det, 2.0.0, 1.0.0 and ro-1: four strings, however many devices report them');
  t.equal(pool.intern(null), null);
  t.equal(pool.size, 4);
  t.equal(pool.intern('ro-2'), 'ro-2', 'a new string at the limit');
  t.equal(pool.size, 1, 'the pool started again with it: it never grows past the limit');
});

t.test('ReportRecorder: the newest models, a history row per change, nothing for an unknown device', async (t) => {
  const store = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => store.close());
  store.addDevice({ id: 'cam-1', labels: {}, channel: 'stable', tokenHash: 'h', now: at });
  store.addDevice({ id: 'cam-2', labels: {}, channel: 'stable', tokenHash: 'h', now: at });
  const recorder = new ReportRecorder({
    store,
    now: () => new Date(at),
    logger: createLogger('silent'),
    everyMs: 50,
  });
  const first = report('cam-1', { det: model({ state: 'downloading', current: '1.0.0' }) });
  t.equal(recorder.record('cam-1', first), true);
  t.same(recorder.lastModels('cam-1'), first.models);
  t.equal(recorder.record('cam-1', first), true, 'the same report again');
  const second = report('cam-1', { det: model({ updatedAt: '2026-12-07T09:00:05.000Z' }) }, 2);
  recorder.record('cam-1', second);
  t.same(recorder.lastModels('cam-1'), second.models, 'the newest report');
  recorder.flush();
  t.same(
    store
      .listHistory('cam-1', 10)
      .map((h) => h.state)
      .sort(),
    ['downloading', 'healthy'],
    'one history row per change, not per report',
  );

  // A device whose last report is only in the store (a restart): compared with that one.
  recorder.record('cam-2', second);
  recorder.flush();
  const restarted = new ReportRecorder({ store, now: () => new Date(at), logger: createLogger('silent'), everyMs: 50 });
  t.equal(restarted.lastModels('cam-2'), undefined, 'nothing in memory after a restart');
  restarted.record('cam-2', second);
  restarted.flush();
  t.equal(store.listHistory('cam-2', 10).length, 1, 'the stored report already had it: no second row');

  t.equal(recorder.record('cam-9', first), false, 'a device not enrolled');
  t.equal(recorder.lastModels('cam-9'), undefined);
  recorder.forget('cam-1');
  t.equal(recorder.lastModels('cam-1'), undefined, 'forgotten');
});

t.test(
  'ReportRecorder seeded at start and told of enrolments: first reports compared without reading the store',
  async (t) => {
    const file = path.join(t.testdir(), 'ota.db');
    const real = openStore(file);
    t.teardown(() => real.close());
    for (const id of ['cam-1', 'cam-2', 'constructor']) {
      real.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: at });
    }
    const stored = report('cam-1', { det: model() });
    real.setDeviceReport('cam-1', stored, at);
    // The real store, its device reads counted (the point: a start's flood of retained reports
    // must not read each device's row).
    const reads: string[] = [];
    const store = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'getDevice') {
          return (id: string) => {
            reads.push(id);
            return target.getDevice(id);
          };
        }
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const recorder = new ReportRecorder({
      store,
      now: () => new Date(at),
      logger: createLogger('silent'),
      everyMs: 50,
    });
    const scanned = [...seedReports(real.eachDevice(), recorder)];
    t.same(
      scanned.map((d) => d.id).sort(),
      ['cam-1', 'cam-2', 'constructor'],
      'every stored device passes through to the next reader (the fleet tally)',
    );
    t.same(recorder.lastModels('cam-1'), stored.models, 'the stored models, before any report');
    t.same(recorder.lastModels('cam-2'), {}, 'enrolled, never reported: no models (not unknown)');

    t.equal(recorder.record('cam-1', stored), true);
    const changed = report('constructor', { det: model({ state: 'downloading', current: null }) });
    t.equal(recorder.record('constructor', changed), true);
    t.same(reads, [], 'no device was read from the store');
    recorder.flush();
    t.equal(real.listHistory('cam-1', 10).length, 0, 'the same as the stored report: no history row');
    t.same(
      real.listHistory('constructor', 10).map((h) => h.state),
      ['downloading'],
      'a device that had no report: a row for its model',
    );

    // Enrolled while running: its first report is compared with nothing, without a read.
    real.addDevice({ id: 'cam-3', labels: {}, channel: 'stable', tokenHash: 'h', now: at });
    recorder.enrolled('cam-3');
    t.same(recorder.lastModels('cam-3'), {});
    recorder.record('cam-3', report('cam-3', { det: model() }));
    // Removed and enrolled again with a report waiting: the new device starts from nothing.
    recorder.record('cam-2', report('cam-2', { det: model({ state: 'failed' }) }));
    recorder.enrolled('cam-2');
    t.same(recorder.lastModels('cam-2'), {}, 'nothing of the earlier device with that id');
    t.same(reads, [], 'still no read');
    recorder.flush();
    t.same(
      real.listHistory('cam-3', 10).map((h) => h.state),
      ['healthy'],
    );
    t.equal(real.listHistory('cam-2', 10).length, 0, "the earlier device's waiting report and row were dropped");
    t.equal(real.getDevice('cam-2')?.lastReport, null);

    t.equal(recorder.record('cam-9', stored), false, 'a device neither seeded nor enrolled is looked up: not enrolled');
    t.same(reads, ['cam-9']);
  },
);

t.test(
  "ReportRecorder: a history row for what a report says new, not for a download's progress or the time",
  async (t) => {
    const store = openStore(path.join(t.testdir(), 'ota.db'));
    t.teardown(() => store.close());
    store.addDevice({ id: 'cam-1', labels: {}, channel: 'stable', tokenHash: 'h', now: at });
    const recorder = new ReportRecorder({
      store,
      now: () => new Date(at),
      logger: createLogger('silent'),
      everyMs: 50,
    });
    recorder.enrolled('cam-1');
    let seq = 0;
    const send = (over: Partial<Reported['models'][string]>, second: number) =>
      recorder.record(
        'cam-1',
        report(
          'cam-1',
          { det: model({ updatedAt: `2026-12-07T09:00:${String(second).padStart(2, '0')}.000Z`, ...over }) },
          ++seq,
        ),
      );
    const downloading = { state: 'downloading', current: '1.0.0', attempt: 0 } as const;
    send({ ...downloading, progress: { bytes: 0, total: 1000 } }, 0);
    for (let i = 1; i <= 40; i++) send({ ...downloading, progress: { bytes: i * 25, total: 1000 } }, i % 60);
    send({ ...downloading, progress: { bytes: 1000, total: 1000 } }, 41);
    send({ state: 'verifying', current: '1.0.0' }, 42);
    send({ state: 'verifying', current: '1.0.0' }, 43); // the same again, later: nothing new
    send({ state: 'failed', current: '1.0.0', error: { code: 'E_DIGEST', message: 'sha256 mismatch' } }, 44);
    send({ state: 'failed', current: '1.0.0', error: { code: 'E_DIGEST', message: 'sha256 mismatch' } }, 45);
    send({ state: 'failed', current: '1.0.0', error: { code: 'E_DIGEST', message: 'size mismatch' } }, 46);
    send({ state: 'failed', current: '1.0.0', error: { code: 'E_DIGEST', message: 'size mismatch' }, attempt: 1 }, 47);
    send({ state: 'healthy', current: '1.0.0', rolloutId: null }, 48);
    send({ state: 'healthy', current: '1.0.0', rolloutId: 'ro-2' }, 49);
    send({ state: 'healthy', current: '2.0.0', rolloutId: 'ro-2' }, 50);
    send({ state: 'healthy', current: '2.0.0', rolloutId: 'ro-2', previousVersion: '0.9.0' }, 51);
    send({ state: 'healthy', current: '2.0.0', rolloutId: 'ro-2', previousVersion: '0.9.0', version: '2.0.1' }, 52);
    recorder.flush();
    const rows = store.listHistory('cam-1', 100);
    t.same(
      rows.map((h) => [h.state, h.error?.message ?? null]),
      [
        ['downloading', null],
        ['verifying', null],
        ['failed', 'sha256 mismatch'],
        ['failed', 'size mismatch'],
        ['failed', 'size mismatch'],
        ['healthy', null],
        ['healthy', null],
        ['healthy', null],
        ['healthy', null],
        ['healthy', null],
      ],
      'one row where the download started, none for its 41 progress reports; one for each change of error, attempt, rollout, current, previous and version',
    );
    t.equal(rows[0]?.ts, at, 'stamped when recorded');
    t.same(recorder.lastModels('cam-1')?.det?.version, '2.0.1', 'the newest report is kept whatever it changed');
  },
);
