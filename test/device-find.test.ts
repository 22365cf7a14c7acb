import path from 'node:path';
import t, { type Test } from 'tap';
import { type DeviceFindResult, findDevices, MAX_FIND_LIMIT } from '../coordinator/commands/device-rows.js';
import { ReportRecorder } from '../coordinator/ingest/report-recorder.js';
import { openStore, type SqliteStore } from '../coordinator/store/sqlite-store.js';
import { EMPTY_DEVICE_FILTER as ANY, type DeviceFilter, matchesDeviceFilter } from '../shared/device-filter.js';
import { createLogger } from '../shared/logger.js';
import type { ModelState } from '../shared/messages.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { reportOf } from './helpers/reports.js';

// `device.find`: the devices list's filter and pages, applied by the coordinator to its whole
// fleet (the dashboard once fetched every device and filtered in the page). On a real store and
// the real report recorder, then through a running coordinator's command API.

const AT = '2026-12-07T10:00:00.000Z';

/** A report of model `det` in `state`, running `current` and about `version`. */
function detReport(id: string, state: ModelState, version: string, current: string) {
  const r = reportOf(id, { det: { state, current } }, AT);
  (r.models.det as { version: string | null }).version = version;
  return r;
}

/**
 * 120 devices cam-000..cam-119: odd ones at site hall-a, even ones hall-b; every third online;
 * every tenth failed; the first 60 installing det 2 over 1, the rest running 1.
 */
function fleet(t: Test): { store: SqliteStore; recorder: ReportRecorder } {
  const store = openStore(path.join(t.testdir(), 'coordinator.db'));
  t.teardown(() => store.close());
  const recorder = new ReportRecorder({ store, now: () => new Date(AT), logger: createLogger('silent'), everyMs: 50 });
  for (let i = 0; i < 120; i++) {
    const id = `cam-${String(i).padStart(3, '0')}`;
    store.addDevice({
      id,
      labels: { site: i % 2 ? 'hall-a' : 'hall-b' },
      channel: 'stable',
      tokenHash: 'f'.repeat(64),
      now: AT,
    });
    store.setDevicePresence(id, i % 3 === 0, AT);
    recorder.record(id, detReport(id, i % 10 === 0 ? 'failed' : 'healthy', i < 60 ? '2' : '1', '1'));
  }
  recorder.flush();
  return { store, recorder };
}

t.test('filters the whole fleet by id, label, key=value, state, model and version; pages in id order', async (t) => {
  const { store, recorder } = fleet(t);
  const find = (f: Partial<DeviceFilter>, offset = 0, limit = 50): DeviceFindResult =>
    findDevices(store.eachDeviceSummary(), (id) => recorder.lastModels(id), { ...ANY, ...f }, { offset, limit });
  const all = find({});
  t.equal(all.total, 120);
  t.equal(all.devices.length, 50);
  t.equal(all.devices[0]?.id, 'cam-000');
  t.same(
    find({}, 100).devices.map((d) => d.id),
    Array.from({ length: 20 }, (_, i) => `cam-${100 + i}`),
    'the last page: the 20 after the first 100',
  );
  t.same(find({}, 120).devices, [], 'past the end: no rows');
  t.equal(find({}, 120).total, 120, 'and still the count');
  t.equal(find({ text: 'CAM-00' }).total, 10, 'id search ignores case');
  t.equal(find({ text: 'hall-a' }).total, 60, 'label value');
  t.equal(find({ text: 'site=hall-b' }).total, 60, 'key=value');
  t.equal(find({ text: ' SITE = hall-b ' }).total, 60, 'key=value, spaces and case ignored');
  t.equal(find({ text: 'site=hall' }).total, 0, 'key=value is exact');
  t.equal(find({ text: 'site' }).total, 0, 'a key alone matches nothing (values are searched)');
  t.equal(find({ state: 'failed' }).total, 12);
  t.equal(find({ state: 'online' }).total, 40);
  t.equal(find({ state: 'offline' }).total, 80);
  t.equal(find({ model: 'det', version: '2' }).total, 60, 'installing 2');
  t.equal(find({ version: '1' }).total, 120, 'running 1');
  t.equal(find({ model: 'other' }).total, 0);
  t.equal(find({ text: 'hall-b', state: 'failed', model: 'det' }).total, 12);
  t.equal(find({ text: 'hall-a', state: 'failed', model: 'det' }).total, 0);
  const failed = find({ state: 'failed' }, 0, 5);
  t.same(
    failed.devices.map((d) => d.id),
    ['cam-000', 'cam-010', 'cam-020', 'cam-030', 'cam-040'],
  );
  t.same(
    failed.devices[0]?.models.det,
    { state: 'failed', version: '2', current: '1', error: null },
    'as device.ls rows',
  );
  t.equal(failed.devices[0]?.online, true);
  t.same(failed.devices[0]?.labels, { site: 'hall-b' });
  t.same(
    failed.choices,
    { models: ['det'], versions: ['1', '2'] },
    "the choices are the whole fleet's, not the page's",
  );

  // A report changes what matches at once (the models come from memory, not the written store).
  recorder.record('cam-001', detReport('cam-001', 'rolled_back', '3', '1'));
  t.same(
    find({ state: 'rolled_back' }).devices.map((d) => d.id),
    ['cam-001'],
  );
  t.same(find({}).choices.versions, ['1', '2', '3']);
});

