import t from 'tap';
import type { DeviceFindResult, DeviceListRow } from '../coordinator/commands/device-rows.js';
import type { ChannelView } from '../coordinator/commands/views.js';
import type { FleetService } from '../coordinator/fleet/fleet-service.js';
import type { RolloutDeviceView } from '../coordinator/rollout/types.js';
import type { ChannelRow, ReleaseRow } from '../dashboard/src/fleet-state.js';
import { AUDIT_TAIL, type DeviceRow, FleetState } from '../dashboard/src/fleet-state.js';
import { ago, shortTime, stateLabel, stateSymbol } from '../dashboard/src/format.js';
import type { RolloutDeviceRow } from '../dashboard/src/queries.js';
import {
  allowedActions,
  auditMatches,
  auditSummary,
  type DeviceFindReply,
  describeAction,
  deviceFindArgs,
  devicePage,
  deviceView,
  EMPTY_FILTER,
  filterChoices,
  fleetOverview,
  formatBytes,
  isRolloutEvent,
  liveRolloutDevices,
  PAGE_SIZE,
  pct,
  rolloutDeviceList,
  rolloutPageArgs,
  rolloutTimeline,
  shownRolloutWave,
  sortedRollouts,
  waveSegments,
  waveStateCounts,
} from '../dashboard/src/queries.js';
import { REAL_TIMERS, RenderBatcher } from '../dashboard/src/render-batcher.js';
import { formatRoute, parseRoute, type Route } from '../dashboard/src/router.js';
import {
  checkSignIn,
  clearCredentials,
  type KeyValueStorage,
  loadCredentials,
  saveCredentials,
} from '../dashboard/src/session-store.js';
import type { DeviceShow } from '../dashboard/src/views/device-view.js';
import { type ListedModel, listedDevice } from '../shared/device-row.js';
import type { AuditEvent, FleetSummary, Reported, RolloutSummary } from '../shared/messages.js';
import { ROLLOUT_DEVICE_STATES } from '../shared/states.js';

// The dashboard's pure modules (no DOM): what the page knows and how each view reads it. The
// browser tests (dashboard-e2e) check the same things on screen against real agents; these pin
// the rules, including the odd inputs a fleet sends (duplicates, out-of-order, ids like
// `constructor`, empty retained messages).

// The page's copies of the command results' shapes must accept what the coordinator sends: these
// assignments fail `npm run typecheck` when a result changes shape under the page (a revertedTo
// that became an object once rendered as "[object]" and threw in preact).
export const resultShapes = {
  device: (r: DeviceListRow): DeviceRow => r,
  release: (r: ReturnType<FleetService['listReleases']>[number]): ReleaseRow => r,
  channel: (r: ChannelView): ChannelRow => r,
  rolloutDevice: (r: RolloutDeviceView): RolloutDeviceRow => r,
  deviceShow: (r: ReturnType<FleetService['showDevice']>): DeviceShow => r,
  deviceFind: (r: DeviceFindResult): DeviceFindReply => r,
};

const P = 'ota/v1';
const T0 = '2026-12-06T10:00:00.000Z';
const T1 = '2026-12-06T10:00:05.000Z';

function report(deviceId: string, ts: string, models: Reported['models']): string {
  return JSON.stringify({ deviceId, seq: 1, ts, models, rejected: null });
}

function model(state: string, version: string | null, current: string | null, extra: object = {}) {
  return {
    state,
    version,
    current,
    previousVersion: null,
    rolloutId: null,
    progress: null,
    attempt: 0,
    error: null,
    updatedAt: T0,
    ...extra,
  } as Reported['models'][string];
}

function row(id: string, labels: Record<string, string> = {}, models: DeviceRow['models'] = {}): DeviceRow {
  return { id, labels, channel: 'stable', online: false, lastSeen: null, agentVersion: null, models };
}

/** A `device.find` answer with these rows (the first page of as many, unless told). */
function findReply(devices: DeviceRow[], o: Partial<DeviceFindReply> = {}): DeviceFindReply {
  return { total: devices.length, offset: 0, devices, choices: { models: [], versions: [] }, ...o };
}

function summary(overrides: Partial<RolloutSummary> = {}): RolloutSummary {
  return {
    id: 'ro-1',
    model: 'det',
    version: '2.0.0',
    status: 'running',
    currentWave: 1,
    maxFailureRate: 0.05,
    failures: { count: 0, acknowledged: 0, assigned: 1, rate: 0 },
    waves: [
      {
        wave: 1,
        percent: 10,
        approval: 'auto',
        state: 'running',
        devices: 2,
        counts: { healthy: 1, downloading: 1 },
        reverted: 0,
      },
      { wave: 2, percent: 100, approval: 'manual', state: 'pending', devices: 8, counts: { pending: 8 }, reverted: 0 },
    ],
    haltReason: null,
    abortPolicy: null,
    reverted: 0,
    updatedAt: T0,
    ...overrides,
  };
}

function audit(seq: number, action: string, subject: string | null = null, details: object = {}): AuditEvent {
  return {
    seq,
    ts: T0,
    actor: 'alice',
    action,
    subject,
    details: details as Record<string, unknown>,
    prevHash: '0'.repeat(64),
    hash: '1'.repeat(64),
  };
}

