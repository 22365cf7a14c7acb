import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { DeviceFindResult } from '../coordinator/commands/device-rows.js';
import { createTopics } from '../shared/topics.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { openSession } from './helpers/mqtt-session.js';
import { reportOf } from './helpers/reports.js';

// `otactl device find`: the devices list's search and filters (device.find) from the command
// line, as an operator or a fleet script runs it, against a real coordinator whose devices
// reported over MQTT with their own tokens.

const AT = '2026-12-07T10:00:00.000Z';

t.test('otactl device find: search, filters, pages, --json, and bad input named', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  await fs.mkdir(work);
  const { running, admin } = await startInProcessCoordinator(t, dataDir);
  const env = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: dataDir };
  const run = (...args: string[]) => otactl(['device', 'find', ...args], { cwd: work, env });
  const topics = createTopics();

  const devices = [
    ['cam-1', 'hall-a', 'healthy'],
    ['cam-2', 'hall-b', 'failed'],
    ['cam-3', 'hall-a', 'failed'],
    ['door-1', 'gate', null],
  ] as const;
  for (const [id, site, state] of devices) {
    const { token } = await admin.call<{ token: string }>('device.add', { id, labels: { site } });
    if (state === null) continue; // enrolled, never connected
    const s = await openSession(t, running.mqttUrl, id, token, id);
    await s.client.publishAsync(
      topics.reported(id),
      Buffer.from(JSON.stringify(reportOf(id, { det: { state, current: '1.0.0' } }, AT))),
      { qos: 1, retain: true },
    );
  }
  // Reports are written behind, but their models are known to the coordinator once received:
  // wait until all three count (the fleet summary is the coordinator's own count).
  for (let i = 0; i < 200; i++) {
    const found = await admin.call<DeviceFindResult>('device.find', { model: 'det' });
    if (found.total === 3) break;
    await new Promise((r) => setTimeout(r, 25));
  }

  const failed = await run('--state', 'failed');
  t.equal(failed.code, 0, failed.stderr);
  t.match(failed.stdout, /cam-2/);
  t.match(failed.stdout, /cam-3/);
  t.notMatch(failed.stdout, /cam-1|door-1/, 'healthy and silent devices are not failed');
  t.match(failed.stderr, /^1-2 of 2 matching$/m, 'how many, on stderr (stdout stays the table)');

  const hallA = await run('SITE=hall-a', '--state', 'failed', '--model', 'det', '--version', '1.0.0', '--json');
  t.equal(hallA.code, 0, hallA.stderr);
  const parsed = JSON.parse(hallA.stdout) as DeviceFindResult;
  t.same(
    parsed.devices.map((d) => d.id),
    ['cam-3'],
    'key=value exact, the state of that model, at that version',
  );
  t.equal(parsed.total, 1);
  t.same(parsed.choices, { models: ['det'], versions: ['1.0.0'] });

  const first = await run('--limit', '2');
  t.equal(first.code, 0, first.stderr);
  t.match(first.stderr, /^1-2 of 4 matching; the next page: --offset 2 --limit 2$/m);
  const second = await run('--limit', '2', '--offset', '2');
  t.match(second.stdout, /cam-3/);
  t.match(second.stdout, /door-1/);
  t.notMatch(second.stdout, /cam-1|cam-2/);
  t.match(second.stderr, /^3-4 of 4 matching$/m, 'the last page: no next one');

  const offline = await run('--state', 'offline');
  t.match(offline.stdout, /door-1/, 'a device that never connected is offline');

  const none = await run('nobody');
  t.equal(none.code, 0);
  t.equal(none.stdout, '', 'nothing on stdout when nothing matches');
  t.match(none.stderr, /no device matches/);
  const past = await run('--offset', '10');
  t.equal(past.code, 0);
  t.match(past.stderr, /no devices past the first 4 \(--offset 10\)/);

  const badState = await run('--state', 'sleepy');
  t.not(badState.code, 0);
  t.match(badState.stderr, /E_USAGE.*state/s, 'the coordinator names the argument');
  const badLimit = await run('--limit', '0');
  t.not(badLimit.code, 0);
  t.match(badLimit.stderr, /--limit/);
  const tooMany = await run('--limit', '501');
  t.not(tooMany.code, 0);
  t.match(tooMany.stderr, /limit/);
  const badOffset = await run('--offset', '-1');
  t.not(badOffset.code, 0);
  t.match(badOffset.stderr, /--offset/);
});
