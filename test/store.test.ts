import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import type { Rollout, RolloutDevice } from '../coordinator/rollout/types.js';
import { LATEST_SCHEMA_VERSION, MIGRATIONS, migrate } from '../coordinator/store/migrations.js';
import type { HistoryRecord, ReleaseRecord } from '../coordinator/store/records.js';
import { openStore, type SqliteStore } from '../coordinator/store/sqlite-store.js';
import { WRITE_BEHIND } from '../coordinator/store/store.js';
import type { Envelope } from '../shared/envelope.js';
import type { DeviceFacts, Reported } from '../shared/messages.js';
import { rolloutRecord } from './helpers/rollout-record.js';

const NOW = '2026-03-01T10:00:00.000Z';
const LATER = '2026-03-01T11:00:00.000Z';

function fresh(t: Test, name = 'ota.db'): { store: SqliteStore; file: string } {
  const file = path.join(t.testdir(), name);
  const store = openStore(file);
  t.teardown(() => store.close());
  return { store, file };
}

function envelope(text = '{"model":"detector"}'): Envelope {
  return { manifest: text, signatures: [{ keyId: 'a'.repeat(16), sig: 'c2ln' }] } as Envelope;
}

function release(model: string, version: string, counter = 1): ReleaseRecord {
  return {
    id: `${model}@${version}`,
    model,
    version,
    counter,
    sha256: 'f'.repeat(64),
    size: 1234,
    envelope: envelope(`{"model":"${model}","version":"${version}"}`),
    publishedBy: 'admin',
    publishedAt: NOW,
  };
}

function addDevice(store: SqliteStore, id: string, labels: Record<string, string> = {}) {
  return store.addDevice({ id, labels, channel: 'stable', tokenHash: `hash-of-${id}`, now: NOW });
}

function rollout(id: string, overrides: Partial<Rollout> = {}): Rollout {
  return rolloutRecord({
    id,
    model: 'detector',
    version: '2.0.0',
    releaseId: 'detector@2.0.0',
    strategy: {
      waves: [
        { percent: 10, approval: 'auto' },
        { percent: 100, approval: 'manual' },
      ],
      maxFailureRate: 0.05,
    },
    createdAt: NOW,
    updatedAt: NOW,
    ...overrides,
  });
}

function member(deviceId: string, wave = 0, overrides: Partial<RolloutDevice> = {}): RolloutDevice {
  return {
    deviceId,
    wave,
    state: 'pending',
    online: false,
    previousReleaseId: 'detector@1.0.0',
    revertedTo: null,
    assignedAt: null,
    finishedAt: null,
    error: null,
    ...overrides,
  };
}

/** A store with devices cam-01..cam-0n and releases detector@1.0.0, detector@2.0.0, other@1.0.0. */
function seeded(t: Test, devices = 3): { store: SqliteStore; file: string } {
  const s = fresh(t);
  for (let i = 1; i <= devices; i++) addDevice(s.store, `cam-0${i}`);
  s.store.addRelease(release('detector', '1.0.0', 1));
  s.store.addRelease(release('detector', '2.0.0', 2));
  s.store.addRelease(release('other', '1.0.0', 1));
  return s;
}

const facts: DeviceFacts = {
  arch: 'arm64',
  cpuCores: 4,
  memoryMB: 4096,
  freeDiskMB: 20_000,
  os: 'Debian 12',
  kernel: '6.1.0',
  accelerators: ['npu'],
};

const report: Reported = {
  deviceId: 'cam-01',
  seq: 3,
  ts: NOW,
  models: {
    detector: {
      state: 'failed',
      version: '2.0.0',
      current: '1.0.0',
      previousVersion: null,
      rolloutId: 'r1',
      progress: { bytes: 10, total: 20 },
      attempt: 1,
      error: { code: 'E_PROBE_FAILED', message: 'outputs differ' },
      updatedAt: NOW,
    },
  },
  rejected: null,
};

// ---- opening, pragmas, migrations ----

t.test('opens in WAL mode with synchronous=FULL, foreign keys and a busy timeout', async (t) => {
  const { store, file } = fresh(t);
  t.strictSame(store.settings(), {
    journalMode: 'wal',
    synchronous: 2, // FULL
    foreignKeys: true,
    busyTimeoutMs: 5000,
    cacheSize: -4096, // KiB: 4 MiB, not better-sqlite3's 16 (db.ts)
    schemaVersion: LATEST_SCHEMA_VERSION,
  });
  // journal_mode is a property of the file: another connection sees it too.
  const raw = new Database(file, { readonly: true });
  t.teardown(() => raw.close());
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
});

