import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import {
  AuthFailureLimits,
  type AuthFailureLimitsOptions,
  FixedWindows,
} from '../coordinator/identity/auth-failure-limits.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { createLogger } from '../shared/logger.js';
import type { AuditEvent } from '../shared/messages.js';

// Issue 12 item 6: failed logins without credentials cannot flood the audit chain (limits per
// user, per source address and overall, with a count of what was not written), and repeated
// failures from one address get their refusals held back, never a correct login.

const silent = createLogger('silent', process.stdout, 'ota-coordinator');
const A = '10.0.0.1';

// ---- the decisions on their own (clock passed in) ----

t.test('100 failures with 100 usernames from one address: a few rows, the rest counted', async (t) => {
  const limits = new AuthFailureLimits();
  const verdicts = Array.from({ length: 100 }, (_, i) =>
    limits.failure({ username: `user-${i}`, reason: 'unknown user or wrong token', address: A }, 1_000 + i),
  );
  t.same(
    verdicts.filter((v) => v.audit),
    [
      { audit: true, notAuditedBefore: 0 },
      { audit: true, notAuditedBefore: 0 },
      { audit: true, notAuditedBefore: 0 },
    ],
    'three rows per address per window',
  );
  t.equal(limits.notAudited, 97);
  // The next window: the next row stands for the 97 that got none.
  t.same(limits.failure({ username: 'user-x', reason: 'r', address: A }, 61_000), {
    audit: true,
    notAuditedBefore: 97,
  });
  t.equal(limits.notAudited, 97);
});

t.test('per (username, reason) and overall quotas', async (t) => {
  const limits = new AuthFailureLimits({ rowsOverall: 5 });
  const same = Array.from({ length: 10 }, (_, i) =>
    limits.failure({ username: 'admin', reason: 'unknown user or wrong token', address: `10.0.1.${i}` }, 0),
  );
  t.same(
    same.map((v) => v.audit),
    [true, false, false, false, false, false, false, false, false, false],
    'one row per user and reason',
  );
  t.ok(limits.failure({ username: 'admin', reason: 'will refused', address: '10.0.2.1' }, 0).audit, 'another reason');
  // 100 addresses, 100 users: the overall cap (5) holds.
  const spread = Array.from({ length: 100 }, (_, i) =>
    limits.failure({ username: `u-${i}`, reason: 'r', address: `10.1.0.${i}` }, 10),
  );
  t.equal(spread.filter((v) => v.audit).length, 3, 'five rows in the window overall (two already written)');
  t.equal(limits.notAudited, 9 + 97);
});

t.test('refusal delay: free failures, then doubling up to the cap, per address, per window', async (t) => {
  const limits = new AuthFailureLimits({ freeFailures: 2, holdBaseMs: 100, holdMaxMs: 1_000, windowMs: 10_000 });
  const delays: number[] = [];
  for (let i = 0; i < 8; i++) {
    limits.failure({ username: 'u', reason: 'r', address: A }, 0);
    delays.push(limits.refusalDelayMs(A, 0));
  }
  t.same(delays, [0, 0, 100, 200, 400, 800, 1_000, 1_000]);
  t.equal(limits.refusalDelayMs('10.0.0.2', 0), 0, 'another address is not held');
  t.equal(limits.refusalDelayMs(A, 0, 999), 1_000, 'while fewer than maxHeld are held');
  t.equal(limits.refusalDelayMs(A, 0, 1_000), 0, 'maxHeld held already: answered at once');
  t.equal(limits.refusalDelayMs(A, 10_000), 0, 'a new window starts free');
  limits.failure({ username: 'u', reason: 'r', address: A }, 10_000);
  t.equal(limits.refusalDelayMs(A, 10_000), 0);
  // A long run of failures does not overflow the doubling.
  const many = new AuthFailureLimits({ freeFailures: 0, holdMaxMs: 30_000 });
  for (let i = 0; i < 2_000; i++) many.failure({ username: 'u', reason: 'r', address: A }, 0);
  t.equal(many.refusalDelayMs(A, 0), 30_000);
});

