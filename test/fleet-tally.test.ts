import path from 'node:path';
import t from 'tap';
import { FleetTally, tallyAudit } from '../coordinator/fleet/fleet-tally.js';
import { openStore } from '../coordinator/store/sqlite-store.js';
import { type FleetSummary, FleetSummarySchema, type Reported, ReportedSchema } from '../shared/messages.js';
import { MODEL_STATES } from '../shared/states.js';
import { prng } from './helpers/prng.js';
import { type ModelSpec, reportOf } from './helpers/reports.js';

// The fleet counts behind the retained ota/v1/fleet summary (coordinator/fleet/fleet-tally.ts):
// worked cases, seeding from a real SQLite store, and a seeded random walk of enrolments,
// removals, presence and reports checked after every step against a recount from scratch.

const TS = '2026-12-06T10:00:00.000Z';
const LATER = '2026-12-06T10:00:05.000Z';

/** A report naming exactly `models`. */
function report(deviceId: string, models: Record<string, ModelSpec>): Reported {
  return reportOf(deviceId, models, TS);
}

t.test('counts follow enrolment, presence, reports and removal', async (t) => {
  const tally = new FleetTally();
  t.same(tally.summary(TS), { devices: 0, online: 0, models: [], updatedAt: TS }, 'empty fleet');

  t.equal(tally.enrolled('cam-1'), true);
  tally.enrolled('cam-2');
  tally.enrolled('cam-3');
  t.equal(tally.presence('cam-1', true), true, 'came online');
  t.equal(tally.presence('cam-1', true), false, 'already online: nothing changed');
  tally.presence('cam-2', true);
  t.equal(tally.report('cam-1', report('cam-1', { det: { state: 'healthy', current: '1.0' } })), true);
  tally.report(
    'cam-2',
    report('cam-2', { det: { state: 'downloading', current: '1.0' }, seg: { state: 'idle', current: null } }),
  );
  tally.report('cam-3', report('cam-3', { det: { state: 'healthy', current: '2.0' } }));
  const s = tally.summary(TS);
  t.same(s, {
    devices: 3,
    online: 2,
    models: [
      {
        model: 'det',
        devices: 3,
        running: [
          { version: '1.0', devices: 2 },
          { version: '2.0', devices: 1 },
        ],
        states: [
          { state: 'downloading', devices: 1 },
          { state: 'healthy', devices: 2 },
        ],
      },
      { model: 'seg', devices: 1, running: [{ version: null, devices: 1 }], states: [{ state: 'idle', devices: 1 }] },
    ],
    updatedAt: TS,
  });
  t.ok(FleetSummarySchema.safeParse(s).success, 'valid against the schema');

  // cam-2 finishes det and no longer reports seg: seg is gone from the counts.
  tally.report('cam-2', report('cam-2', { det: { state: 'healthy', current: '2.0' } }));
  t.same(tally.summary(LATER).models, [
    {
      model: 'det',
      devices: 3,
      running: [
        { version: '2.0', devices: 2 },
        { version: '1.0', devices: 1 },
      ],
      states: [{ state: 'healthy', devices: 3 }],
    },
  ]);

  t.equal(tally.presence('cam-1', false), true, 'went offline');
  t.equal(tally.removed('cam-2'), true);
  t.equal(tally.removed('cam-2'), false, 'removed twice: nothing to do');
  t.same(tally.summary(LATER), {
    devices: 2,
    online: 0,
    models: [
      {
        model: 'det',
        devices: 2,
        running: [
          { version: '1.0', devices: 1 },
          { version: '2.0', devices: 1 },
        ],
        states: [{ state: 'healthy', devices: 2 }],
      },
    ],
    updatedAt: LATER,
  });
  tally.removed('cam-1');
  tally.removed('cam-3');
  t.same(tally.summary(LATER).models, [], 'a model nobody reports any more is left out');
});