t.test('live messages apply in the order they arrive (MQTT keeps per-topic order), not by timestamp', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['cam-1']); // the devices on screen: only their own topics are followed
  t.equal(
    s.applyMessage(`${P}/devices/cam-1/reported`, report('cam-1', T1, { det: model('healthy', '2', '2') })).kind,
    'reported',
  );
  const v = s.version;
  // A device whose clock stepped back still moves on the page.
  s.applyMessage(`${P}/devices/cam-1/reported`, report('cam-1', T0, { det: model('downloading', '3', '2') }));
  t.ok(s.version > v, 'redrawn');
  t.equal(s.reports.get('cam-1')?.models.det?.state, 'downloading');
  // The will of a device that died carries the time it connected, older than its online status:
  // it must still turn the device offline (it once stayed "online" for good).
  s.applyMessage(`${P}/devices/cam-1/status`, JSON.stringify({ online: true, ts: T1 }));
  t.equal(deviceView(s, 'cam-1')?.online, true);
  s.applyMessage(`${P}/devices/cam-1/status`, JSON.stringify({ online: false, ts: T0 }));
  t.equal(deviceView(s, 'cam-1')?.online, false, 'the will turns it offline');
  // Report timestamps wait for the next render, then become delays.
  t.same(s.unrendered, [Date.parse(T1), Date.parse(T0)]);
  s.rendered(Date.parse(T1) + 120);
  t.same(s.latencies, [120, 5120]);
  t.same(s.unrendered, []);
});

t.test('a reconnect drops what the live topics said: a device gone meanwhile falls back to the snapshot', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['cam-1']); // the devices on screen: only their own topics are followed
  s.setDevices([{ ...row('cam-1'), online: false }]);
  s.applyMessage(`${P}/devices/cam-1/status`, JSON.stringify({ online: true, ts: T0 }));
  s.applyMessage(`${P}/devices/cam-1/reported`, report('cam-1', T0, { det: model('healthy', '2', '2') }));
  s.applyMessage(`${P}/rollouts/ro-1`, JSON.stringify(summary()));
  t.equal(deviceView(s, 'cam-1')?.online, true);
  const v = s.version;
  s.resetLive();
  t.ok(s.version > v);
  t.equal(deviceView(s, 'cam-1')?.online, false, 'as the coordinator stored it');
  t.same(deviceView(s, 'cam-1')?.models, [], 'no report until its retained one arrives again');
  t.equal(s.rollouts.size, 0);
  t.same(s.unrendered, []);
});

t.test('an empty retained message clears what it stood for (device removed)', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['cam-1']); // the devices on screen: only their own topics are followed
  s.setDevices([row('cam-1')]);
  s.applyMessage(`${P}/devices/cam-1/reported`, report('cam-1', T0, {}));
  s.applyMessage(`${P}/devices/cam-1/status`, JSON.stringify({ online: true, ts: T0 }));
  s.applyMessage(`${P}/rollouts/ro-1`, JSON.stringify(summary()));
  s.applyMessage(`${P}/devices/cam-1/status`, '');
  s.applyMessage(`${P}/devices/cam-1/reported`, '');
  s.applyMessage(`${P}/rollouts/ro-1`, '');
  t.equal(deviceView(s, 'cam-1'), null, 'the device is gone');
  t.equal(s.rollouts.size, 0);
  t.equal(s.statuses.size, 0);
});

t.test('unreadable and foreign messages are counted or ignored, never thrown', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['cam-1']); // the devices on screen: only their own topics are followed
  t.equal(s.applyMessage(`${P}/devices/cam-1/reported`, '{not json').kind, 'ignored');
  t.equal(s.applyMessage(`${P}/devices/cam-1/reported`, '42').kind, 'ignored');
  t.equal(s.unreadable, 2);
  t.equal(s.applyMessage('other/v1/audit', '{}').kind, 'ignored');
  t.equal(s.applyMessage(`${P}/devices/cam-1/metrics`, '{}').kind, 'ignored');
  t.equal(s.applyMessage(`${P}/audit`, '').kind, 'ignored');
  t.equal(s.applyMessage(`${P}/cmd/x/y`, '{}').kind, 'ignored');
  t.equal(s.reports.size, 0);
});

t.test('ids that are Object.prototype names are ordinary devices', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['constructor', 'toString', 'hasOwnProperty']); // the devices on screen: only their own topics are followed
  for (const id of ['constructor', 'toString', 'hasOwnProperty']) {
    s.applyMessage(`${P}/devices/${id}/reported`, report(id, T0, { constructor: model('healthy', '1', '1') }));
  }
  const reply = findReply(['constructor', 'hasOwnProperty', 'toString'].map((id) => row(id)));
  s.setDevices(reply.devices);
  t.same(
    devicePage(s, reply).rows.map((d) => [d.id, d.models[0]?.model]),
    [
      ['constructor', 'constructor'],
      ['hasOwnProperty', 'constructor'],
      ['toString', 'constructor'],
    ],
  );
  t.equal(deviceView(s, 'constructor')?.models[0]?.model, 'constructor');
  t.equal(deviceView(s, '__proto__'), null);
});