t.test('FixedWindows forgets the oldest keys first and bounds its size', async (t) => {
  const w = new FixedWindows(100, 3);
  for (const k of ['a', 'b', 'c', 'd', 'e']) w.add(k, 0);
  t.equal(w.size, 3);
  t.same(
    ['a', 'b', 'c', 'd', 'e'].map((k) => w.count(k, 0)),
    [0, 0, 1, 1, 1],
    'a and b forgotten',
  );
  t.equal(w.add('c', 50), 2, 'counted in its window');
  t.equal(w.add('c', 100), 1, 'a new window');
  w.add('f', 150); // d and e have expired: trimmed first
  t.equal(w.size, 2);
  t.same(
    ['c', 'd', 'e', 'f'].map((k) => w.count(k, 150)),
    [1, 0, 0, 1],
  );
  t.throws(() => new AuthFailureLimits({ windowMs: 0 }), { message: /windowMs must be/ });
  t.throws(() => new AuthFailureLimits({ rowsPerAddress: -1 }), {
    message: /rowsPerAddress must be a non-negative integer/,
  });
  t.throws(() => new AuthFailureLimits({ holdBaseMs: 1.5 }), { message: /holdBaseMs/ });
});

// ---- against a real coordinator (in process: real Aedes, SQLite and HTTP) ----

async function coordinator(t: Test, limits: AuthFailureLimitsOptions) {
  const dataDir = path.join(t.testdir(), 'data');
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {});
  const running = await startCoordinator(config, { logger: silent, authFailureLimits: limits });
  t.teardown(() => running.stop());
  const token = JSON.parse(await fs.readFile(running.adminTokenFile, 'utf8')) as AdminTokenFile;
  const admin = await CommandClient.connect({ url: running.mqttUrl, user: token.user, token: token.token });
  t.teardown(() => admin.close());
  return { running, token, admin, port: Number(new URL(running.mqttUrl).port) };
}

function utf8(s: string): Buffer {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
}

/** A raw MQTT 3.1.1 CONNECT (section 3.1) with a clean session, username and password. */
function connectPacket(clientId: string, username: string, password: string): Buffer {
  const body = Buffer.concat([
    utf8('MQTT'),
    Buffer.from([4, 0xc2, 0, 30]),
    utf8(clientId),
    utf8(username),
    utf8(password),
  ]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

interface Attempt {
  /** The CONNACK return code (0 accepted, 4 bad user name or password...), or 'closed' without one. */
  answer: Promise<number | 'closed'>;
  /** Set once the answer arrived. */
  answered: () => boolean;
  close(): void;
}

/** Sends one CONNECT from 127.0.0.1 over a raw socket and reads the CONNACK (section 3.2). */
function attempt(port: number, clientId: string, username: string, password: string): Attempt {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let done = false;
  const answer = new Promise<number | 'closed'>((resolve) => {
    let got = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4 && !done) {
        done = true;
        resolve(got[0] === 0x20 ? (got[3] as number) : 'closed');
      }
    });
    socket.on('close', () => {
      if (!done) resolve('closed');
      done = true;
    });
  });
  socket.write(connectPacket(clientId, username, password));
  return { answer, answered: () => done, close: () => socket.destroy() };
}

async function scrape(httpUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : Number.NaN;
}

