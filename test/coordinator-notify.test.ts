import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CoordinatorProcess, freePort } from './helpers/coordinator-process.js';

// Issue 11 item 16: under systemd (Type=notify) the coordinator says READY=1 only once a client
// can use it: the admin token file complete, the servers listening. A stand-in `systemd-notify` on
// PATH (shared/systemd-notify.ts runs the binary by name) records each message and, at that very
// moment, whether admin.token is a complete file and whether /healthz answers ok.

t.setTimeout(120_000);

t.test('READY=1 comes after the admin token is written and /healthz is ok; STOPPING=1 on SIGTERM', async (t) => {
  const dir = t.testdir({});
  const bin = path.join(dir, 'bin');
  const dataDir = path.join(dir, 'data');
  const record = path.join(dir, 'notify.log');
  await fs.mkdir(bin);
  const http = await freePort();
  // node, not a shell one-liner: it reads the token file and asks /healthz as the message is sent.
  await fs.writeFile(
    path.join(bin, 'systemd-notify'),
    `#!${process.execPath}
const fs = require('node:fs');
let token = 'missing';
try { token = JSON.parse(fs.readFileSync(${JSON.stringify(path.join(dataDir, 'admin.token'))}, 'utf8')).token ? 'complete' : 'empty'; } catch (e) { token = e.code || 'unreadable'; }
fetch('http://127.0.0.1:${http}/healthz').then((r) => r.status, () => 'no answer').then((healthz) => {
  fs.appendFileSync(${JSON.stringify(record)}, JSON.stringify({ args: process.argv.slice(2), socket: process.env.NOTIFY_SOCKET, token, healthz }) + '\\n');
});
`,
    { mode: 0o755 },
  );
  const coordinator = new CoordinatorProcess(
    dataDir,
    { mqtt: await freePort(), http },
    { NOTIFY_SOCKET: path.join(dir, 'notify.sock'), PATH: `${bin}:${process.env.PATH ?? ''}` },
  );
  t.teardown(() => coordinator.kill9());
  await coordinator.ready();
  const read = () =>
    readFileSync(record, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { args: string[]; socket: string; token: string; healthz: number | string });
  const deadline = Date.now() + 30_000;
  while (!(await fs.stat(record).catch(() => null)) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 100));
  const [ready] = read();
  t.match(ready?.args, ['READY=1', /^STATUS=mqtt mqtt:\/\/127\.0\.0\.1:\d+, http http:\/\/127\.0\.0\.1:\d+$/]);
  t.equal(ready?.token, 'complete', 'admin.token was complete when READY=1 was sent');
  t.equal(ready?.healthz, 200, '/healthz answered ok when READY=1 was sent');
  t.equal(ready?.socket, path.join(dir, 'notify.sock'));

  await coordinator.stop();
  t.match(
    read().map((m) => m.args[0]),
    ['READY=1', 'STOPPING=1'],
    'STOPPING=1 on a clean stop',
  );
});

t.test('a systemd-notify that fails is logged, never fatal: the coordinator serves', async (t) => {
  const dir = t.testdir({});
  const bin = path.join(dir, 'bin');
  await fs.mkdir(bin);
  await fs.writeFile(path.join(bin, 'systemd-notify'), '#!/bin/sh\necho "no manager" >&2\nexit 1\n', { mode: 0o755 });
  const coordinator = new CoordinatorProcess(
    path.join(dir, 'data'),
    { mqtt: await freePort(), http: await freePort() },
    { NOTIFY_SOCKET: path.join(dir, 'notify.sock'), PATH: `${bin}:${process.env.PATH ?? ''}` },
  );
  t.teardown(() => coordinator.kill9());
  await coordinator.ready();
  const warning = await coordinator.waitForLog((l) => l.msg === 'systemd notification failed');
  t.match(String(warning.err), /no manager|exit/, 'the failure is in the log');
  const health = await fetch(`${coordinator.httpUrl}/healthz`);
  t.equal(health.status, 200, 'and the coordinator serves');
  t.match(await coordinator.stop(), { code: 0 }, 'a clean stop still exits 0');
});

t.test('a start that fails exits 1 with the error and the fix (a port in use)', async (t) => {
  const first = await CoordinatorProcess.start(path.join(t.testdir({}), 'a'));
  t.teardown(() => first.kill9());
  const port = Number(new URL(first.mqttUrl).port);
  const second = new CoordinatorProcess(path.join(t.testdir({}), 'b'), { mqtt: port, http: await freePort() });
  const exit = await second.exited;
  t.equal(exit.code, 1);
  t.match(
    second.stderr,
    /ota-coordinator: error .*another process uses that port: stop it, or pick another with --mqtt-port/,
  );
});