t.test('the audit tail: merged by seq, no duplicates, bounded, continues from its head', async (t) => {
  const s = new FleetState(P);
  t.equal(s.auditHead, 0);
  s.addAudit([audit(2, 'b'), audit(1, 'a')]);
  const seen = s.applyMessage(`${P}/audit`, JSON.stringify(audit(3, 'c')));
  t.equal(seen.kind, 'audit');
  s.applyMessage(`${P}/audit`, JSON.stringify(audit(3, 'c')));
  t.same(
    s.audit.map((e) => e.seq),
    [1, 2, 3],
  );
  t.equal(s.auditHead, 3);
  s.addAudit([]);
  s.addAudit(Array.from({ length: AUDIT_TAIL + 10 }, (_, i) => audit(i + 10, 'x')));
  t.equal(s.audit.length, AUDIT_TAIL);
  t.equal(s.audit[0]?.seq, 20, 'the oldest fall out of the tail');
  // One event at a time (the live topic): appended, trimmed back to the tail now and then.
  const head = s.auditHead;
  for (let i = 1; i <= AUDIT_TAIL; i++) s.applyMessage(`${P}/audit`, JSON.stringify(audit(head + i, 'live')));
  t.ok(s.audit.length >= AUDIT_TAIL && s.audit.length <= AUDIT_TAIL * 1.5, `${s.audit.length} kept`);
  t.equal(s.auditHead, head + AUDIT_TAIL);
  s.applyMessage(`${P}/audit`, JSON.stringify(audit(head + 5, 'again')));
  t.equal(new Set(s.audit.map((e) => e.seq)).size, s.audit.length, 'an old event again: no duplicate');
  t.same(
    s.audit.map((e) => e.seq),
    [...s.audit.map((e) => e.seq)].sort((a, b) => a - b),
    'still in order',
  );
});

t.test('a rollout timeline: loaded events and the live tail, once each, newest first, bounded', async (t) => {
  const loaded = [audit(1, 'rollout.created', 'rollout:ro-1'), audit(2, 'rollout.wave_started', 'rollout:ro-1')];
  const tail = [
    audit(2, 'rollout.wave_started', 'rollout:ro-1'),
    audit(3, 'device.enrolled', 'device:cam-1'),
    audit(4, 'rollout.halted', 'rollout:ro-1'),
    audit(5, 'rollout.created', 'rollout:ro-2'),
  ];
  const tl = rolloutTimeline(loaded, tail, 'ro-1');
  t.same(
    tl.events.map((e) => e.seq),
    [4, 2, 1],
  );
  t.equal(tl.total, 3);
  const many = Array.from({ length: 300 }, (_, i) => audit(i + 10, 'rollout.device_outcome', 'rollout:ro-1'));
  const big = rolloutTimeline(loaded, many, 'ro-1', 200);
  t.equal(big.events.length, 200);
  t.equal(big.total, 302);
  t.equal(big.events[0]?.seq, 309);
});

t.test('device view: snapshot rows, overridden by live reports and status', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['a', 'b', 'c']); // the devices on screen: only their own topics are followed
  s.setDevices([
    {
      ...row('a', { site: 'hall-a' }, { det: { state: 'healthy', version: '1', current: '1', error: null } }),
      online: true,
    },
    row('b', { site: 'hall-b' }),
  ]);
  t.equal(deviceView(s, 'a')?.models[0]?.current, '1', 'from the snapshot');
  t.equal(deviceView(s, 'a')?.online, true);
  s.applyMessage(
    `${P}/devices/a/reported`,
    report('a', T1, {
      det: model('downloading', '2', '1', { progress: { bytes: 5, total: 10 }, rolloutId: 'ro-1' }),
      alpha: model('idle', null, null),
    }),
  );
  const a = deviceView(s, 'a');
  t.equal(a?.models[0]?.model, 'alpha', 'models sorted by name');
  t.same(a?.models[1]?.progress, { bytes: 5, total: 10 });
  t.equal(a?.lastSeen, T1);
  t.same(a?.labels, { site: 'hall-a' });
  // A device heard from but not in the snapshot (enrolled since) still shows.
  s.applyMessage(`${P}/devices/c/reported`, report('c', T0, {}));
  t.same(deviceView(s, 'c')?.labels, {});
  t.equal(deviceView(s, 'c')?.channel, null);
  t.equal(deviceView(s, 'nope'), null);
});

t.test('fleet overview: active rollouts first; counts only from the summary', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['a', 'b', 'c']); // the devices on screen: only their own topics are followed
  s.setDevices([row('a'), row('b'), row('c')]);
  s.applyMessage(`${P}/devices/a/reported`, report('a', T0, { det: model('healthy', '2', '2') }));
  s.applyMessage(`${P}/devices/b/reported`, report('b', T0, { det: model('rolled_back', '3', '1') }));
  s.applyMessage(`${P}/devices/c/reported`, report('c', T0, { det: model('probing', '2', '1') }));
  s.applyMessage(`${P}/devices/a/status`, JSON.stringify({ online: true, ts: T0 }));
  s.applyMessage(`${P}/rollouts/ro-1`, JSON.stringify(summary()));
  s.applyMessage(`${P}/rollouts/ro-0`, JSON.stringify(summary({ id: 'ro-0', status: 'completed' })));
  const o = fleetOverview(s);
  // Not counted from the three rows the page has: the fleet is the coordinator's to count.
  t.same(
    { devices: o.devices, online: o.online, offline: o.offline, models: o.models },
    { devices: null, online: null, offline: null, models: [] },
    'unknown until the fleet summary arrives',
  );
  t.same(
    o.activeRollouts.map((r) => r.id),
    ['ro-1'],
  );
  s.applyMessage(`${P}/rollouts/ro-2`, JSON.stringify(summary({ id: 'ro-2', status: 'halted', updatedAt: T1 })));
  t.same(
    sortedRollouts(s).map((r) => r.id),
    ['ro-2', 'ro-1', 'ro-0'],
    'active first, newest first',
  );
  // The next summary replaces it, whatever its clock says (the coordinator publishes in order).
  s.applyMessage(`${P}/rollouts/ro-2`, JSON.stringify(summary({ id: 'ro-2', status: 'running', updatedAt: T0 })));
  t.equal(s.rollouts.get('ro-2')?.status, 'running');
});