/** Scrapes until `series` is `value` (what the coordinator counts as a CONNECT arrives); fails after 10 s. */
async function until(httpUrl: string, series: string, value: number): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    const seen = await scrape(httpUrl, series);
    if (seen === value) return;
    if (Date.now() > end) throw new Error(`${series} is ${seen}, expected ${value}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const authRows = async (admin: CommandClient) =>
  (await admin.call<AuditEvent[]>('audit.ls', { limit: 1000 })).filter((e) => e.action === 'auth.failed');

t.test('a coordinator: 100 failed CONNECTs with 100 usernames from one address', async (t) => {
  // Held refusals kept short here: this test is about the audit rows and the counts.
  const { running, admin, port } = await coordinator(t, { holdBaseMs: 1, holdMaxMs: 2 });
  const codes: (number | 'closed')[] = [];
  for (let i = 0; i < 100; i++) codes.push(await attempt(port, `c-${i}`, `nobody-${i}`, 'wrong').answer);
  t.same(codes, Array(100).fill(4), 'every one refused with CONNACK 4 (bad user name or password)');

  const rows = await authRows(admin);
  t.equal(rows.length, 3, 'three audit rows (per-address quota)');
  t.same(
    rows.map((r) => r.details),
    [0, 1, 2].map(() => ({
      reason: 'unknown user or wrong token',
      address: '127.0.0.1',
      earlierFailuresNotAudited: 0,
    })),
  );
  t.equal(await scrape(running.httpUrl, 'ota_auth_failures_total{transport="mqtt"}'), 100);
  t.equal(await scrape(running.httpUrl, 'ota_auth_failures_not_audited_total'), 97, 'the 97 not written are counted');
  t.equal(await scrape(running.httpUrl, 'ota_mqtt_auth_refusals_held_total'), 95, 'refusals after the first 5 held');
  const verdict = await admin.call<{ ok: boolean; count: number }>('audit.verify');
  t.ok(verdict.ok);
  t.equal(await scrape(running.httpUrl, 'ota_audit_rows'), verdict.count);
});

t.test('a correct login right after a burst of failures is answered at once', async (t) => {
  // Refusals held for 10 minutes: a login the throttle touched would not finish in this test.
  const { running, admin, port, token } = await coordinator(t, { freeFailures: 3, holdBaseMs: 600_000 });
  for (let i = 0; i < 3; i++) t.equal(await attempt(port, `c-${i}`, `nobody-${i}`, 'wrong').answer, 4, 'free failure');
  const held = attempt(port, 'c-held', 'nobody-held', 'wrong');
  t.teardown(() => held.close());
  // Authoritative: the coordinator counted this refusal as held (its CONNACK is not sent).
  await until(running.httpUrl, 'ota_mqtt_auth_refusals_held_total', 1);
  // The admin's token, from the same address: accepted.
  const ok = attempt(port, `${token.user}@again`, token.user, token.token);
  t.equal(await ok.answer, 0, 'CONNACK 0 for the correct token');
  t.notOk(held.answered(), 'while the refusal before it is still held');
  ok.close();
  // The right token with a client id that is not the admin's: refused (5), and at once, since
  // the token was right (only bad credentials are held); it still counts as a failure.
  const wrongId = attempt(port, 'not-the-admin', token.user, token.token);
  t.equal(await wrongId.answer, 5, 'CONNACK 5 for a foreign client id, not held');
  wrongId.close();
  // A device's login too (another principal, same address).
  const added = await admin.call<{ token: string }>('device.add', { id: 'cam-1' });
  const device = attempt(port, 'cam-1', 'cam-1', added.token);
  t.equal(await device.answer, 0, 'a device from the same address: CONNACK 0');
  device.close();
  // The next failure is held again: the correct logins did not reset the address.
  const again = attempt(port, 'c-again', 'nobody-again', 'wrong');
  t.teardown(() => again.close());
  await until(running.httpUrl, 'ota_mqtt_auth_refusals_held_total', 2);
  t.notOk(again.answered() || held.answered(), 'both refusals held');
  t.equal(await scrape(running.httpUrl, 'ota_auth_failures_total{transport="mqtt"}'), 6);
  t.equal(await scrape(running.httpUrl, 'ota_mqtt_auth_refusals_held_total'), 2, 'the CONNACK 5 was not held');
});
