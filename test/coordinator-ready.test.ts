import { execFileSync } from 'node:child_process';
import { promises as fs, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { createLogger } from '../shared/logger.js';
import { freePort } from './helpers/coordinator-process.js';

// Readiness of a real coordinator (in process: real Aedes, SQLite, HTTP): /healthz and the
// `ota-coordinator ready` line come only once the admin token file is in place, so a script that
// waits for either can run otactl at once.
//
// The window between "ports bound" and "admin.token written" is held open deterministically:
// admin.token starts as a named pipe (FIFO) with no writer, so the coordinator's read of it waits
// (in libuv's thread pool; its event loop keeps serving) until this test opens the pipe.

/** The admin token file as a client reads it right now, or why it cannot. */
function tokenFileNow(file: string): string {
  try {
    if (!statSync(file).isFile()) return 'not a regular file';
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<AdminTokenFile>;
    return typeof parsed.token === 'string' && parsed.token.length > 0 ? 'complete' : 'no token';
  } catch (err) {
    return (err as Error).message;
  }
}

t.test('not ready (healthz 503, no ready line) until admin.token is written; then ready', async (t) => {
  const dataDir = path.join(t.testdir(), 'data');
  await fs.mkdir(dataDir, { mode: 0o700 });
  const tokenFile = path.join(dataDir, 'admin.token');
  execFileSync('mkfifo', ['-m', '600', tokenFile]);

  // The token file as the ready line is logged (checked at that moment, synchronously).
  let tokenAtReadyLine: string | null = null;
  const logLines = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
        const entry = JSON.parse(line.replace(/^<\d>/, '')) as { msg?: string };
        if (entry.msg?.startsWith('ota-coordinator ready')) tokenAtReadyLine = tokenFileNow(tokenFile);
      }
      done();
    },
  });
  const logger = createLogger('info', logLines, 'ota-coordinator');
  const httpPort = await freePort();
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort, host: '127.0.0.1' }, {});
  const starting = startCoordinator(config, { logger });
  starting.catch(() => {}); // awaited below

  // The first answer of /healthz: the HTTP port is bound, admin.token cannot have been written.
  const healthz = `http://127.0.0.1:${httpPort}/healthz`;
  let first: Response | null = null;
  while (!first) {
    first = await fetch(healthz).catch(() => null);
    if (!first) await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(tokenFileNow(tokenFile), 'not a regular file', 'admin.token is still the pipe');
  t.equal(first.status, 503, '/healthz is not ok before admin.token is in place');
  t.same(await first.json(), { ok: false, reason: 'starting' });
  const head = await fetch(healthz, { method: 'HEAD' });
  t.equal(head.status, 503, 'HEAD /healthz agrees');
  t.equal(tokenAtReadyLine, null, 'no ready line yet');

  // Open the pipe: the coordinator reads something that is not a token file and writes its own.
  await fs.writeFile(tokenFile, 'not a token file');
  const running = await starting;
  t.teardown(() => running.stop());
  t.equal(tokenAtReadyLine, 'complete', 'the ready line came after admin.token was complete');
  const ready = await fetch(healthz);
  t.equal(ready.status, 200);
  t.same(await ready.json(), { ok: true }, '/healthz is exactly {ok: true} (docs/coordinator.md)');
  t.equal(tokenFileNow(tokenFile), 'complete');
  t.equal((await fs.stat(tokenFile)).mode & 0o777, 0o600, 'admin.token is 0600');

  // What a script does next: otactl with the token file.
  const token = JSON.parse(await fs.readFile(tokenFile, 'utf8')) as AdminTokenFile;
  const admin = await CommandClient.connect({ url: token.mqttUrl, user: token.user, token: token.token });
  t.teardown(() => admin.close());
  t.same(await admin.call('device.ls'), []);
});