t.test('releases and channels: snapshots replace what was there, and redraw', async (t) => {
  const s = new FleetState(P);
  const v = s.version;
  const release = {
    id: 'det@2',
    model: 'det',
    version: '2',
    size: 10,
    sha256: 'a'.repeat(64),
    publishedBy: 'alice',
    publishedAt: T0,
    signedBy: ['k1'],
    revoked: false,
    revokedReason: null,
  };
  s.setReleases([release]);
  s.setChannels([{ id: 'det/stable', model: 'det', channel: 'stable', releaseId: 'det@2', updatedAt: T0 }]);
  t.ok(s.version >= v + 2);
  t.same(
    s.releases.map((r) => r.id),
    ['det@2'],
  );
  s.setReleases([]);
  t.same(s.releases, []);
  t.equal(s.channels[0]?.releaseId, 'det@2');
});

t.test('wave bars: segments in a fixed order, shares of the wave, empty states left out', async (t) => {
  const wave = summary().waves[0] as RolloutSummary['waves'][number];
  t.same(waveSegments(wave), [
    { state: 'healthy', count: 1, percent: 50 },
    { state: 'downloading', count: 1, percent: 50 },
  ]);
  t.same(waveSegments({ ...wave, devices: 0, counts: {} }), []);
  t.same(waveSegments({ ...wave, devices: 0, counts: { pending: 0 } }), []);
  t.same(waveSegments({ ...wave, devices: 0, counts: { failed: 1 } }), [{ state: 'failed', count: 1, percent: 0 }]);
});

t.test('rollout devices: live reports about this rollout override the status rows, others do not', async (t) => {
  const s = new FleetState(P);
  s.setWatched(['a', 'b', 'c', 'd']); // the devices on screen: only their own topics are followed
  const rows = [
    { id: 'a', wave: 1, state: 'assigned', online: true, error: null },
    { id: 'b', wave: 1, state: 'assigned', online: true, error: null },
    { id: 'c', wave: 2, state: 'pending', online: false, error: null, revertedTo: null },
    {
      id: 'd',
      wave: 1,
      state: 'failed',
      online: true,
      error: { code: 'E_PROBE', message: 'x' },
      revertedTo: { version: '1' },
    },
  ];
  s.applyMessage(
    `${P}/devices/a/reported`,
    report('a', T0, { det: model('downloading', '2', '1', { rolloutId: 'ro-1', progress: { bytes: 1, total: 4 } }) }),
  );
  s.applyMessage(
    `${P}/devices/b/reported`,
    report('b', T0, { det: model('healthy', '3', '3', { rolloutId: 'ro-other' }) }),
  );
  s.applyMessage(
    `${P}/devices/c/reported`,
    report('c', T0, { det: model('healthy', '2', '2', { rolloutId: 'ro-1' }) }),
  );
  s.applyMessage(`${P}/devices/c/status`, JSON.stringify({ online: true, ts: T0 }));
  const live = liveRolloutDevices(s, { id: 'ro-1', model: 'det' }, rows);
  t.match(live[0], { id: 'a', state: 'downloading', progress: { bytes: 1, total: 4 }, current: '1' });
  t.match(live[1], { id: 'b', state: 'assigned', progress: null }, "another rollout's report does not count");
  t.match(live[2], { id: 'c', state: 'pending', online: true }, 'a device whose wave has not started stays pending');
  t.match(live[3], { id: 'd', state: 'failed', error: { code: 'E_PROBE' }, revertedTo: { version: '1' } });
  s.applyMessage(`${P}/devices/a/reported`, report('a', T1, { det: model('idle', '2', '1', { rolloutId: 'ro-1' }) }));
  t.equal(liveRolloutDevices(s, { id: 'ro-1', model: 'det' }, rows)[0]?.state, 'assigned', 'idle about it: assigned');
  t.ok(ROLLOUT_DEVICE_STATES.includes('assigned'));
});

