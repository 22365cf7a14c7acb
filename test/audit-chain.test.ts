import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { auditHash, GENESIS_HASH, verifyAuditChain } from '../coordinator/store/audit-chain.js';
import type { AuditDraft } from '../coordinator/store/records.js';
import { openStore, type SqliteStore } from '../coordinator/store/sqlite-store.js';
import { canonicalJson } from '../shared/canonical-json.js';
import { AuditEventSchema } from '../shared/messages.js';

const NOW = '2026-03-01T10:00:00.000Z';

function fresh(t: Test): { store: SqliteStore; file: string } {
  const file = path.join(t.testdir(), 'ota.db');
  const store = openStore(file);
  t.teardown(() => store.close());
  return { store, file };
}

function draft(i: number, overrides: Partial<AuditDraft> = {}): AuditDraft {
  return {
    actor: 'alice',
    action: 'rollout.wave_started',
    subject: `rollout:r${i % 3}`,
    details: { wave: i, rolloutId: `r${i % 3}`, note: `event ${i}` },
    ...overrides,
  };
}

/** A store with `n` audit rows (one append per row). */
function chain(t: Test, n = 10): { store: SqliteStore; file: string } {
  const s = fresh(t);
  for (let i = 1; i <= n; i++) s.store.appendAudit([draft(i)], NOW);
  return s;
}

/** A second connection to the same file that goes around the store: the attacker's. */
function behindItsBack(t: Test, file: string): Database.Database {
  const raw = new Database(file);
  t.teardown(() => raw.close());
  raw.exec('DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DROP TRIGGER audit_append_at_head;');
  return raw;
}

interface RawRow {
  seq: number;
  ts: string;
  actor: string;
  action: string;
  subject: string | null;
  details: string;
  prev_hash: string;
  hash: string;
}

function rawRow(raw: Database.Database, seq: number): RawRow {
  return raw.prepare('SELECT * FROM audit WHERE seq = ?').get(seq) as RawRow;
}

function rehash(prevHash: string, row: RawRow): string {
  return auditHash(prevHash, {
    seq: row.seq,
    ts: row.ts,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    details: JSON.parse(row.details),
  });
}

t.test('append and verify round trip', async (t) => {
  const { store } = fresh(t);
  t.strictSame(store.verifyAudit(), { ok: true, count: 0, head: GENESIS_HASH, firstBad: null, reason: null });
  t.strictSame(store.appendAudit([], NOW), []);

  const first = store.appendAudit(
    [
      { actor: 'admin', action: 'device.enrolled', subject: 'device:cam-01', details: { channel: 'stable' } },
      // undefined members are dropped: the stored row is what gets hashed and returned
      { actor: 'admin', action: 'channel.moved', subject: null, details: { to: 'detector@2', skip: undefined } },
    ],
    NOW,
  );
  const second = store.appendAudit([draft(3)], '2026-03-01T10:00:01.000Z');
  const events = [...first, ...second];
  for (const e of events) t.ok(AuditEventSchema.safeParse(e).success, `row ${e.seq} matches AuditEventSchema`);
  t.strictSame(
    events.map((e) => e.seq),
    [1, 2, 3],
  );
  t.equal(events[0]?.prevHash, GENESIS_HASH, 'the first row follows 64 zeros');
  t.equal(events[1]?.prevHash, events[0]?.hash);
  t.equal(events[2]?.prevHash, events[1]?.hash);
  t.strictSame(events[1]?.details, { to: 'detector@2' });

  // The documented formula, computed independently.
  const e0 = events[0];
  if (!e0) throw new Error('no event');
  const expected = createHash('sha256')
    .update(
      GENESIS_HASH +
        canonicalJson({
          seq: 1,
          ts: NOW,
          actor: 'admin',
          action: 'device.enrolled',
          subject: 'device:cam-01',
          details: { channel: 'stable' },
        }),
    )
    .digest('hex');
  t.equal(e0.hash, expected, 'hash = sha256hex(prevHash + canonicalJson(row))');

  t.strictSame(store.listAudit({}), events, 'listed as appended');
  t.equal(store.auditCount(), 3);
  t.strictSame(store.verifyAudit(), { ok: true, count: 3, head: events[2]?.hash, firstBad: null, reason: null });
  t.strictSame(verifyAuditChain(events), store.verifyAudit(), 'the pure verifier agrees (e.g. on an export)');
});