t.test('a removed online device leaves `online`; enrolling a counted id again starts it from nothing', async (t) => {
  const tally = new FleetTally();
  tally.enrolled('d');
  tally.presence('d', true);
  tally.report('d', report('d', { m: { state: 'healthy', current: '1' } }));
  tally.enrolled('d');
  t.same(tally.summary(TS), { devices: 1, online: 0, models: [], updatedAt: TS });
  tally.presence('d', true);
  tally.removed('d');
  t.same(tally.summary(TS), { devices: 0, online: 0, models: [], updatedAt: TS });
});

t.test('reports and presence of a device not enrolled are ignored', async (t) => {
  const tally = new FleetTally();
  const before = tally.version;
  t.equal(tally.report('ghost', report('ghost', { m: { state: 'healthy', current: '1' } })), false);
  t.equal(tally.presence('ghost', true), false);
  t.equal(tally.removed('ghost'), false);
  t.equal(tally.version, before, 'nothing changed');
  t.same(tally.summary(TS), { devices: 0, online: 0, models: [], updatedAt: TS });
});

t.test('a report that changes no count changes nothing (progress, attempts, times)', async (t) => {
  const tally = new FleetTally();
  tally.enrolled('d');
  tally.report('d', report('d', { m: { state: 'downloading', current: '1' } }));
  const version = tally.version;
  const again = report('d', { m: { state: 'downloading', current: '1' } });
  const m = again.models.m as Reported['models'][string];
  m.progress = { bytes: 50, total: 100 };
  m.version = '2';
  m.attempt = 2;
  m.updatedAt = LATER;
  t.equal(tally.report('d', again), false);
  t.equal(tally.version, version, 'version unchanged: a publisher has nothing to send');
  t.equal(tally.report('d', report('d', { m: { state: 'verifying', current: '1' } })), true, 'a state change counts');
  t.ok(tally.version > version);
});

t.test('updatedAt: the time of the first summary after the last change', async (t) => {
  const tally = new FleetTally();
  tally.enrolled('d');
  t.equal(tally.summary(TS).updatedAt, TS);
  t.equal(tally.summary(LATER).updatedAt, TS, 'nothing changed since: the earlier time stays');
  tally.presence('d', false); // no change
  t.equal(tally.summary(LATER).updatedAt, TS);
  tally.presence('d', true);
  t.equal(tally.summary(LATER).updatedAt, LATER);
});

t.test(
  'ordering: models by name, versions by devices then version (none last), states in MODEL_STATES order',
  async (t) => {
    const tally = new FleetTally();
    const add = (id: string, models: Record<string, ModelSpec>) => {
      tally.enrolled(id);
      tally.report(id, report(id, models));
    };
    add('a', { zeta: { state: 'failed', current: null }, alpha: { state: 'probing', current: '1.10' } });
    add('b', { zeta: { state: 'idle', current: '1.0' }, alpha: { state: 'downloading', current: '1.9' } });
    add('c', { zeta: { state: 'rolled_back', current: '1.0' }, Beta: { state: 'healthy', current: '1' } });
    add('d', { zeta: { state: 'healthy', current: 'b' }, alpha: { state: 'applying', current: '1.9' } });
    add('e', { zeta: { state: 'verifying', current: 'a' } });
    const s = tally.summary(TS);
    t.same(
      s.models.map((m) => m.model),
      ['Beta', 'alpha', 'zeta'],
      'by UTF-16 code units',
    );
    const zeta = s.models[2] as FleetSummary['models'][number];
    t.same(zeta.running, [
      { version: '1.0', devices: 2 },
      { version: 'a', devices: 1 },
      { version: 'b', devices: 1 },
      { version: null, devices: 1 },
    ]);
    t.same(
      zeta.states.map((x) => x.state),
      MODEL_STATES.filter((x) => ['failed', 'idle', 'rolled_back', 'healthy', 'verifying'].includes(x)),
    );
    t.same((s.models[1] as FleetSummary['models'][number]).running, [
      { version: '1.9', devices: 2 },
      { version: '1.10', devices: 1 },
    ]);
  },
);