t.test('actions: offered by status, each described with its numbers', async (t) => {
  t.same(allowedActions(summary({ status: 'waiting_approval' })), [
    'approve',
    'promote',
    'halt',
    'abort-keep',
    'abort-revert',
  ]);
  t.same(allowedActions(summary({ status: 'running' })), ['promote', 'halt', 'abort-keep', 'abort-revert']);
  t.same(allowedActions(summary({ status: 'halted' })), ['resume', 'abort-keep', 'abort-revert']);
  t.same(allowedActions(summary({ status: 'completed' })), []);
  t.same(allowedActions(summary({ status: 'aborted' })), []);
  const s = summary({ status: 'waiting_approval', failures: { count: 1, acknowledged: 0, assigned: 2, rate: 0.5 } });
  t.match(describeAction('approve', s), {
    title: 'Approve wave 2 of ro-1',
    effect: /8 devices of wave 2 are sent det 2\.0\.0/,
  });
  t.match(describeAction('promote', s).effect, /the 8 devices not yet started/);
  t.match(describeAction('halt', s).effect, /The 2 devices already assigned/);
  t.match(describeAction('resume', s).effect, /The 1 failure so far is acknowledged .* 5% tolerance/);
  t.match(describeAction('abort-keep', s).effect, /keep it/);
  t.match(describeAction('abort-revert', s).effect, /all 2 devices whose wave started are sent back/);
  t.match(describeAction('approve', summary({ currentWave: 2 })).effect, /^0 devices of wave 3/);
  t.match(describeAction('resume', summary()).effect, /The 0 failures/);
  t.match(
    describeAction(
      'halt',
      summary({ waves: [{ ...(summary().waves[0] as RolloutSummary['waves'][number]), devices: 1 }] }),
    ).effect,
    /The 1 device already/,
  );
});

t.test('audit: filter, rollout timeline, details summary', async (t) => {
  const e = audit(5, 'rollout.halted', 'rollout:ro-1', {
    wave: 1,
    reason: 'too many failures',
    nested: { a: 1 },
    error: { code: 'E_PROBE' },
  });
  t.ok(auditMatches(e, ''));
  t.ok(auditMatches(e, 'HALTED'));
  t.ok(auditMatches(e, 'alice'));
  t.ok(auditMatches(e, 'ro-1'));
  t.notOk(auditMatches(e, 'bob'));
  t.notOk(auditMatches(audit(6, 'x'), 'ro-1'), 'no subject');
  t.ok(isRolloutEvent(e, 'ro-1'));
  t.ok(isRolloutEvent(audit(7, 'device.outcome', 'cam-1', { rolloutId: 'ro-1' }), 'ro-1'));
  t.notOk(isRolloutEvent(audit(8, 'x', 'rollout:ro-2'), 'ro-1'));
  t.notOk(isRolloutEvent(audit(10, 'x', 'ro-1'), 'ro-1'), 'a bare id is another kind of subject');
  t.notOk(isRolloutEvent(audit(11, 'device.enrolled', 'device:ro-1'), 'ro-1'), 'a device called like the rollout');
  t.equal(auditSummary(e), 'wave 1 · reason too many failures · E_PROBE');
  t.equal(auditSummary(audit(9, 'x')), '');
});

t.test('formatting: states have words and symbols, times and sizes read well', async (t) => {
  t.equal(stateLabel('rolled_back'), 'rolled back');
  t.equal(stateSymbol('healthy'), '✓');
  t.equal(stateSymbol('constructor'), '•', 'an unknown state gets a neutral symbol, not a prototype function');
  const now = Date.parse(T1);
  t.equal(ago(null, now), 'never');
  t.equal(ago(T1, now), '0 s ago');
  t.equal(ago(T0, now), '5 s ago');
  t.equal(ago('2026-12-06T09:50:00.000Z', now), '10 min ago');
  t.equal(ago('2026-12-06T07:00:00.000Z', now), '3 h ago');
  t.equal(ago('2026-12-01T10:00:00.000Z', now), '5 d ago');
  t.equal(ago('garbage', now), 'garbage');
  t.equal(ago('2026-12-07T10:00:00.000Z', now), '0 s ago', 'a clock ahead of the page is not negative');
  t.equal(shortTime(T0), '2026-12-06 10:00:00');
  t.equal(shortTime('2026-12-06T10:00:00Z'), '2026-12-06 10:00:00');
  t.equal(formatBytes(512), '512 B');
  t.equal(formatBytes(1536), '1.5 KB');
  t.equal(formatBytes(20 * 1024 * 1024), '20 MB');
  t.equal(formatBytes(3 * 1024 ** 5), '3072 TB');
  t.equal(pct(0), '0%');
  t.equal(pct(0.05), '5%');
  t.equal(pct(0.025), '2.5%');
  t.equal(pct(1 / 3), '33.3%');
  t.equal(pct(0.25), '25%');
});

t.test('routes round-trip through the URL fragment, ids included', async (t) => {
  const routes: Route[] = [
    { view: 'fleet' },
    { view: 'rollouts' },
    { view: 'rollout', id: 'constructor' },
    { view: 'rollout', id: 'ro-1.2_x' },
    { view: 'devices', text: 'site=hall a', state: 'failed', model: 'det', version: '2.0.0+b1', page: 3 },
    { view: 'devices', text: '', state: '', model: '', version: '', page: 1 },
    { view: 'device', id: 'cam-01' },
    { view: 'releases' },
    { view: 'audit', text: 'rollout.approved' },
    { view: 'audit', text: '' },
  ];
  for (const r of routes) t.same(parseRoute(formatRoute(r)), r, formatRoute(r));
  t.same(parseRoute(''), { view: 'fleet' });
  t.same(parseRoute('#/nowhere'), { view: 'fleet' });
  t.same(parseRoute('#/devices?page=-4'), { view: 'devices', text: '', state: '', model: '', version: '', page: 1 });
  t.same(parseRoute('#/rollouts/%E0%A4%A'), { view: 'rollout', id: '%E0%A4%A' }, 'a bad escape is kept as typed');
});