t.test('append joins the caller transaction: a rollback leaves no gap', async (t) => {
  const { store } = chain(t, 2);
  t.throws(() =>
    store.transaction(() => {
      store.appendAudit([draft(3), draft(4)], NOW);
      throw new Error('decision failed');
    }),
  );
  t.equal(store.auditCount(), 2);
  const [next] = store.appendAudit([draft(5)], NOW);
  t.equal(next?.seq, 3, 'seq continues without a gap');
  t.equal(store.verifyAudit().ok, true);
  t.throws(
    () => store.appendAudit([{ actor: 'x'.repeat(500), action: 'a', subject: null, details: {} }], NOW),
    { code: 'E_INTERNAL', message: /actor/ },
    'rows that would not match the schema are refused',
  );
  t.throws(() => store.appendAudit([{ actor: 'a', action: 'a', subject: null, details: { n: Number.NaN } }], NOW), {
    code: 'E_INTERNAL',
  });
  t.equal(store.auditCount(), 3);
});

t.test('listAudit filters', async (t) => {
  const { store } = fresh(t);
  store.appendAudit(
    [
      { actor: 'alice', action: 'rollout.created', subject: 'rollout:r1', details: {} },
      {
        actor: 'cam-01',
        action: 'device.outcome',
        subject: 'device:cam-01',
        details: { rolloutId: 'r1', state: 'healthy' },
      },
      { actor: 'alice', action: 'rollout.created', subject: 'rollout:r2', details: { rolloutId: 'r2' } },
      { actor: 'alice', action: 'release.published', subject: 'release:detector@2', details: {} },
      { actor: 'alice', action: 'rollout.halted', subject: 'rollout:r10', details: { rolloutId: 'r10' } },
      { actor: 'alice', action: 'rollout.completed', subject: 'rollout:r1', details: { rolloutId: 'r1' } },
    ],
    NOW,
  );
  const seqs = (filter: Parameters<SqliteStore['listAudit']>[0]) => store.listAudit(filter).map((e) => e.seq);
  t.strictSame(seqs({ rolloutId: 'r1' }), [1, 2, 6], 'by subject or details.rolloutId, not by prefix');
  t.strictSame(seqs({ rolloutId: 'r2' }), [3]);
  t.strictSame(seqs({ rolloutId: 'nope' }), []);
  t.strictSame(seqs({ afterSeq: 4 }), [5, 6]);
  t.strictSame(seqs({ limit: 2 }), [1, 2]);
  t.strictSame(seqs({ rolloutId: 'r1', afterSeq: 1, limit: 1 }), [2]);
});