t.test('ids and models named like Object.prototype members, and devices that never reported', async (t) => {
  const store = openStore(path.join(t.testdir(), 'coordinator.db'));
  t.teardown(() => store.close());
  const recorder = new ReportRecorder({ store, now: () => new Date(AT), logger: createLogger('silent'), everyMs: 50 });
  for (const id of ['constructor', 'toString', 'quiet']) {
    store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'f'.repeat(64), now: AT });
    recorder.enrolled(id);
  }
  recorder.record(
    'constructor',
    reportOf('constructor', { constructor: { state: 'healthy' as const, current: '1' } }, AT),
  );
  recorder.record('toString', reportOf('toString', { hasOwnProperty: { state: 'failed' as const, current: '1' } }, AT));
  const find = (f: Partial<DeviceFilter>) =>
    findDevices(store.eachDeviceSummary(), (id) => recorder.lastModels(id), { ...ANY, ...f }, { offset: 0, limit: 50 });
  t.same(
    find({}).devices.map((d) => [d.id, Object.keys(d.models)]),
    [
      ['constructor', ['constructor']],
      ['quiet', []],
      ['toString', ['hasOwnProperty']],
    ],
  );
  t.same(
    find({ model: 'constructor' }).devices.map((d) => d.id),
    ['constructor'],
  );
  t.same(
    find({ model: 'hasOwnProperty', state: 'failed' }).devices.map((d) => d.id),
    ['toString'],
  );
  t.same(find({}).choices.models, ['constructor', 'hasOwnProperty']);
  t.same(
    find({ state: 'offline' }).devices.map((d) => d.id),
    ['constructor', 'quiet', 'toString'],
    'never online: offline',
  );
});

t.test('the matcher alone: a model filter narrows the state and version filters to that model', async (t) => {
  const d = {
    id: 'cam-1',
    labels: { site: 'Hall-A' },
    online: false,
    models: [
      { model: 'det', state: 'healthy', version: '1', current: '1' },
      { model: 'seg', state: 'failed', version: '2', current: '1' },
    ],
  };
  t.ok(matchesDeviceFilter(d, { ...ANY, state: 'failed' }), 'some model failed');
  t.notOk(matchesDeviceFilter(d, { ...ANY, model: 'det', state: 'failed' }), 'but not det');
  t.notOk(matchesDeviceFilter(d, { ...ANY, model: 'det', version: '2' }), 'det is not about 2');
  t.ok(matchesDeviceFilter(d, { ...ANY, model: 'seg', version: '2' }));
  t.ok(matchesDeviceFilter(d, { ...ANY, text: 'hall-a' }), 'label values ignore case');
  t.ok(matchesDeviceFilter(d, { ...ANY, text: 'site=HALL-A' }));
  t.notOk(matchesDeviceFilter(d, { ...ANY, state: 'online' }));
});

t.test('through the command API: filtered pages, and bad arguments named', async (t) => {
  const { admin } = await startInProcessCoordinator(t);
  for (const [id, site] of [
    ['cam-1', 'hall-a'],
    ['cam-2', 'hall-b'],
    ['cam-3', 'hall-a'],
    ['door-1', 'gate'],
  ] as const) {
    await admin.call('device.add', { id, labels: { site } });
  }
  const page = await admin.call<DeviceFindResult>('device.find', { text: 'hall-a', limit: 1 });
  t.equal(page.total, 2);
  t.same(
    page.devices.map((d) => d.id),
    ['cam-1'],
  );
  t.same(page.devices[0]?.models, {}, 'enrolled, never reported: no models');
  const next = await admin.call<DeviceFindResult>('device.find', { text: 'hall-a', offset: 1, limit: 1 });
  t.same(
    next.devices.map((d) => d.id),
    ['cam-3'],
  );
  const offline = await admin.call<DeviceFindResult>('device.find', { state: 'offline' });
  t.equal(offline.total, 4);
  t.equal(offline.devices.length, 4, 'the default page (50) holds them all');
  const none = await admin.call<DeviceFindResult>('device.find', { text: 'nobody' });
  t.same({ total: none.total, devices: none.devices }, { total: 0, devices: [] });
  const past = await admin.call<DeviceFindResult>('device.find', { offset: 10 });
  t.same({ total: past.total, devices: past.devices }, { total: 4, devices: [] }, 'past the end: an empty page');

  await t.rejects(admin.call('device.find', { limit: 0 }), { code: 'E_USAGE', message: /argument limit/ });
  await t.rejects(admin.call('device.find', { limit: MAX_FIND_LIMIT + 1 }), {
    code: 'E_USAGE',
    message: /argument limit/,
  });
  await t.rejects(admin.call('device.find', { offset: -1 }), { code: 'E_USAGE', message: /argument offset/ });
  await t.rejects(admin.call('device.find', { state: 'sleepy' }), { code: 'E_USAGE', message: /argument state/ });
  await t.rejects(admin.call('device.find', { model: '../x' }), { code: 'E_USAGE', message: /argument model/ });
  await t.rejects(admin.call('device.find', { text: 'x'.repeat(201) }), { code: 'E_USAGE', message: /argument text/ });
  await t.rejects(admin.call('device.find', { page: 2 }), { code: 'E_USAGE', message: /page/ });
});
