import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import type { Envelope } from '../shared/envelope.js';
import { createLogger } from '../shared/logger.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';

// Moving a channel re-targets every device that follows it at once. Above 5 devices that needs
// --yes, whichever command moves it: `channel set`, `release publish --channel`, or a fleet
// script on the command API. A refusal changes nothing: no release, no channel, no desired state.

const _silent = createLogger('silent', process.stdout, 'ota-coordinator');
const json = <T = unknown>(text: string): T => JSON.parse(text) as T;

t.test('a channel move above 5 devices needs --yes, with one rule and one message', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  await fs.mkdir(work);
  const at = (f: string) => path.join(work, f);
  const { admin } = await startInProcessCoordinator(t, dataDir);
  const env = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: dataDir };
  const run = (args: string[]) => otactl(args, { cwd: work, env });

  await fs.writeFile(at('v1.onnx'), goodModel(1));
  await fs.writeFile(at('v2.onnx'), goodModel(2));
  await fs.writeFile(at('probe.json'), JSON.stringify(goodProbe()));
  t.equal((await run(['keygen', '--out', at('release.key')])).code, 0);
  t.equal((await run(['key', 'add', at('release.key.pub')])).code, 0);
  const devices = ['cam-1', 'cam-2', 'cam-3', 'cam-4', 'cam-5', 'cam-6'];
  for (const id of devices) await admin.call('device.add', { id });
  const publish = (version: string, file: string, extra: string[]) =>
    run([
      'release',
      'publish',
      '--model',
      'det',
      '--version',
      version,
      '--file',
      at(file),
      '--key',
      at('release.key'),
      '--probe',
      at('probe.json'),
      ...extra,
    ]);
  /** What the coordinator holds: releases, channels, and every device's desired release of det. */
  const state = async () => ({
    releases: (await admin.call<{ id: string }[]>('release.ls')).map((r) => r.id).sort(),
    channels: (await admin.call<{ id: string; releaseId: string }[]>('channel.ls')).map(
      (c) => `${c.id}=${c.releaseId}`,
    ),
    desired: await Promise.all(
      devices.map(async (id) => {
        const d = await admin.call<{ desired: { model: string; releaseId: string }[] }>('device.show', { id });
        return d.desired.map((x) => `${id}:${x.releaseId}`).join(',');
      }),
    ),
  });
  const nothing = { releases: [], channels: [], desired: ['', '', '', '', '', ''] };

  // release publish --channel stable, without --yes: refused before the release exists.
  const refused = await publish('1.0.0', 'v1.onnx', ['--channel', 'stable']);
  t.equal(refused.code, 2, 'a usage error: exit 2');
  t.match(refused.stderr, /error E_USAGE: moving channel stable of det to det@1\.0\.0 re-targets 6 devices at once/);
  t.match(refused.stderr, /nothing was changed: confirm with --yes/);
  t.same(await state(), nothing, 'no release, no channel, no device re-targeted');

  // channel set: the same rule and, for the same move, the same message.
  t.equal((await publish('1.0.0', 'v1.onnx', [])).code, 0, 'published without a channel');
  const set = await run(['channel', 'set', 'det', 'stable', '1.0.0']);
  t.equal(set.code, 2);
  const errorLine = (stderr: string) => stderr.split('\n').find((l) => l.startsWith('error '));
  t.equal(errorLine(set.stderr), errorLine(refused.stderr), 'channel set and release publish say the same');
  t.same(await state(), { ...nothing, releases: ['det@1.0.0'] });

  // With --yes both move the channel and all six devices.
  const moved = json<{ retargeted: string[] }>(
    (await run(['channel', 'set', 'det', 'stable', '1.0.0', '--yes', '--json'])).stdout,
  );
  t.equal(moved.retargeted.length, 6);
  const confirmed = await publish('2.0.0', 'v2.onnx', ['--channel', 'stable', '--yes', '--json']);
  t.equal(confirmed.code, 0, confirmed.stderr);
  t.match(json(confirmed.stdout), {
    id: 'det@2.0.0',
    channel: { id: 'det/stable', releaseId: 'det@2.0.0' },
    retargeted: 6,
  });
  t.same(
    (await state()).desired,
    devices.map((id) => `${id}:det@2.0.0`),
  );

  // A fleet script on the command API gets the same refusal. The artifact is already on the
  // coordinator (3.0.0 has 2.0.0's bytes), so only the envelope is sent.
  const signed = await run([
    'release',
    'sign',
    '--model',
    'det',
    '--version',
    '3.0.0',
    '--file',
    at('v2.onnx'),
    '--key',
    at('release.key'),
    '--probe',
    at('probe.json'),
    '--out',
    at('v3.envelope.json'),
  ]);
  t.equal(signed.code, 0, signed.stderr);
  const envelope = json<Envelope>(await fs.readFile(at('v3.envelope.json'), 'utf8'));
  await t.rejects(admin.call('release.publish', { envelope, channel: 'stable' }), {
    code: 'E_USAGE',
    message: /re-targets 6 devices at once .*"yes": true/,
  });
  t.same((await state()).releases, ['det@1.0.0', 'det@2.0.0'], 'not published');
  t.match(await admin.call('release.publish', { envelope, channel: 'stable', yes: true }), {
    id: 'det@3.0.0',
    retargeted: 6,
  });

  // Five devices or fewer move without --yes (the limit is unchanged).
  await admin.call('device.rm', { id: 'cam-6' });
  t.equal((await run(['channel', 'set', 'det', 'stable', '2.0.0'])).code, 0, 'five devices: no --yes needed');
});