t.test('UPDATE, DELETE and out-of-chain inserts are refused by triggers', async (t) => {
  const { store, file } = chain(t, 3);
  const raw = new Database(file);
  t.teardown(() => raw.close());
  t.throws(() => raw.prepare(`UPDATE audit SET details = '{"x":1}' WHERE seq = 2`).run(), /audit is append-only/);
  t.throws(() => raw.prepare('DELETE FROM audit WHERE seq = 3').run(), /audit is append-only/);
  t.throws(() => raw.prepare('DELETE FROM audit').run(), /audit is append-only/);
  const row = rawRow(raw, 2);
  t.throws(
    () =>
      raw
        .prepare('INSERT OR REPLACE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(2, row.ts, 'mallory', row.action, row.subject, row.details, row.prev_hash, row.hash),
    /append-only/,
    'REPLACE (a delete that fires no delete trigger) is refused too',
  );
  const head = rawRow(raw, 3);
  t.throws(
    () =>
      raw
        .prepare('INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(4, NOW, 'mallory', 'x', null, '{}', GENESIS_HASH, GENESIS_HASH),
    /append-only/,
    'an insert that does not link to the head is refused',
  );
  t.throws(
    () =>
      raw
        .prepare('INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(7, NOW, 'mallory', 'x', null, '{}', head.hash, GENESIS_HASH),
    /append-only/,
    'an insert that leaves a gap is refused',
  );
  t.equal(store.auditCount(), 3);
  t.equal(store.verifyAudit().ok, true);
});

t.test('tampering behind its back', async (t) => {
  t.test('(a) a row edited', async (t) => {
    const { store, file } = chain(t);
    const raw = behindItsBack(t, file);
    raw
      .prepare(`UPDATE audit SET details = '{"wave":5,"rolloutId":"r2","note":"nothing happened"}' WHERE seq = 5`)
      .run();
    const verdict = store.verifyAudit();
    t.equal(verdict.ok, false);
    t.equal(verdict.firstBad, 5);
    t.match(verdict.reason, /row 5 was changed: its hash does not match/);
    t.equal(verdict.count, 4, 'rows before it verify');
    t.equal(verdict.head, rawRow(raw, 4).hash, 'head of the verified part');
    // The store is still usable after a verdict that stopped early (the statement iterator is closed).
    t.equal(store.listAudit({ limit: 1 }).length, 1);
  });

  t.test('(a) the first row edited, or its details made non-JSON', async (t) => {
    const { store, file } = chain(t, 3);
    const raw = behindItsBack(t, file);
    raw.prepare(`UPDATE audit SET actor = 'mallory' WHERE seq = 1`).run();
    t.match(store.verifyAudit(), { ok: false, firstBad: 1, count: 0 });
    raw.exec('DROP INDEX audit_rollout'); // the json_extract index refuses malformed JSON itself
    raw.prepare(`UPDATE audit SET actor = 'alice', details = 'not json' WHERE seq = 1`).run();
    t.match(store.verifyAudit(), { ok: false, firstBad: 1, reason: /not a JSON object/ });
  });

  t.test('(b) a middle row deleted', async (t) => {
    const { store, file } = chain(t);
    behindItsBack(t, file).prepare('DELETE FROM audit WHERE seq = 5').run();
    t.match(store.verifyAudit(), {
      ok: false,
      firstBad: 5,
      count: 4,
      reason: /row 5 is missing: seq jumps from 4 to 6/,
    });
  });

  t.test('(b) a middle row deleted and the rest renumbered', async (t) => {
    const { store, file } = chain(t);
    const raw = behindItsBack(t, file);
    raw.prepare('DELETE FROM audit WHERE seq = 5').run();
    const renumber = raw.prepare('UPDATE audit SET seq = seq - 1 WHERE seq = ?');
    for (let seq = 6; seq <= 10; seq++) renumber.run(seq);
    t.match(store.verifyAudit(), {
      ok: false,
      firstBad: 5,
      count: 4,
      reason: /prev_hash of row 5 is not the hash of row 4/,
    });
  });

  t.test('(b) the first row deleted', async (t) => {
    const { store, file } = chain(t, 3);
    behindItsBack(t, file).prepare('DELETE FROM audit WHERE seq = 1').run();
    t.match(store.verifyAudit(), { ok: false, firstBad: 1, count: 0, reason: /row 1 is missing/ });
  });

  t.test('(c) a forged row inserted with a correctly computed hash', async (t) => {
    const { store, file } = chain(t);
    const raw = behindItsBack(t, file);
    // Make room after row 5, then insert a row that links to row 5 and hashes right.
    const shift = raw.prepare('UPDATE audit SET seq = seq + 1 WHERE seq = ?');
    for (let seq = 10; seq >= 6; seq--) shift.run(seq);
    const five = rawRow(raw, 5);
    const forged: RawRow = {
      seq: 6,
      ts: NOW,
      actor: 'alice',
      action: 'rollout.promoted',
      subject: 'rollout:r1',
      details: canonicalJson({ rolloutId: 'r1' }),
      prev_hash: five.hash,
      hash: '',
    };
    forged.hash = rehash(five.hash, forged);
    raw
      .prepare('INSERT INTO audit VALUES (@seq, @ts, @actor, @action, @subject, @details, @prev_hash, @hash)')
      .run(forged);
    const verdict = store.verifyAudit();
    t.match(verdict, { ok: false, firstBad: 7, count: 6, reason: /prev_hash of row 7 is not the hash of row 6/ });
  });

  t.test('(c) a forged row put in a gap with a made-up hash', async (t) => {
    const { store, file } = chain(t);
    const raw = behindItsBack(t, file);
    const six = rawRow(raw, 6);
    raw.prepare('DELETE FROM audit WHERE seq = 6').run();
    raw
      .prepare('INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(6, six.ts, 'mallory', six.action, six.subject, six.details, six.prev_hash, 'ab'.repeat(32));
    t.match(store.verifyAudit(), { ok: false, firstBad: 6, reason: /row 6 was changed/ });
  });

  t.test('(d) a row edited and re-hashed, the next prev_hash left alone', async (t) => {
    const { store, file } = chain(t);
    const raw = behindItsBack(t, file);
    const five = rawRow(raw, 5);
    const edited = { ...five, details: canonicalJson({ wave: 5, rolloutId: 'r2', note: 'rewritten' }) };
    edited.hash = rehash(five.prev_hash, edited);
    raw.prepare('UPDATE audit SET details = ?, hash = ? WHERE seq = 5').run(edited.details, edited.hash);
    const verdict = store.verifyAudit();
    t.match(verdict, {
      ok: false,
      firstBad: 6,
      count: 5,
      reason: /prev_hash of row 6 is not the hash of row 5: .*row 5 was changed and re-hashed/,
    });
  });

  t.test('(d) re-hashing the whole rest of the chain is consistent again: anchor the head', async (t) => {
    // A hash chain without a secret cannot catch this by itself; the head hash that
    // `audit verify` prints, kept elsewhere, does.
    const { store, file } = chain(t);
    const before = store.verifyAudit();
    const raw = behindItsBack(t, file);
    let prev = rawRow(raw, 4).hash;
    const update = raw.prepare('UPDATE audit SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?');
    for (let seq = 5; seq <= 10; seq++) {
      const row = rawRow(raw, seq);
      const details = seq === 5 ? canonicalJson({ note: 'rewritten' }) : row.details;
      const hash = rehash(prev, { ...row, details });
      update.run(details, prev, hash, seq);
      prev = hash;
    }
    const after = store.verifyAudit();
    t.equal(after.ok, true);
    t.not(after.head, before.head, 'but the head hash differs from the one recorded before');
  });
});

t.test('verifyAuditChain over plain rows', async (t) => {
  const { store } = chain(t, 4);
  const rows = store.listAudit({});
  t.match(verifyAuditChain([rows[0], rows[0]] as never), { ok: false, firstBad: 1, reason: /appears again/ });
  t.match(verifyAuditChain([rows[0], { ...rows[1], seq: '2' }] as never), { ok: false, firstBad: 2 });
  t.match(verifyAuditChain([{ ...rows[0], hash: 'XYZ' }] as never), {
    ok: false,
    firstBad: 1,
    reason: /malformed hash/,
  });
  t.match(verifyAuditChain([{ ...rows[0], ts: 5 }] as never), { ok: false, firstBad: 1, reason: /malformed field/ });
  t.match(verifyAuditChain(rows.slice(0, 2)), { ok: true, count: 2, head: rows[1]?.hash });
});

const ROWS = 100_000;
const HEAP_CAP_MB = 64;

t.test(`verify over ${ROWS} rows streams them (constant memory)`, async (t) => {
  const { store, file } = fresh(t);
  const padding = 'x'.repeat(1000);
  const batch: AuditDraft[] = [];
  for (let i = 1; i <= ROWS; i++) {
    batch.push({
      actor: 'fleet',
      action: 'device.outcome',
      subject: `device:cam-${i}`,
      details: { i, rolloutId: 'big', padding },
    });
    if (batch.length === 5000 || i === ROWS) store.appendAudit(batch.splice(0), NOW);
  }
  t.equal(store.auditCount(), ROWS);
  const verdict = store.verifyAudit();
  t.equal(verdict.ok, true);
  t.equal(verdict.count, ROWS);
  t.equal(verdict.head, store.listAudit({ afterSeq: ROWS - 1 })[0]?.hash);
  store.close();

  // The table is far larger than the heap cap below: loading it at once could not fit.
  const raw = new Database(file, { readonly: true });
  const bytes = (raw.prepare('SELECT SUM(LENGTH(details)) AS n FROM audit').get() as { n: number }).n;
  raw.close();
  t.ok(bytes > 1.5 * HEAP_CAP_MB * 1024 * 1024, `details alone are ${Math.round(bytes / 1048576)} MB`);

  const script = path.join(path.dirname(file), 'verify.mts'); // (a second t.testdir() would empty the dir)
  const storeModule = fileURLToPath(new URL('../coordinator/store/sqlite-store.js', import.meta.url));
  writeFileSync(
    script,
    `const { openStore } = await import(${JSON.stringify(storeModule)});
const store = openStore(${JSON.stringify(file)}, { readonly: true });
process.stdout.write(JSON.stringify(store.verifyAudit()));
store.close();
`,
  );
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  const child = spawnSync(process.execPath, [...loader, `--max-old-space-size=${HEAP_CAP_MB}`, script], {
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '', TS_NODE_TRANSPILE_ONLY: '1' },
    timeout: 60_000,
  });
  t.equal(child.status, 0, child.stderr.slice(-2000));
  t.match(JSON.parse(child.stdout || '{}'), { ok: true, count: ROWS, head: verdict.head });
});
