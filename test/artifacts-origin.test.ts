import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { syncArtifacts } from '../coordinator/http/artifact-sync.js';
import { goodModel } from '../scripts/tiny-models.js';
import { ArtifactServer } from './helpers/artifact-server.js';
import { COORDINATOR_MAIN } from './helpers/coordinator-process.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// Issue 16: devices may download artifacts from any HTTP origin or CDN (--artifacts-url). The
// coordinator writes that URL into agent configs; `ota-coordinator sync-artifacts` copies its
// content-addressed files into the directory such an origin serves. A real agent then installs
// a release fetched from the origin, never from the coordinator.

t.setTimeout(180_000);
const run = promisify(execFile);

t.test('a real agent installs a release from an origin the artifacts were synced to', async (t) => {
  const origin = await ArtifactServer.start();
  t.teardown(() => origin.stop());
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-origin-'));
  const f = await FleetFixture.create(t, { env: { OTA_ARTIFACTS_URL: origin.url }, dir });
  const model = goodModel(1);
  await f.publish('det', '1.0.0', model, { channel: 'stable', counter: 1 });

  // Synced with the command an operator runs (twice: the second copies nothing).
  const docroot = path.join(dir, 'origin');
  const first = await run(process.execPath, [
    COORDINATOR_MAIN,
    'sync-artifacts',
    '--data',
    f.coordinator.dataDir,
    '--to',
    docroot,
  ]);
  t.match(first.stdout, /^1 copied \(\d+ bytes\), 0 already there$/m, 'the first run copies the release');
  const again = await run(process.execPath, [
    COORDINATOR_MAIN,
    'sync-artifacts',
    '--data',
    f.coordinator.dataDir,
    '--to',
    docroot,
  ]);
  t.match(again.stdout, /^0 copied \(0 bytes\), 1 already there$/m);
  const files = await fs.readdir(path.join(docroot, 'artifacts', 'sha256'));
  t.equal(files.length, 1, 'one file, no temporaries left');
  // The origin serves exactly the synced files (ArtifactServer names each by its own sha256).
  for (const name of files) {
    t.equal(origin.add(await fs.readFile(path.join(docroot, 'artifacts', 'sha256', name))), name, 'content-addressed');
  }

  const added = await f.enrol('cam-1');
  t.equal(
    (added.agentConfig as { artifactsUrl: string }).artifactsUrl,
    origin.url,
    'the agent config names the origin',
  );
  await f.waitForDevice('cam-1', 'det', 'healthy', '1.0.0');
  t.ok(
    origin.requests.some((r) => r.path === `/artifacts/sha256/${files[0]}` && r.status < 300),
    'the agent downloaded from the origin',
  );
});

t.test('sync-artifacts: errors name the problem', async (t) => {
  const dir = t.testdir();
  await t.rejects(syncArtifacts(path.join(dir, 'nope'), path.join(dir, 'to')), {
    code: 'E_IO',
    message: /coordinator's data directory/,
  });
  // A damaged file (its bytes no longer match its name) is not published to the origin.
  const from = path.join(dir, 'data', 'artifacts', 'sha256');
  await fs.mkdir(from, { recursive: true });
  await fs.writeFile(path.join(from, 'a'.repeat(64)), 'not what the name says');
  await fs.writeFile(path.join(from, 'README'), 'ignored: not a sha256 name');
  await t.rejects(syncArtifacts(path.join(dir, 'data'), path.join(dir, 'to')), { code: 'E_IO', message: /hashes to/ });
  t.same(await fs.readdir(path.join(dir, 'to', 'artifacts', 'sha256')), [], 'nothing left at the origin');
  const usage = await run(process.execPath, [COORDINATOR_MAIN, 'sync-artifacts']).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.match(usage, { code: 2, stderr: /--to/ }, 'the target is required');
  const failed = await run(process.execPath, [
    COORDINATOR_MAIN,
    'sync-artifacts',
    '--data',
    path.join(dir, 'data'),
    '--to',
    path.join(dir, 'to'),
  ]).catch((e: { code: number; stderr: string }) => e);
  t.match(failed, { code: 1, stderr: /error E_IO: .*hashes to/ });
});