t.test('a write-behind transaction commits without its own fsync (synchronous=NORMAL), then FULL again', async (t) => {
  const { store, file } = fresh(t);
  const during: number[] = [];
  store.transaction(() => {
    during.push(store.settings().synchronous);
    store.addDevice({ id: 'wb-1', labels: {}, channel: 'stable', tokenHash: 'h', now: NOW });
  }, WRITE_BEHIND);
  t.same(during, [1], 'NORMAL inside (1)');
  t.equal(store.settings().synchronous, 2, 'FULL again after the commit');
  // Committed like any other: another connection reads it.
  const raw = new Database(file, { readonly: true });
  t.teardown(() => raw.close());
  t.equal((raw.prepare('SELECT count(*) AS n FROM devices WHERE id = ?').get('wb-1') as { n: number }).n, 1);

  // A failing one rolls back and restores FULL too.
  t.throws(() =>
    store.transaction(() => {
      store.addDevice({ id: 'wb-2', labels: {}, channel: 'stable', tokenHash: 'h', now: NOW });
      throw new Error('boom');
    }, WRITE_BEHIND),
  );
  t.equal(store.getDevice('wb-2'), null, 'rolled back');
  t.equal(store.settings().synchronous, 2, 'FULL after a rollback');

  // Inside a durable transaction the outer one decides: no relaxing halfway through it.
  const nested: number[] = [];
  store.transaction(() => store.transaction(() => nested.push(store.settings().synchronous), WRITE_BEHIND));
  t.same(nested, [2], 'a nested write-behind transaction stays FULL');
  t.same(
    (() => {
      const seen: number[] = [];
      store.transaction(() => seen.push(store.settings().synchronous));
      return seen;
    })(),
    [2],
    'an ordinary transaction is FULL',
  );
});

t.test('migrations run once, in order, and are idempotent on reopen', async (t) => {
  const file = path.join(t.testdir(), 'ota.db');
  const first = openStore(file);
  addDevice(first, 'cam-01');
  first.close();

  const second = openStore(file);
  t.teardown(() => second.close());
  t.ok(second.getDevice('cam-01'), 'data survives reopening');
  t.equal(second.settings().schemaVersion, LATEST_SCHEMA_VERSION);

  const raw = new Database(file);
  t.teardown(() => raw.close());
  const rows = raw.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[];
  t.strictSame(
    rows.map((r) => r.version),
    MIGRATIONS.map((m) => m.version),
    'each migration recorded once',
  );
  t.strictSame(migrate(raw), [], 'nothing left to apply');
  t.strictSame(
    migrate(raw, {
      migrations: [...MIGRATIONS, { version: LATEST_SCHEMA_VERSION + 1, description: 'x', sql: 'CREATE TABLE x (a)' }],
    }),
    [LATEST_SCHEMA_VERSION + 1],
    'only the new migration runs',
  );
});

t.test('a failing migration leaves the database at its previous version', async (t) => {
  const file = path.join(t.testdir(), 'ota.db');
  openStore(file).close();
  const raw = new Database(file);
  t.teardown(() => raw.close());
  const broken = [
    ...MIGRATIONS,
    { version: LATEST_SCHEMA_VERSION + 1, description: 'half', sql: 'CREATE TABLE half (a); SELECT * FROM nope;' },
  ];
  t.throws(() => migrate(raw, { migrations: broken }), /no such table: nope/);
  t.strictSame(raw.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'half'").get(), { n: 0 });
  t.strictSame(raw.prepare('SELECT MAX(version) AS v FROM schema_migrations').get(), { v: LATEST_SCHEMA_VERSION });
});

t.test('refuses a database written by a newer version', async (t) => {
  const file = path.join(t.testdir(), 'ota.db');
  openStore(file).close();
  const raw = new Database(file);
  raw
    .prepare('INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)')
    .run(999, 'from the future', NOW);
  raw.close();
  const newer = new RegExp(`schema version 999, newer than this ota-coordinator knows \\(${LATEST_SCHEMA_VERSION}\\)`);
  t.throws(() => openStore(file), { code: 'E_CONFIG', message: newer });
  t.throws(() => openStore(file, { readonly: true }), { code: 'E_CONFIG', message: newer });
});

t.test('read-only opens', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'ota.db');
  t.throws(() => openStore(file, { readonly: true }), { code: 'E_IO' }, 'a missing file is not created');

  const writer = openStore(file);
  addDevice(writer, 'cam-01');
  const reader = openStore(file, { readonly: true });
  t.teardown(() => {
    reader.close();
    writer.close();
  });
  t.equal(reader.getDevice('cam-01')?.id, 'cam-01');
  t.throws(() => addDevice(reader, 'cam-02'), { code: 'E_IO', message: /read-only/ });
  t.equal(
    reader.transaction(() => reader.listDevices().length),
    1,
    'read transactions work',
  );

  const empty = path.join(dir, 'empty.db');
  new Database(empty).close();
  t.throws(() => openStore(empty, { readonly: true }), { code: 'E_CONFIG', message: /older than this code needs/ });

  const junk = path.join(dir, 'junk.db');
  writeFileSync(junk, 'this is not a database, just text that is long enough to look like a header'.repeat(10));
  t.throws(() => openStore(junk), { code: 'E_IO', message: /not an SQLite database/ });
  t.throws(() => openStore(path.join(dir, 'no', 'such', 'dir', 'ota.db')), { code: 'E_IO' });
});