t.test('a stored report with a state this version does not know is not counted', async (t) => {
  const tally = new FleetTally();
  tally.enrolled('d');
  tally.report('d', report('d', { m: { state: 'healthy', current: '1' }, n: { state: 'idle', current: null } }));
  const odd = report('d', { m: { state: 'healthy', current: '1' }, n: { state: 'idle', current: null } });
  (odd.models.n as { state: string }).state = 'hibernating';
  t.equal(tally.report('d', odd), true, 'n left the counts');
  t.same(
    tally.summary(TS).models.map((m) => m.model),
    ['m'],
  );
});

t.test('enrolment and removal from audit events (subject device:<id>)', async (t) => {
  const tally = new FleetTally();
  t.equal(
    tallyAudit(tally, [
      { action: 'device.enrolled', subject: 'device:a' },
      { action: 'device.enrolled', subject: 'device:constructor' },
      { action: 'release.published', subject: 'device:x' },
      { action: 'device.enrolled', subject: null },
      { action: 'device.enrolled', subject: 'operator:bob' },
    ]),
    true,
  );
  t.equal(tally.summary(TS).devices, 2);
  t.equal(tallyAudit(tally, [{ action: 'device.removed', subject: 'device:a' }]), true);
  t.equal(tallyAudit(tally, [{ action: 'device.removed', subject: 'device:a' }]), false, 'already gone');
  t.equal(tallyAudit(tally, [{ action: 'operator.added', subject: 'operator:a' }]), false);
  t.equal(tally.summary(TS).devices, 1);
});

t.test('seeded from a real store: every device with its stored last report, all offline', async (t) => {
  const store = openStore(path.join(t.testdir(), 'coordinator.db'));
  t.teardown(() => store.close());
  for (const id of ['cam-1', 'cam-2', 'cam-3']) {
    store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'x'.repeat(64), now: TS });
  }
  store.setDevicePresence('cam-1', true, TS);
  // Through the schema and back out of SQLite, as the coordinator stores them.
  store.setDeviceReport(
    'cam-1',
    ReportedSchema.parse(report('cam-1', { constructor: { state: 'healthy' as const, current: '2' } })),
    TS,
  );
  store.setDeviceReport('cam-2', ReportedSchema.parse(report('cam-2', { det: { state: 'failed', current: '1' } })), TS);
  const tally = FleetTally.seeded(store.listDevices());
  t.same(tally.summary(TS), {
    devices: 3,
    online: 0,
    models: [
      {
        model: 'constructor',
        devices: 1,
        running: [{ version: '2', devices: 1 }],
        states: [{ state: 'healthy', devices: 1 }],
      },
      { model: 'det', devices: 1, running: [{ version: '1', devices: 1 }], states: [{ state: 'failed', devices: 1 }] },
    ],
    updatedAt: TS,
  });
  t.equal(tally.presence('cam-1', true), true, 'online only when it connects again');
});

// ---- property: the incremental counts equal a recount from scratch after every step ----

/** The summary computed the obvious way, from what each device is known to have reported. */
function recount(
  devices: Map<string, { online: boolean; models: Record<string, ModelSpec> }>,
): Omit<FleetSummary, 'updatedAt'> {
  const perModel = new Map<string, ModelSpec[]>();
  let online = 0;
  for (const d of devices.values()) {
    if (d.online) online++;
    for (const name of Object.keys(d.models)) {
      const list = perModel.get(name) ?? [];
      list.push(d.models[name] as ModelSpec);
      perModel.set(name, list);
    }
  }
  const models = [...perModel.keys()]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((model) => {
      const list = perModel.get(model) as ModelSpec[];
      const versions = [...new Set(list.map((m) => m.current))];
      const running = versions
        .map((version) => ({ version, devices: list.filter((m) => m.current === version).length }))
        .sort((a, b) => {
          if (a.devices !== b.devices) return b.devices - a.devices;
          if (a.version === null) return 1;
          if (b.version === null) return -1;
          return a.version < b.version ? -1 : a.version > b.version ? 1 : 0;
        });
      const states = MODEL_STATES.map((state) => ({
        state,
        devices: list.filter((m) => m.state === state).length,
      })).filter((x) => x.devices > 0);
      return { model, devices: list.length, running, states };
    });
  return { devices: devices.size, online, models };
}