t.test('credentials: sessionStorage only, damaged entries dropped, sign-in checked', async (t) => {
  const map = new Map<string, string>();
  const storage: KeyValueStorage = {
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => void map.set(k, v),
    removeItem: (k) => void map.delete(k),
  };
  t.equal(loadCredentials(storage), null);
  saveCredentials(storage, { user: 'alice', token: 'tok' });
  t.same(loadCredentials(storage), { user: 'alice', token: 'tok' });
  clearCredentials(storage);
  t.equal(map.size, 0);
  map.set('ota-dashboard-session', '{broken');
  t.equal(loadCredentials(storage), null);
  t.equal(map.size, 0, 'a damaged entry is removed');
  map.set('ota-dashboard-session', JSON.stringify({ user: '', token: 'x' }));
  t.equal(loadCredentials(storage), null);
  t.match(checkSignIn('', 'x'), /operator name/);
  t.match(checkSignIn('bad name', 'x'), /1-64 letters/);
  t.match(checkSignIn('alice', ' '), /token/);
  t.equal(checkSignIn(' alice ', 'tok'), null);
});

t.test('renders are batched: at most one per interval, none while nothing changes', async (t) => {
  let now = 0;
  const timers: { at: number; fn: () => void; id: number }[] = [];
  let nextId = 1;
  const fake = {
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => {
      const id = nextId++;
      timers.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimeout: (h: unknown) => {
      const i = timers.findIndex((x) => x.id === h);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  const advance = (to: number) => {
    now = to;
    for (;;) {
      const due = timers.filter((x) => x.at <= now).sort((a, b) => a.at - b.at)[0];
      if (!due) return;
      timers.splice(timers.indexOf(due), 1);
      due.fn();
    }
  };
  let renders = 0;
  const b = new RenderBatcher(() => renders++, fake, 250);
  b.schedule();
  advance(0);
  t.equal(renders, 1, 'the first change draws at once');
  for (let i = 0; i < 1000; i++) b.schedule();
  advance(100);
  t.equal(renders, 1, 'a thousand changes inside the interval: no draw yet');
  advance(250);
  t.equal(renders, 2, 'one draw for all of them');
  advance(10_000);
  t.equal(renders, 2, 'no change, no draw, no timer');
  t.equal(timers.length, 0);
  b.schedule();
  b.cancel();
  advance(20_000);
  t.equal(renders, 2, 'cancelled');
  b.cancel();
});

t.test(
  'only the devices on screen are followed: others are ignored, and leaving the screen drops their live state',
  async (t) => {
    const s = new FleetState(P);
    s.setDevices([row('a'), row('b')]);
    t.same(s.setWatched(['a', 'b']), { added: ['a', 'b'], removed: [] });
    s.applyMessage(`${P}/devices/a/reported`, report('a', T0, { det: model('healthy', '2', '2') }));
    s.applyMessage(`${P}/devices/a/status`, JSON.stringify({ online: true, ts: T0 }));
    s.applyMessage(`${P}/devices/b/reported`, report('b', T0, { det: model('probing', '2', '1') }));
    t.equal(s.reports.size, 2);
    const v = s.version;
    t.same(s.setWatched(['b', 'c']), { added: ['c'], removed: ['a'] });
    t.ok(s.version > v, 'redrawn');
    t.notOk(s.reports.has('a'), "a's report is dropped: its snapshot row shows it now");
    t.notOk(s.statuses.has('a'));
    t.equal(deviceView(s, 'a')?.online, false, 'from the snapshot again');
    t.ok(s.reports.has('b'), 'still on screen');
    // A report already on its way when `a` was left: ignored, not kept stale.
    const late = s.applyMessage(`${P}/devices/a/reported`, report('a', T1, { det: model('failed', '3', '2') }));
    t.same(late, { kind: 'ignored', why: 'not watched: a' });
    t.notOk(s.reports.has('a'));
    t.same(s.unrendered, [Date.parse(T0), Date.parse(T0)], 'no delay sample for an ignored report');
    // A row that comes on screen gets its device's stored report (RETAIN 1): shown, but not a report
    // arriving now, so no delay sample (it may be minutes old).
    s.setWatched(['b', 'c']);
    t.equal(
      s.applyMessage(`${P}/devices/c/reported`, report('c', T0, { det: model('idle', null, null) }), true).kind,
      'reported',
    );
    t.equal(s.reports.get('c')?.models.det?.state, 'idle');
    t.same(s.unrendered, [Date.parse(T0), Date.parse(T0)], 'the retained copy is no delay sample');
    const w = s.version;
    t.same(s.setWatched(['c', 'b']), { added: [], removed: [] }, 'the same set again: nothing to do');
    t.equal(s.version, w, 'and nothing to draw');
    // A reconnect keeps what is watched (the connection subscribes to it again).
    s.resetLive();
    t.same([...s.watched].sort(), ['b', 'c']);
  },
);

function fleetSummary(overrides: Partial<FleetSummary> = {}): FleetSummary {
  return {
    devices: 5,
    online: 3,
    models: [
      {
        model: 'det',
        devices: 4,
        running: [
          { version: '2', devices: 2 },
          { version: null, devices: 1 },
          { version: '1', devices: 1 },
        ],
        states: [
          { state: 'downloading', devices: 1 },
          { state: 'healthy', devices: 1 },
          { state: 'rolled_back', devices: 1 },
          { state: 'failed', devices: 1 },
        ],
      },
    ],
    updatedAt: T0,
    ...overrides,
  };
}

t.test("the fleet overview comes from the coordinator's summary once it arrives", async (t) => {
  const s = new FleetState(P);
  s.setDevices([row('a', {}, { det: { state: 'healthy', version: '9', current: '9', error: null } })]);
  t.equal(fleetOverview(s).devices, null, 'before the summary: unknown, not the 1 device the page has');
  t.same(fleetOverview(s).models, []);
  t.equal(s.applyMessage(`${P}/fleet`, JSON.stringify(fleetSummary())).kind, 'fleet');
  s.applyMessage(`${P}/rollouts/ro-1`, JSON.stringify(summary()));
  const o = fleetOverview(s);
  t.same(
    { devices: o.devices, online: o.online, offline: o.offline },
    { devices: 5, online: 3, offline: 2 },
    'counted by the coordinator, not from the 1 device the page has',
  );
  t.same(o.models, [
    {
      model: 'det',
      versions: [
        { version: '2', devices: 2 },
        { version: 'none', devices: 1 },
        { version: '1', devices: 1 },
      ],
      failing: 2,
      updating: 1,
    },
  ]);
  t.equal(o.activeRollouts.length, 1, 'rollouts still from their own summaries');
  t.equal(
    fleetOverview({ ...s, fleet: fleetSummary({ devices: 1, online: 2 }) } as FleetState).offline,
    0,
    'never negative',
  );
  s.applyMessage(`${P}/fleet`, '');
  t.equal(s.fleet, null, 'an empty retained message clears it');
  s.applyMessage(`${P}/fleet`, JSON.stringify(fleetSummary()));
  s.resetLive();
  t.equal(s.fleet, null, 'a reconnect waits for the retained one again');
});

t.test("devices list: the coordinator's page; the rows on screen are live", async (t) => {
  const s = new FleetState(P);
  const reply = findReply(
    [
      row('a', {}, { det: { state: 'downloading', version: '2', current: '1', error: null } }),
      row('b', {}, { det: { state: 'downloading', version: '2', current: '1', error: null } }),
    ],
    { total: 52, offset: 50 },
  );
  s.setDevices(reply.devices);
  s.setWatched(['a', 'b']);
  s.applyMessage(`${P}/devices/a/reported`, report('a', T0, { det: model('healthy', '2', '2') }));
  const page = devicePage(s, reply);
  t.same(
    page.rows.map((d) => d.id),
    ['a', 'b'],
    "a stays on the page (and followed) until the coordinator's next answer, not in and out with each report",
  );
  t.equal(page.rows[0]?.models[0]?.state, 'healthy', 'and shows what it reported');
  t.equal(page.rows[1]?.models[0]?.state, 'downloading', 'b as the reply had it');
  t.same({ total: page.total, page: page.page, pages: page.pages }, { total: 52, page: 2, pages: 2 });
  // A row the coordinator sent that the page then saw removed (an empty retained report): gone.
  s.applyMessage(`${P}/devices/b/reported`, '');
  t.same(
    devicePage(s, reply).rows.map((d) => d.id),
    ['a'],
  );
});

t.test('a device opened by its address: its row from device.show, kept beside the list page', async (t) => {
  const s = new FleetState(P);
  s.setDevices([row('a')]);
  t.equal(deviceView(s, 'quiet'), null, 'on no page the list fetched, and never reported');
  const v = s.version;
  // As views/device-view.ts does with device.show's reply (a device enrolled, never connected).
  s.putDevice(listedDevice({ ...row('quiet', { site: 'lab' }), online: false }, null));
  t.ok(s.version > v, 'redrawn');
  t.same(deviceView(s, 'quiet')?.labels, { site: 'lab' });
  t.same(deviceView(s, 'quiet')?.models, []);
  t.ok(deviceView(s, 'a'), "the list page's row is still there");
  // An own property named `constructor` (as a parsed report has it).
  const reported = Object.fromEntries([
    [
      'constructor',
      { state: 'failed', version: '2', current: '1', error: { code: 'E_PROBE_FAILED', message: 'x' }, progress: null },
    ],
  ]) as Record<string, ListedModel & { progress: null }>;
  s.putDevice(listedDevice(row('quiet'), reported));
  t.same(
    deviceView(s, 'quiet')?.models.map((m) => [m.model, m.state, m.version, m.current, m.error?.code]),
    [['constructor', 'failed', '2', '1', 'E_PROBE_FAILED']],
    'its last report, a model named constructor included; the row keeps no progress',
  );
});

t.test("devices list: device.find's arguments and the filter's choices", async (t) => {
  t.same(deviceFindArgs(EMPTY_FILTER, 1), { offset: 0, limit: PAGE_SIZE }, 'an empty filter sends only the page');
  t.same(deviceFindArgs({ text: '  site=hall-a ', state: 'failed', model: 'det', version: '2.0.0' }, 3), {
    offset: 2 * PAGE_SIZE,
    limit: PAGE_SIZE,
    text: 'site=hall-a',
    state: 'failed',
    model: 'det',
    version: '2.0.0',
  });
  t.equal(deviceFindArgs(EMPTY_FILTER, Number.NaN).offset, 0, 'a page that is not a number is the first');
  t.equal(deviceFindArgs(EMPTY_FILTER, -4).offset, 0);
  t.same(filterChoices(null).models, [], 'before the first answer: no models to offer');
  const choices = filterChoices(findReply([], { choices: { models: ['det'], versions: ['1', '2'] } }));
  t.same(choices.models, ['det']);
  t.same(choices.versions, ['1', '2']);
  t.ok(choices.states.includes('rolled_back') && choices.states.includes('online'));
});

t.test("a rollout's device list: the coordinator's page, counted by the summary, live on screen", async (t) => {
  const s = new FleetState(P);
  const row = (i: number): RolloutDeviceRow => ({
    id: `d${String(i).padStart(3, '0')}`,
    wave: 2,
    state: 'downloading',
    online: true,
    error: null,
  });
  const sum = summary({
    currentWave: 2,
    waves: [
      { wave: 1, percent: 10, approval: 'auto', state: 'completed', devices: 10, counts: { healthy: 10 }, reverted: 0 },
      {
        wave: 2,
        percent: 100,
        approval: 'manual',
        state: 'running',
        devices: 110,
        counts: { healthy: 3, downloading: 60, assigned: 47 },
        reverted: 0,
      },
    ],
  });
  // What the view asks for: the wave, the filter and the page go to the coordinator.
  t.same(rolloutPageArgs(sum.id, shownRolloutWave(sum, null), '', 1), {
    id: sum.id,
    wave: 2,
    offset: 0,
    limit: PAGE_SIZE,
  });
  t.same(rolloutPageArgs(sum.id, 2, 'downloading', 2), {
    id: sum.id,
    wave: 2,
    state: 'downloading',
    offset: PAGE_SIZE,
    limit: PAGE_SIZE,
  });
  t.same(rolloutPageArgs(sum.id, 0, '', Number.NaN), { id: sum.id, offset: 0, limit: PAGE_SIZE }, 'wave 0: every wave');

  const firstPage = { rows: Array.from({ length: PAGE_SIZE }, (_, i) => row(10 + i)), total: 110 };
  const list = rolloutDeviceList(s, sum, firstPage, { wave: null, page: 1 });
  t.equal(list.wave, 2, 'the current wave by default');
  t.equal(list.inWave, 110, "the summary's device count");
  t.same(
    [...list.counts],
    [
      ['healthy', 3],
      ['downloading', 60],
      ['assigned', 47],
    ],
    "the summary's counts, in bar order",
  );
  t.equal(list.pages, 3, "pages from the coordinator's total");
  t.equal(list.onScreen.length, PAGE_SIZE);
  t.equal(list.onScreen[0]?.id, 'd010');

  const lastPage = { rows: [11, 13, 15, 17, 19].map(row), total: 55 };
  const filtered = rolloutDeviceList(s, sum, lastPage, { wave: 2, page: 9 });
  t.equal(filtered.matching, 55, "the coordinator's total for the filter");
  t.equal(filtered.page, 2, 'a page past the end shows the last');
  t.equal(filtered.onScreen.length, 5);
  // A device on screen reports healthy: shown so, and still on the "downloading" page until the page is fetched again.
  s.setWatched(['d011']);
  s.applyMessage(
    `${P}/devices/d011/reported`,
    report('d011', T0, { det: model('healthy', '2', '2', { rolloutId: sum.id }) }),
  );
  const again = rolloutDeviceList(s, sum, lastPage, { wave: 2, page: 2 });
  t.match(again.onScreen[0], { id: 'd011', state: 'healthy' });
  t.equal(again.matching, 55);

  const all = rolloutDeviceList(s, sum, { rows: [], total: 120 }, { wave: 0, page: Number.NaN });
  t.equal(all.inWave, 120, 'wave 0: every wave');
  t.same(
    [...all.counts],
    [
      ['healthy', 13],
      ['downloading', 60],
      ['assigned', 47],
    ],
    "every wave's counts summed, in bar order",
  );
  t.equal(all.page, 1);
  t.equal(all.pages, 3);
  const none = rolloutDeviceList(s, sum, { rows: [], total: 0 }, { wave: 7, page: 1 });
  t.equal(none.inWave, 0, 'a wave the summary does not have: no devices');
  t.same([...none.counts], []);
  t.equal(none.pages, 1);
  t.equal(waveStateCounts(sum, 7), null);
  t.same([...(waveStateCounts(sum, 1) ?? [])], [['healthy', 10]]);
});

t.test("the page's real timers: a scheduled render runs, a cancelled one never does", async (t) => {
  let renders = 0;
  const cancelled = new RenderBatcher(() => renders++, REAL_TIMERS, 0);
  cancelled.schedule();
  cancelled.cancel();
  await new Promise<void>((resolve) => {
    const b = new RenderBatcher(resolve, REAL_TIMERS, 0);
    b.schedule();
  });
  // Both were due at the same time and timers of equal delay fire in order: the second ran, so
  // the first would have run before it.
  t.equal(renders, 0, 'the cancelled render did not run');
  t.ok(REAL_TIMERS.now() > 0);
});