t.test('read-only open of a WAL database whose writer has closed', async (t) => {
  const file = path.join(t.testdir(), 'ota.db');
  const writer = openStore(file);
  addDevice(writer, 'cam-01');
  writer.close(); // the last connection: SQLite checkpoints and removes -wal and -shm
  const reader = openStore(file, { readonly: true });
  t.teardown(() => reader.close());
  t.equal(reader.getDevice('cam-01')?.id, 'cam-01');
  t.equal(reader.verifyAudit().ok, true);
  t.throws(() => addDevice(reader, 'cam-02'), { code: 'E_IO', message: /read-only/ });
  t.throws(() => reader.appendAudit([{ actor: 'a', action: 'b', subject: null, details: {} }], NOW), {
    code: 'E_IO',
  });
  t.equal(reader.auditCount(), 0);
});

// ---- devices ----

t.test('devices: add, get, list, presence, report, remove', async (t) => {
  const { store } = fresh(t);
  const added = addDevice(store, 'cam-02', { site: 'north', 'rack.row': '3' });
  t.strictSame(added, {
    id: 'cam-02',
    labels: { site: 'north', 'rack.row': '3' },
    channel: 'stable',
    facts: null,
    agentVersion: null,
    online: false,
    lastSeen: null,
    desiredSeq: 0,
    lastReport: null,
    createdAt: NOW,
  });
  addDevice(store, 'cam-01');
  t.strictSame(
    store.listDevices().map((d) => d.id),
    ['cam-01', 'cam-02'],
    'listed by id',
  );
  t.equal(store.deviceTokenHash('cam-02'), 'hash-of-cam-02');
  t.equal(store.deviceTokenHash('nope'), null);
  t.equal(store.getDevice('nope'), null);

  t.throws(() => addDevice(store, 'cam-02'), { code: 'E_CONFLICT', message: 'device cam-02 already exists' });

  store.setDevicePresence('cam-02', true, LATER, { facts, agentVersion: '0.1.0' });
  let d = store.getDevice('cam-02');
  t.equal(d?.online, true, 'online is a boolean');
  t.equal(d?.lastSeen, LATER);
  t.strictSame(d?.facts, facts, 'facts round trip');
  t.equal(d?.agentVersion, '0.1.0');

  store.setDevicePresence('cam-02', false, NOW);
  d = store.getDevice('cam-02');
  t.equal(d?.online, false);
  t.strictSame(d?.facts, facts, 'facts kept when presence comes without them');

  store.setDeviceReport('cam-02', report, LATER);
  t.strictSame(store.getDevice('cam-02')?.lastReport, report, 'last report round trips whole');
  store.setDeviceReport('cam-02', null, LATER);
  t.equal(store.getDevice('cam-02')?.lastReport, null);

  t.throws(() => store.setDevicePresence('ghost', true, NOW), {
    code: 'E_NOT_FOUND',
    message: 'device ghost not found',
  });
  t.throws(() => store.setDeviceReport('ghost', report, NOW), {
    code: 'E_NOT_FOUND',
    message: 'device ghost not found',
  });

  t.equal(store.removeDevice('cam-02'), true);
  t.equal(store.removeDevice('cam-02'), false, 'second removal finds nothing');
  t.equal(store.getDevice('cam-02'), null);
  t.equal(store.deviceTokenHash('cam-02'), null);
});