t.test('random walks: the counts always equal a recount from scratch', async (t) => {
  const SEED = 0x5eed7a11;
  const STEPS = 3000;
  const IDS = ['d1', 'd2', 'd3', 'd4', 'constructor', '__proto__', 'toString', 'hasOwnProperty'];
  const MODELS = ['det', 'seg', 'constructor', '__proto__', 'valueOf', 'toString'];
  const VERSIONS = [null, '1.0', '1.1', '2.0', 'constructor', '__proto__'];
  const r = prng(SEED);
  const tally = new FleetTally();
  const model = new Map<string, { online: boolean; models: Record<string, ModelSpec> }>();
  let failures = 0;
  const counts = { enrol: 0, remove: 0, presence: 0, report: 0, ignored: 0, unchanged: 0 };
  for (let step = 0; step < STEPS && failures < 3; step++) {
    const id = r.pick(IDS);
    const x = r.next();
    const before = tally.version;
    let said: boolean;
    let what: string;
    if (x < 0.1) {
      what = `enrol ${id}`;
      said = tally.enrolled(id);
      model.set(id, { online: false, models: Object.create(null) });
      counts.enrol++;
    } else if (x < 0.14) {
      what = `remove ${id}`;
      said = tally.removed(id);
      if (said !== model.delete(id)) {
        failures++;
        t.fail(`seed ${SEED} step ${step}: ${what} should say whether it was counted`);
      }
      counts.remove++;
    } else if (x < 0.4) {
      const online = r.next() < 0.5;
      what = `presence ${id} ${online}`;
      said = tally.presence(id, online);
      const d = model.get(id);
      if (d) d.online = online;
      counts.presence++;
    } else {
      // 0 to 4 models, some repeating what the device has (no change), some new.
      const models: Record<string, ModelSpec> = Object.create(null);
      const previous = model.get(id)?.models;
      const n = Math.floor(r.next() * 5);
      for (let i = 0; i < n; i++) {
        const name = r.pick(MODELS);
        const keep = previous && Object.hasOwn(previous, name) && r.next() < 0.5;
        models[name] = keep
          ? { ...(previous[name] as ModelSpec) }
          : { state: r.pick(MODEL_STATES), current: r.pick(VERSIONS) };
      }
      what = `report ${id} ${JSON.stringify(Object.entries(models))}`;
      said = tally.report(id, report(id, models));
      const d = model.get(id);
      if (d) d.models = models;
      else counts.ignored++;
      counts.report++;
    }
    if (!said) counts.unchanged++;
    if (said !== (tally.version !== before)) {
      failures++;
      t.fail(`seed ${SEED} step ${step}: ${what}: returned ${said} but the version ${said ? 'stayed' : 'moved'}`);
    }
    const { updatedAt: _, ...got } = tally.summary(TS);
    const want = recount(model);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      failures++;
      t.same(got, want, `seed ${SEED} step ${step}: after ${what}`);
    }
  }
  t.equal(failures, 0, `${STEPS} steps`);
  t.ok(
    counts.enrol > 100 && counts.remove > 100 && counts.presence > 300 && counts.report > 1000,
    JSON.stringify(counts),
  );
  t.ok(counts.ignored > 50 && counts.unchanged > 100, 'ignored and unchanged cases were drawn too');
});
