import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import {
  CATCH_UP_WINDOW_MS,
  catchUpWait,
  decideSeqCatchUp,
  MAX_CATCH_UP_SEQ,
  planSeqCatchUp,
} from '../coordinator/desired/seq-catch-up.js';
import { goodModel } from '../scripts/tiny-models.js';
import type { AuditEvent, Reported } from '../shared/messages.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// Issue 12 item 5: a restored backup of coordinator.db is behind the desired `seq` devices have
// already accepted. The coordinator must move its counter past what a device reports and send
// the device's desired state again, once per higher seq it sees, so the next change reaches it.

// Agents reconnect to a restarted coordinator with backoff (full jitter): give them time.
t.setTimeout(300_000);

const DEVICE = 'edge-1';
const CATCH_UP = 'device.seq_caught_up';

/**
 * The backup docs/coordinator.md documents: `sqlite3 coordinator.db ".backup FILE"` while the
 * coordinator runs. Without the sqlite3 shell, better-sqlite3's backup(), which drives the same
 * SQLite online-backup API (https://sqlite.org/backup.html) the `.backup` command uses.
 */
async function backup(t: Test, db: string, file: string): Promise<void> {
  try {
    execFileSync('sqlite3', [db, `.backup '${file}'`], { stdio: ['ignore', 'ignore', 'pipe'] });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  t.comment('no sqlite3 shell here: backing up through better-sqlite3 (the same online-backup API)');
  const source = new Database(db, { readonly: true, fileMustExist: true });
  try {
    await source.backup(file);
  } finally {
    source.close();
  }
}

/** The restore docs/coordinator.md documents, with the coordinator stopped. */
async function restore(file: string, dataDir: string): Promise<void> {
  const db = path.join(dataDir, 'coordinator.db');
  await fs.rm(`${db}-wal`, { force: true });
  await fs.rm(`${db}-shm`, { force: true });
  await fs.copyFile(file, db);
}

async function moveChannel(f: FleetFixture, version: string, counter: number): Promise<void> {
  await f.publish('det', version, goodModel(counter), { counter });
  await f.admin.call('channel.set', { model: 'det', channel: 'stable', version, yes: true });
}

interface DeviceView {
  desiredSeq: number;
  lastReport: Reported | null;
}

async function catchUps(f: FleetFixture): Promise<AuditEvent[]> {
  const rows = await f.admin.call<AuditEvent[]>('audit.ls', { limit: 1000 });
  return rows.filter((e) => e.action === CATCH_UP && e.subject === `device:${DEVICE}`);
}

/** Polls the coordinator's device row (bounded) until `pred` holds. */
async function deviceRow(f: FleetFixture, what: string, pred: (d: DeviceView) => boolean): Promise<DeviceView> {
  let last: DeviceView | undefined;
  for (let i = 0; i < 240; i++) {
    last = await f.admin.call<DeviceView>('device.show', { id: DEVICE });
    if (pred(last)) return last;
    await delay(250);
  }
  throw new Error(`device row never showed ${what}; last: ${JSON.stringify(last)}`);
}

const ts = '2026-12-06T00:00:00.000Z';
const refusal = (seq: number | null, code: string): Reported['rejected'] => ({
  seq,
  error: { code, message: code },
  ts,
});

t.test('decideSeqCatchUp: (stored seq, reported seq and refusal) -> action', async (t) => {
  const none = { kind: 'none' };
  // Behind or level with the coordinator: the normal case, nothing to do.
  t.same(decideSeqCatchUp(7, { seq: 6, rejected: null }), none, 'behind: the newest state is on its way');
  t.same(decideSeqCatchUp(7, { seq: 7, rejected: null }), none, 'level: it accepted the newest state');
  t.same(decideSeqCatchUp(0, { seq: 0, rejected: null }), none, 'nothing issued, nothing accepted');
  // Ahead: it accepted seqs this database never issued (a restored backup).
  const ahead = { kind: 'catch_up', reportedSeq: 4, storedSeq: 2, reason: 'device_ahead' };
  t.same(decideSeqCatchUp(2, { seq: 4, rejected: null }), ahead, 'ahead');
  t.same(decideSeqCatchUp(2, { seq: 4, rejected: refusal(2, 'E_REPLAY') }), ahead, 'ahead, and refused ours');
  // Level, but our newest state was refused as a replay: it accepted the same seq from another history.
  t.same(
    decideSeqCatchUp(4, { seq: 4, rejected: refusal(4, 'E_REPLAY') }),
    { kind: 'catch_up', reportedSeq: 4, storedSeq: 4, reason: 'replay_refused' },
    'level, our newest refused as a replay',
  );
  // Refusals that need nothing: for another reason, of an older seq (superseded), without a seq.
  t.same(decideSeqCatchUp(5, { seq: 4, rejected: refusal(5, 'E_UNKNOWN_KEY') }), none, 'refused for its signer');
  t.same(decideSeqCatchUp(4, { seq: 4, rejected: refusal(4, 'E_SIGNATURE') }), none, 'level, refused otherwise');
  t.same(decideSeqCatchUp(6, { seq: 6, rejected: refusal(5, 'E_REPLAY') }), none, 'an older refusal, superseded');
  t.same(decideSeqCatchUp(4, { seq: 4, rejected: refusal(null, 'E_REPLAY') }), none, 'a refusal with no seq');
  // A report that contradicts itself (E_REPLAY of a seq above what it accepted) is behind: nothing.
  t.same(decideSeqCatchUp(5, { seq: 4, rejected: refusal(5, 'E_REPLAY') }), none, 'behind, whatever it claims');
  // A seq no coordinator reaches is not followed (it would leave the counter no room).
  t.same(
    decideSeqCatchUp(3, { seq: MAX_CATCH_UP_SEQ + 1, rejected: null }),
    { kind: 'implausible', reportedSeq: MAX_CATCH_UP_SEQ + 1, storedSeq: 3 },
    'above the cap: not followed',
  );
  t.equal(decideSeqCatchUp(3, { seq: MAX_CATCH_UP_SEQ, rejected: null }).kind, 'catch_up', 'the cap itself is');
  // No loop: after a catch-up to 4 the stored seq is 5, and nothing the device can report without
  // accepting something new (the same seq, any refusal of 5 or of older ones) decides anything.
  for (const rejected of [null, refusal(5, 'E_UNKNOWN_KEY'), refusal(5, 'E_REPLAY'), refusal(3, 'E_REPLAY')]) {
    t.same(decideSeqCatchUp(5, { seq: 4, rejected }), none, `after the catch-up: ${JSON.stringify(rejected?.error)}`);
  }
});

t.test('catchUpWait: at most one catch-up per device in the window', async (t) => {
  t.equal(catchUpWait(undefined, 1_000, CATCH_UP_WINDOW_MS), 0, 'never caught up: now');
  t.equal(catchUpWait(1_000, 1_000 + CATCH_UP_WINDOW_MS, CATCH_UP_WINDOW_MS), 0, 'the window is over: now');
  t.equal(catchUpWait(1_000, 1_500, 10_000), 9_500, 'within the window: the rest of it');
});

t.test('planSeqCatchUp: a seq floor and an audit row per device', async (t) => {
  const plan = planSeqCatchUp([
    { deviceId: 'constructor', decision: { kind: 'catch_up', reportedSeq: 9, storedSeq: 2, reason: 'device_ahead' } },
  ]);
  t.same(plan.seqFloors, [{ deviceId: 'constructor', seq: 9 }]);
  t.same(plan.desired, [], 'the desired entries do not change: they are signed again');
  t.match(plan.audit, [
    {
      actor: 'coordinator',
      action: CATCH_UP,
      subject: 'device:constructor',
      details: { reportedSeq: 9, storedSeq: 2, resentAsSeq: 10 },
    },
  ]);
});

t.test(
  'after a restored backup the device takes the next channel move; a refusal for another reason is not answered again',
  async (t) => {
    const f = await FleetFixture.create(t);
    await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
    await f.enrol(DEVICE);
    await f.waitForDevice(DEVICE, 'det', 'healthy', '1.0.0');

    const saved = path.join(f.dir, 'coordinator.db.backup');
    await backup(t, path.join(f.coordinator.dataDir, 'coordinator.db'), saved);
    const copy = new Database(saved, { readonly: true, fileMustExist: true });
    const savedSeq = copy
      .prepare<[string], { desired_seq: number }>('SELECT desired_seq FROM devices WHERE id = ?')
      .get(DEVICE)?.desired_seq;
    copy.close();

    for (const [version, counter] of [
      ['2.0.0', 2],
      ['3.0.0', 3],
      ['4.0.0', 4],
    ] as const) {
      await moveChannel(f, version, counter);
      await f.waitForDevice(DEVICE, 'det', 'healthy', version);
    }
    const accepted = f.lastReport(DEVICE)?.seq ?? 0;
    t.ok(
      savedSeq !== undefined && accepted > savedSeq,
      `the device accepted seq ${accepted}, the backup says ${savedSeq}`,
    );

    await f.restartCoordinator('SIGTERM', (dataDir) => restore(saved, dataDir));
    t.pass('coordinator stopped, backup restored, started again');
    await moveChannel(f, '5.0.0', 5);
    await f.waitForDevice(DEVICE, 'det', 'healthy', '5.0.0', 90_000).catch((err) => {
      console.error(f.agents.get(DEVICE)?.tail(40));
      console.error(f.coordinator.tail(40));
      throw err;
    });
    const row = await deviceRow(
      f,
      'det 5.0.0 healthy',
      (d) => d.lastReport?.models.det?.current === '5.0.0' && d.lastReport.models.det.state === 'healthy',
    );
    t.equal(row.lastReport?.seq, row.desiredSeq, 'the device accepted the newest desired state the coordinator issued');
    t.ok(row.desiredSeq > accepted, `the coordinator's seq (${row.desiredSeq}) moved past the device's (${accepted})`);
    t.equal(await f.link(DEVICE, 'det'), '5.0.0', 'the device runs 5.0.0');
    const once = await catchUps(f);
    t.equal(once.length, 1, 'one catch-up, audited');
    t.match(once[0]?.details, { reportedSeq: accepted });

    // Restored again, this time without coordinator.key: the coordinator signs with a new key the
    // device does not trust. It catches up once more (the device is ahead again), the device
    // refuses that state for its signature, and that refusal must not be answered with yet
    // another desired state (nor any later one: the seq stays where the catch-up put it).
    const before = f.lastReport(DEVICE)?.seq ?? 0;
    await f.restartCoordinator('SIGTERM', async (dataDir) => {
      await restore(saved, dataDir);
      await fs.rm(path.join(dataDir, 'coordinator.key'));
      await fs.rm(path.join(dataDir, 'coordinator.key.pub'));
    });
    const refused = await deviceRow(
      f,
      'the refusal of the caught-up state',
      (d) =>
        d.desiredSeq > before &&
        d.lastReport?.rejected?.seq === d.desiredSeq &&
        d.lastReport.rejected.error.code !== 'E_REPLAY',
    );
    t.equal(refused.lastReport?.seq, before, 'the device kept what it had accepted');
    t.equal(refused.desiredSeq, before + 1, 'caught up once: the seq is one above the device');
    // The restored database has none of the rows written after the backup: this one is its first.
    t.equal((await catchUps(f)).length, 1, 'the catch-up is audited');
    // The refusal was recorded (the row shows it) and answered by nothing: the seq did not move.
    // The device reports again when it reconnects; that report is not answered either.
    await f.agents.get(DEVICE)?.stop();
    f.startAgent(DEVICE);
    const again = await deviceRow(
      f,
      'the restarted agent report',
      (d) => d.lastReport !== null && d.lastReport.ts > (refused.lastReport?.ts ?? ''),
    );
    t.equal(again.desiredSeq, refused.desiredSeq, 'no desired state sent in answer to the refusal');
    t.equal((await catchUps(f)).length, 1, 'no further catch-up');
  },
);