t.test('devices, fleet-wide: ids, one row at a time, labels, count, presence; the same as listDevices', async (t) => {
  const { store } = fresh(t);
  t.same([...store.eachDevice()], [], 'an empty fleet');
  t.equal(store.deviceCount(), 0);
  t.notOk(store.devicesOnline(['constructor']).has('constructor'), 'not enrolled (an id that is an Object property)');
  for (const id of ['cam-b', 'cam-a', 'constructor']) {
    store.addDevice({
      id,
      labels: { site: id === 'cam-a' ? 'north' : 'south' },
      channel: 'stable',
      tokenHash: 'h',
      now: NOW,
    });
  }
  store.setDevicePresence('cam-b', true, LATER);
  store.setDeviceReport('cam-a', { ...report, deviceId: 'cam-a' }, LATER);
  t.same(store.deviceIds(), ['cam-a', 'cam-b', 'constructor'], 'in id order');
  t.same([...store.eachDevice()], store.listDevices(), 'every record, as listDevices has it');
  t.strictSame(
    store.listDeviceSummaries(),
    store.listDevices().map(({ id, labels, channel, online, lastSeen, agentVersion }) => ({
      id,
      labels,
      channel,
      online,
      lastSeen,
      agentVersion,
    })),
    'the summaries: the same devices in the same order, without report, facts or token',
  );
  t.equal(store.listDeviceSummaries()[1]?.online, true, 'presence read back as a boolean');
  const ids = (page: { after?: string; limit?: number }) => store.listDeviceSummaries(page).map((d) => d.id);
  t.same(ids({ limit: 2 }), ['cam-a', 'cam-b'], 'a page: the first ones by id');
  t.same(ids({ after: 'cam-b', limit: 2 }), ['constructor'], 'the next page: after the last id shown');
  t.same(ids({ after: 'cam-a' }), ['cam-b', 'constructor'], 'after an id, no limit: all the rest');
  t.same(ids({ after: 'cam-az' }), ['cam-b', 'constructor'], 'after an id no device has: by where it sorts');
  t.same(ids({ after: 'constructor' }), [], 'after the last: none');
  t.same(
    [...store.eachDeviceLabels()],
    [
      { id: 'cam-a', labels: { site: 'north' } },
      { id: 'cam-b', labels: { site: 'south' } },
      { id: 'constructor', labels: { site: 'south' } },
    ],
  );
  t.equal(store.deviceCount(), 3);
  t.same([...store.devicesOnline(['cam-a', 'cam-b', 'nobody'])].sort(), [
    ['cam-a', false],
    ['cam-b', true],
  ]);
  // A caller that stops early closes the row cursor: the store takes writes again at once.
  for (const d of store.eachDevice()) {
    if (d.id === 'cam-a') break;
  }
  store.removeDevice('cam-a');
  t.same(store.deviceIds(), ['cam-b', 'constructor'], 'a write after an early stop');
});

t.test('desired seq: monotonic, inside transactions, across reopen and re-enrolment', async (t) => {
  const file = path.join(t.testdir(), 'ota.db');
  let store = openStore(file);
  addDevice(store, 'cam-01');
  addDevice(store, 'cam-02');
  t.equal(store.nextDesiredSeq('cam-01'), 1);
  t.equal(store.nextDesiredSeq('cam-01'), 2);
  t.equal(store.nextDesiredSeq('cam-02'), 1, 'per device');
  t.throws(() =>
    store.transaction(() => {
      t.equal(store.nextDesiredSeq('cam-01'), 3);
      throw new Error('rolled back');
    }),
  );
  t.equal(store.getDevice('cam-01')?.desiredSeq, 2, 'a rolled-back bump is not kept');
  t.equal(
    store.transaction(() => store.nextDesiredSeq('cam-01')),
    3,
  );
  store.close();

  store = openStore(file);
  t.teardown(() => store.close());
  t.equal(store.getDevice('cam-01')?.desiredSeq, 3);
  t.equal(store.nextDesiredSeq('cam-01'), 4, 'continues after reopen');

  store.removeDevice('cam-01');
  t.equal(addDevice(store, 'cam-01').desiredSeq, 4, 're-enrolled under the same id: continues above the old seq');
  t.equal(store.nextDesiredSeq('cam-01'), 5);
  t.throws(() => store.nextDesiredSeq('ghost'), { code: 'E_NOT_FOUND', message: 'device ghost not found' });

  // A device reported a higher seq than this database issued (a restored backup): raised, never lowered.
  t.equal(store.desiredSeq('cam-01'), 5);
  t.equal(store.raiseDesiredSeq('cam-01', 9), true);
  t.equal(store.desiredSeq('cam-01'), 9);
  t.equal(store.raiseDesiredSeq('cam-01', 2), true, 'a lower floor changes nothing');
  t.equal(store.desiredSeq('cam-01'), 9);
  t.equal(store.nextDesiredSeq('cam-01'), 10, 'the next seq is above the raised one');
  t.equal(store.desiredSeq('ghost'), null);
  t.equal(store.raiseDesiredSeq('ghost', 3), false, 'an unknown device is not created');
});

// ---- operators, keys, groups ----

t.test('operators', async (t) => {
  const { store } = fresh(t);
  t.strictSame(store.addOperator({ name: 'bob', role: 'viewer', tokenHash: 'h-bob', now: NOW }), {
    name: 'bob',
    role: 'viewer',
    createdAt: NOW,
  });
  store.addOperator({ name: 'alice', role: 'admin', tokenHash: 'h-alice', now: LATER });
  t.strictSame(store.getOperator('alice'), { name: 'alice', role: 'admin', createdAt: LATER, tokenHash: 'h-alice' });
  t.equal(store.getOperator('nobody'), null);
  t.strictSame(
    store.listOperators(),
    [
      { name: 'alice', role: 'admin', createdAt: LATER },
      { name: 'bob', role: 'viewer', createdAt: NOW },
    ],
    'no token hashes in the list',
  );
  t.throws(() => store.addOperator({ name: 'bob', role: 'admin', tokenHash: 'x', now: NOW }), {
    code: 'E_CONFLICT',
    message: 'operator bob already exists',
  });
  t.throws(() => store.addOperator({ name: 'eve', role: 'root' as never, tokenHash: 'x', now: NOW }), {
    code: 'E_INTERNAL',
    message: /CHECK constraint failed/,
  });
});

t.test('trusted keys', async (t) => {
  const { store } = fresh(t);
  const key = store.addKey({ keyId: 'k1', publicKey: 'cHVi', name: 'release', now: NOW });
  t.strictSame(key, { keyId: 'k1', publicKey: 'cHVi', name: 'release', revoked: false, addedAt: NOW });
  store.addKey({ keyId: 'k2', publicKey: 'cHViMg==', name: null, now: LATER });
  t.throws(() => store.addKey({ keyId: 'k1', publicKey: 'x', name: null, now: NOW }), {
    code: 'E_CONFLICT',
    message: 'trusted key k1 already exists',
  });
  t.equal(store.revokeKey('k1'), true);
  t.equal(store.revokeKey('k1'), true, 'revoking again is a no-op on an existing key');
  t.equal(store.revokeKey('nope'), false);
  t.strictSame(store.listKeys(), [
    { keyId: 'k1', publicKey: 'cHVi', name: 'release', revoked: true, addedAt: NOW },
    { keyId: 'k2', publicKey: 'cHViMg==', name: null, revoked: false, addedAt: LATER },
  ]);
});

t.test('groups', async (t) => {
  const { store } = fresh(t);
  t.strictSame(store.createGroup({ name: 'lab', devices: ['cam-01', 'cam-02'], selector: null, now: NOW }), {
    name: 'lab',
    devices: ['cam-01', 'cam-02'],
    selector: null,
    createdAt: NOW,
  });
  store.createGroup({ name: 'north', devices: null, selector: { site: 'north', tier: 'edge' }, now: NOW });
  t.strictSame(store.getGroup('north')?.selector, { site: 'north', tier: 'edge' });
  t.equal(store.getGroup('south'), null);
  t.strictSame(
    store.listGroups().map((g) => g.name),
    ['lab', 'north'],
  );
  t.throws(() => store.createGroup({ name: 'lab', devices: ['x'], selector: null, now: NOW }), {
    code: 'E_CONFLICT',
    message: 'group lab already exists',
  });
  // The rule (a list or a selector) is FleetService's; the table's CHECK is the last line of
  // defence, and reaching it is a bug (E_INTERNAL).
  t.throws(() => store.createGroup({ name: 'both', devices: ['x'], selector: { a: 'b' }, now: NOW }), {
    code: 'E_INTERNAL',
  });
  t.throws(() => store.createGroup({ name: 'neither', devices: null, selector: null, now: NOW }), {
    code: 'E_INTERNAL',
  });
});

// ---- releases and channels ----

t.test('releases', async (t) => {
  const { store } = fresh(t);
  const r1 = release('detector', '1.0.0', 1);
  t.strictSame(store.addRelease(r1), r1, 'returns the stored release');
  store.addRelease(release('detector', '1.1.0', 2));
  store.addRelease(release('classifier', '0.1.0', 1));
  t.strictSame(store.getRelease('detector@1.0.0'), r1, 'envelope round trips as an object');
  t.equal(store.getRelease('detector@9'), null);
  t.strictSame(
    store.listReleases().map((r) => r.id),
    ['classifier@0.1.0', 'detector@1.0.0', 'detector@1.1.0'],
  );
  t.strictSame(
    store.listReleases('detector').map((r) => r.id),
    ['detector@1.0.0', 'detector@1.1.0'],
  );
  t.strictSame(store.listReleases('none'), []);
  t.throws(() => store.addRelease(r1), { code: 'E_CONFLICT', message: 'release detector@1.0.0 already exists' });
  t.throws(() => store.addRelease({ ...release('detector', '3.0.0'), id: 'detector@4.0.0' }), {
    code: 'E_INTERNAL',
  });
});

t.test('channels', async (t) => {
  const { store } = seeded(t, 0);
  t.strictSame(store.setChannel({ model: 'detector', channel: 'stable', releaseId: 'detector@1.0.0', now: NOW }), {
    model: 'detector',
    channel: 'stable',
    releaseId: 'detector@1.0.0',
    updatedAt: NOW,
  });
  store.setChannel({ model: 'detector', channel: 'canary', releaseId: 'detector@2.0.0', now: NOW });
  store.setChannel({ model: 'detector', channel: 'stable', releaseId: 'detector@2.0.0', now: LATER });
  t.strictSame(store.getChannel('detector', 'stable'), {
    model: 'detector',
    channel: 'stable',
    releaseId: 'detector@2.0.0',
    updatedAt: LATER,
  });
  t.equal(store.getChannel('detector', 'beta'), null);
  t.strictSame(
    store.listChannels().map((c) => `${c.model}/${c.channel}`),
    ['detector/canary', 'detector/stable'],
  );
  t.throws(() => store.setChannel({ model: 'detector', channel: 'stable', releaseId: 'detector@9.9.9', now: NOW }), {
    code: 'E_NOT_FOUND',
    message: /^release detector@9\.9\.9 not found/,
  });
  t.throws(() => store.setChannel({ model: 'detector', channel: 'stable', releaseId: 'other@1.0.0', now: NOW }), {
    code: 'E_CONFLICT',
    message: /other@1\.0\.0 is a release of model other, not detector/,
  });
});

// ---- desired state ----

t.test('desired state per (device, model), cascade on device removal', async (t) => {
  const { store } = seeded(t);
  const entry = {
    deviceId: 'cam-01',
    model: 'detector',
    releaseId: 'detector@1.0.0',
    rolloutId: null,
    source: 'enrolment',
    updatedAt: NOW,
  };
  store.setDesired(entry);
  t.strictSame(store.getDesired('cam-01', 'detector'), entry);
  const update = { ...entry, releaseId: 'detector@2.0.0', rolloutId: 'r1', source: 'rollout', updatedAt: LATER };
  store.setDesired(update);
  t.strictSame(store.getDesired('cam-01', 'detector'), update, 'overwrites the (device, model) entry');
  store.setDesired({ ...entry, model: 'other', releaseId: 'other@1.0.0' });
  store.setDesired({ ...entry, deviceId: 'cam-02' });
  t.strictSame(
    store.listDesiredFor('cam-01').map((d) => d.model),
    ['detector', 'other'],
  );
  t.strictSame(store.devicesWithDesired(), ['cam-01', 'cam-02']);
  t.equal(store.getDesired('cam-03', 'detector'), null);

  t.throws(() => store.setDesired({ ...entry, deviceId: 'ghost' }), {
    code: 'E_NOT_FOUND',
    message: 'device ghost not found',
  });
  t.throws(() => store.setDesired({ ...entry, releaseId: 'detector@7.0.0' }), {
    code: 'E_NOT_FOUND',
    message: /^release detector@7\.0\.0 not found/,
  });
  t.throws(() => store.setDesired({ ...entry, releaseId: 'other@1.0.0' }), {
    code: 'E_CONFLICT',
    message: /release of model other, not detector/,
  });

  store.removeDesired('cam-01', 'other');
  t.strictSame(
    store.listDesiredFor('cam-01').map((d) => d.model),
    ['detector'],
  );
  store.removeDesired('cam-01', 'other'); // no-op

  store.removeDevice('cam-01');
  t.strictSame(store.listDesiredFor('cam-01'), [], 'desired entries cascade with the device');
  t.strictSame(store.devicesWithDesired(), ['cam-02']);
});

// ---- rollouts ----

t.test('rollouts: create, get, list, update, devices', async (t) => {
  const { store } = seeded(t);
  const r = rollout('r1');
  const devices = [member('cam-01', 0), member('cam-02', 1), member('cam-03', 1, { previousReleaseId: null })];
  store.createRollout(r, devices);
  t.strictSame(store.getRollout('r1'), r, 'round trip, strategy as an object, promoted as a boolean');
  t.equal(store.getRollout('nope'), null);
  t.strictSame(store.rolloutDevices('r1'), devices, 'ordered by wave, then device');
  t.strictSame(store.rolloutDevices('nope'), []);

  store.updateRollout('r1', {
    status: 'halted',
    haltReason: 'failure rate 0.34 > 0.05',
    currentWave: 1,
    acknowledgedFailures: 2,
    promoted: true,
    updatedAt: LATER,
  });
  t.strictSame(store.getRollout('r1'), {
    ...r,
    status: 'halted',
    haltReason: 'failure rate 0.34 > 0.05',
    currentWave: 1,
    acknowledgedFailures: 2,
    promoted: true,
    updatedAt: LATER,
  });
  store.updateRollout('r1', { haltReason: null, abortPolicy: 'revert', status: 'aborted' });
  const after = store.getRollout('r1');
  t.equal(after?.haltReason, null);
  t.equal(after?.abortPolicy, 'revert');
  store.updateRollout('r1', {}); // nothing to change
  t.throws(() => store.updateRollout('nope', { status: 'running' }), {
    code: 'E_NOT_FOUND',
    message: 'rollout nope not found',
  });

  const failed = member('cam-01', 0, {
    state: 'failed',
    online: true,
    assignedAt: NOW,
    finishedAt: LATER,
    error: { code: 'E_PROBE_FAILED', message: 'outputs differ' },
  });
  store.upsertRolloutDevices('r1', [failed, member('cam-04', 1)]);
  t.strictSame(store.rolloutDevices('r1')[0], failed, 'upsert replaces the row; error round trips');
  t.equal(store.rolloutDevices('r1').length, 4, 'and inserts new rows');
  t.throws(() => store.upsertRolloutDevices('nope', [member('cam-01')]), {
    code: 'E_NOT_FOUND',
    message: 'rollout nope not found',
  });

  t.throws(() => store.createRollout(rollout('r1', { status: 'completed' }), []), {
    code: 'E_CONFLICT',
    message: 'rollout r1 already exists',
  });
  t.throws(() => store.createRollout(rollout('r9', { releaseId: 'detector@8.0.0' }), []), {
    code: 'E_NOT_FOUND',
    message: 'release detector@8.0.0 not found (rollout r9)',
  });
  t.equal(store.getRollout('r9'), null);
  t.throws(() => store.createRollout(rollout('r10'), [member('cam-01'), member('cam-01')]), {
    code: 'E_CONFLICT',
    message: 'device cam-01 is listed twice in rollout r10',
  });
  t.equal(store.getRollout('r10'), null, 'nothing of a refused rollout is written');
});

t.test(
  'rollouts: the open devices a late report may move are those sent it, without an outcome, not sent back',
  async (t) => {
    const { store } = seeded(t, 5);
    store.createRollout(rollout('r1', { status: 'aborted' }), [
      member('cam-01', 0, { state: 'downloading', assignedAt: NOW }),
      member('cam-02', 0, { state: 'assigned', assignedAt: NOW }),
      member('cam-03', 0, { state: 'healthy', assignedAt: NOW, finishedAt: LATER }),
      member('cam-04', 0, { state: 'assigned', assignedAt: NOW, revertedTo: { releaseId: 'detector@1.0.0' } }),
      member('cam-05', 1), // its wave never started: never sent this rollout
    ]);
    t.strictSame([...store.openRolloutDevices('r1')].sort(), ['cam-01', 'cam-02']);
  },
);

t.test('rollouts: active filters and the one-active-rollout-per-model rule', async (t) => {
  const { store } = seeded(t);
  store.createRollout(rollout('r1', { createdAt: NOW }), [member('cam-01'), member('cam-02')]);
  store.createRollout(rollout('r2', { model: 'other', version: '1.0.0', releaseId: 'other@1.0.0', createdAt: LATER }), [
    member('cam-01'),
  ]);
  store.createRollout(rollout('r0', { status: 'completed', createdAt: '2026-01-01T00:00:00.000Z' }), [
    member('cam-03'),
  ]);

  t.strictSame(
    store.listRollouts().map((r) => r.id),
    ['r0', 'r1', 'r2'],
    'by creation',
  );
  t.strictSame(
    store.listRollouts({ active: true }).map((r) => r.id),
    ['r1', 'r2'],
  );
  t.strictSame(
    store.listRollouts({ active: false }).map((r) => r.id),
    ['r0'],
  );
  t.strictSame(
    store.activeRolloutsFor('cam-01', 'detector').map((r) => r.id),
    ['r1'],
  );
  t.strictSame(
    store.activeRolloutsFor('cam-01', 'other').map((r) => r.id),
    ['r2'],
  );
  t.strictSame(store.activeRolloutsFor('cam-03', 'detector'), [], 'completed rollouts are not active');

  store.updateRollout('r1', { status: 'halted' });
  t.strictSame(
    store.activeRolloutsFor('cam-02', 'detector').map((r) => r.id),
    ['r1'],
    'halted is still active',
  );
  store.updateRollout('r1', { status: 'aborted', abortPolicy: 'keep' });
  store.createRollout(rollout('r3'), [member('cam-02'), member('cam-03')]);
  t.strictSame(
    store.activeRolloutsFor('cam-02', 'detector').map((r) => r.id),
    ['r3'],
  );
});

t.test('rollouts: fields without a column survive a round trip', async (t) => {
  const { store } = seeded(t, 1);
  const withExtra = { ...rollout('r1'), experiment: { arms: ['a', 'b'] }, note: null } as Rollout;
  store.createRollout(withExtra, [member('cam-01')]);
  t.strictSame(store.getRollout('r1'), withExtra);
  store.updateRollout('r1', { note: 'hello', status: 'halted' } as Partial<Rollout>);
  t.strictSame(store.getRollout('r1'), { ...withExtra, note: 'hello', status: 'halted' });
});

// ---- transactions ----

t.test('transaction: all or nothing, nesting joins, values pass through', async (t) => {
  const { store } = seeded(t, 1);
  t.throws(
    () =>
      store.transaction(() => {
        addDevice(store, 'cam-09');
        store.setDesired({
          deviceId: 'cam-09',
          model: 'detector',
          releaseId: 'detector@1.0.0',
          rolloutId: null,
          source: 'enrolment',
          updatedAt: NOW,
        });
        store.createRollout(rollout('r1'), [member('cam-09')]);
        store.appendAudit([{ actor: 'alice', action: 'device.enrolled', subject: 'device:cam-09', details: {} }], NOW);
        store.appendHistory([
          {
            deviceId: 'cam-09',
            model: 'detector',
            state: 'idle',
            version: null,
            rolloutId: null,
            error: null,
            ts: NOW,
          },
        ]);
        throw new Error('boom');
      }),
    /boom/,
  );
  t.equal(store.getDevice('cam-09'), null);
  t.strictSame(store.devicesWithDesired(), []);
  t.equal(store.getRollout('r1'), null);
  t.equal(store.auditCount(), 0);
  t.strictSame(store.listHistory('cam-09', 10), []);

  t.throws(
    () =>
      store.transaction(() => {
        addDevice(store, 'cam-10');
        addDevice(store, 'cam-01'); // duplicate: the whole transaction goes
      }),
    { code: 'E_CONFLICT', message: 'device cam-01 already exists' },
  );
  t.equal(store.getDevice('cam-10'), null, 'an error from a store method rolls back the rest');

  const value = store.transaction(() => {
    addDevice(store, 'cam-11');
    try {
      store.transaction(() => {
        addDevice(store, 'cam-12');
        throw new Error('inner');
      });
    } catch {
      // the inner (savepoint) part is undone, the outer goes on
    }
    return store.transaction(() => addDevice(store, 'cam-13').id);
  });
  t.equal(value, 'cam-13');
  t.ok(store.getDevice('cam-11'));
  t.equal(store.getDevice('cam-12'), null);
  t.ok(store.getDevice('cam-13'));
});

t.test('two connections on one file: each sees the writes the other committed', async (t) => {
  const { store, file } = fresh(t);
  const other = openStore(file);
  t.teardown(() => other.close());
  addDevice(store, 'cam-01');
  t.ok(other.getDevice('cam-01'));
  other.transaction(() => addDevice(other, 'cam-02'));
  t.ok(store.getDevice('cam-02'));
  t.equal(store.nextDesiredSeq('cam-01'), 1);
  t.equal(other.nextDesiredSeq('cam-01'), 2, 'the seq is shared through the file');
});

// ---- device history ----

t.test('device history: batch append of 10k rows, newest last', async (t) => {
  const { store } = fresh(t);
  const states = ['downloading', 'verifying', 'applying', 'probing', 'healthy'];
  const rows: HistoryRecord[] = [];
  for (let i = 0; i < 10_000; i++) {
    rows.push({
      deviceId: `cam-${i % 10}`,
      model: 'detector',
      state: states[i % states.length] as string,
      version: i % 7 === 0 ? null : '2.0.0',
      rolloutId: i % 3 === 0 ? null : 'r1',
      error: i % 11 === 0 ? { code: 'E_DIGEST', message: `row ${i}` } : null,
      ts: new Date(Date.parse(NOW) + i * 1000).toISOString(),
    });
  }
  store.appendHistory(rows);
  store.appendHistory([]);
  const mine = rows.filter((r) => r.deviceId === 'cam-0');
  t.equal(mine.length, 1000);
  t.strictSame(store.listHistory('cam-0', 5000), mine, 'all of it, in order, JSON errors parsed');
  t.strictSame(store.listHistory('cam-0', 3), mine.slice(-3), 'the last rows, oldest first');
  t.strictSame(store.listHistory('cam-0', 0), []);
  t.strictSame(store.listHistory('nobody', 10), []);
});

t.test('markAllOffline: everyone offline at start, last seen kept', async (t) => {
  const { store } = fresh(t);
  store.addDevice({ id: 'd-1', labels: {}, channel: 'stable', tokenHash: 'a'.repeat(64), now: NOW });
  store.addDevice({ id: 'd-2', labels: {}, channel: 'stable', tokenHash: 'b'.repeat(64), now: NOW });
  store.setDevicePresence('d-1', true, LATER);
  t.equal(store.markAllOffline(), 1, 'one device was online');
  t.strictSame(
    store.listDevices().map((d) => [d.id, d.online, d.lastSeen]),
    [
      ['d-1', false, LATER],
      ['d-2', false, null],
    ],
  );
});
