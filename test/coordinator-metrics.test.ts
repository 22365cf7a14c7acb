import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import { startCoordinator } from '../coordinator/service.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { ROLLOUT_STATUSES, type RolloutSummary } from '../shared/messages.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { TestSigners } from './helpers/signing.js';

// /metrics of a real coordinator (in process: real Aedes, real SQLite, real HTTP), checked
// against what the coordinator itself says through its commands (rollout.ls, audit.verify), and
// the scrape checked by Prometheus's own linter, promtool.

const topics = createTopics();
const silent = createLogger('silent', process.stdout, 'ota-coordinator');

async function coordinator(t: Test) {
  const { running, token, admin, dataDir } = await startInProcessCoordinator(t);
  // A release det@1.0.0 to roll out.
  const signers = new TestSigners();
  await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
  const bytes = goodModel(1);
  const file = path.join(dataDir, '..', 'm.onnx');
  await fs.writeFile(file, bytes);
  const envelope = signers.release('det', '1.0.0', bytes, { counter: 1 });
  await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file });
  return { running, token, admin };
}

async function scrape(httpUrl: string): Promise<string> {
  const res = await fetch(`${httpUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** The value of one sample (`name` or `name{labels}`), NaN when absent. */
function sample(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return Number.NaN;
}

/** Scrapes until `series` has `value`: for what the coordinator records when a message arrives. */
async function until(httpUrl: string, series: string, value: number): Promise<string> {
  for (;;) {
    const text = await scrape(httpUrl);
    if (sample(text, series) === value) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A device session that says it is online, as the agent's does. */
async function online(url: string, deviceId: string, token: string) {
  const device = await mqtt.connectAsync(url, {
    clientId: deviceId,
    username: deviceId,
    password: token,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  const status = { online: true, ts: new Date().toISOString() };
  await device.publishAsync(topics.status(deviceId), encodePayload(status), { qos: 1 });
  return device;
}

/** The rollouts gauge must equal the coordinator's own list of rollouts, for every status. */
async function checkRolloutsGauge(t: Test, admin: CommandClient, httpUrl: string, label: string) {
  const listed = await admin.call<RolloutSummary[]>('rollout.ls');
  const text = await scrape(httpUrl);
  t.same(
    Object.fromEntries(ROLLOUT_STATUSES.map((s) => [s, sample(text, `ota_rollouts{status="${s}"}`)])),
    Object.fromEntries(ROLLOUT_STATUSES.map((s) => [s, listed.filter((r) => r.status === s).length])),
    `${label}: ota_rollouts{status} is rollout.ls counted per status`,
  );
  return text;
}

t.test(
  'rollouts per status follow every transition; a halt is counted once; audit rows follow the chain',
  async (t) => {
    const { running, admin } = await coordinator(t);
    const { httpUrl } = running;
    await checkRolloutsGauge(t, admin, httpUrl, 'no rollout yet');

    const cam = await admin.call<{ token: string }>('device.add', { id: 'cam-1' });
    // cam-1 online (a device session, as the agent opens it), so its wave waits for it.
    const device = await online(running.mqttUrl, 'cam-1', cam.token);
    t.teardown(() => device.endAsync(true));
    await until(httpUrl, 'ota_connected_devices', 1);

    await admin.call('rollout.create', { id: 'r-1', model: 'det', version: '1.0.0', devices: ['cam-1'], waves: '100' });
    let text = await checkRolloutsGauge(t, admin, httpUrl, 'created');
    t.equal(sample(text, 'ota_rollouts{status="running"}'), 1, 'r-1 running');

    await admin.call('rollout.halt', { id: 'r-1', reason: 'looks wrong' });
    text = await checkRolloutsGauge(t, admin, httpUrl, 'halted');
    t.equal(sample(text, 'ota_rollouts{status="halted"}'), 1, 'r-1 halted');
    t.equal(sample(text, 'ota_rollout_halts_total'), 1, 'one halt');

    // While it stays halted, its device goes offline (as an agent stopping says it): a new
    // summary (halted again), not a halt.
    await device.publishAsync(topics.status('cam-1'), encodePayload({ online: false, ts: new Date().toISOString() }), {
      qos: 1,
    });
    await until(httpUrl, 'ota_connected_devices', 0);
    const status = await admin.call<{ devices: { id: string; online: boolean }[] }>('rollout.status', {
      id: 'r-1',
    });
    t.match(status.devices, [{ id: 'cam-1', online: false }], 'the rollout recorded the device offline');
    text = await checkRolloutsGauge(t, admin, httpUrl, 'halted, device gone');
    t.equal(sample(text, 'ota_rollout_halts_total'), 1, 'still one halt');

    // Resumed: its only device is offline, which never blocks a wave.
    await admin.call('rollout.resume', { id: 'r-1' });
    await checkRolloutsGauge(t, admin, httpUrl, 'resumed');

    // A second rollout, halted and aborted: another halt, and every status moved.
    const cam2 = await admin.call<{ token: string }>('device.add', { id: 'cam-2' });
    const device2 = await online(running.mqttUrl, 'cam-2', cam2.token);
    t.teardown(() => device2.endAsync(true));
    await until(httpUrl, 'ota_connected_devices', 1);
    await admin.call('rollout.create', { id: 'r-2', model: 'det', version: '1.0.0', devices: ['cam-2'], waves: '100' });
    await checkRolloutsGauge(t, admin, httpUrl, 'second rollout');
    await admin.call('rollout.halt', { id: 'r-2', reason: 'stop' });
    text = await checkRolloutsGauge(t, admin, httpUrl, 'second halted');
    t.equal(sample(text, 'ota_rollout_halts_total'), 2, 'two halts');
    await admin.call('rollout.abort', { id: 'r-2' });
    text = await checkRolloutsGauge(t, admin, httpUrl, 'second aborted');
    t.equal(sample(text, 'ota_rollouts{status="aborted"}'), 1, 'r-2 aborted');
    t.equal(sample(text, 'ota_rollouts{status="halted"}'), 0, 'none halted');
    const halts = (await admin.call<{ action: string }[]>('audit.ls', { limit: 1000 })).filter(
      (e) => e.action === 'rollout.halted',
    ).length;
    t.equal(sample(text, 'ota_rollout_halts_total'), halts, `ota_rollout_halts_total is the ${halts} halts audited`);

    // Authentication failures are audited by their own writer; the gauge follows them too.
    await t.rejects(
      CommandClient.connect({ url: running.mqttUrl, user: 'admin', token: 'wrong', connectTimeoutMs: 3_000 }),
      { code: 'E_AUTH' },
    );
    const verdict = await admin.call<{ ok: boolean; count: number }>('audit.verify');
    t.ok(verdict.ok);
    text = await scrape(httpUrl);
    t.equal(sample(text, 'ota_auth_failures_total{transport="mqtt"}'), 1);
    t.equal(
      sample(text, 'ota_audit_rows'),
      verdict.count,
      `ota_audit_rows is the chain's ${verdict.count} rows (bootstrap and auth failure rows included)`,
    );
  },
);

t.test('audit rows after a restart: the chain counted again', async (t) => {
  const dataDir = path.join(t.testdir(), 'data');
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {});
  const first = await startCoordinator(config, { logger: silent });
  t.equal(sample(await scrape(first.httpUrl), 'ota_audit_rows'), 1, 'first start: the admin operator row');
  await first.stop();
  const second = await startCoordinator(config, { logger: silent });
  t.teardown(() => second.stop());
  t.equal(sample(await scrape(second.httpUrl), 'ota_audit_rows'), 1);
});

/** promtool on PATH (Debian package `prometheus`), or null. */
function findPromtool(): string | null {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.error ? null : 'promtool';
}

const promtool = findPromtool();
const ciSet = (process.env.CI ?? '') !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const noPromtool =
  'promtool is not installed: install the Debian package prometheus (`apt-get install -y prometheus`), which provides it';

// Outside CI a missing promtool skips this check (saying why); under CI it is a failure.
t.test(
  'a live scrape passes `promtool check metrics`',
  { skip: promtool || ciSet ? false : `${noPromtool}; skipped because CI is not set` },
  async (t) => {
    if (!promtool) {
      t.fail(`${noPromtool} (CI is set: this check must run)`);
      return;
    }
    const { running, admin } = await coordinator(t);
    await admin.call('device.add', { id: 'cam-1' });
    await admin.call('rollout.create', { id: 'r-1', model: 'det', version: '1.0.0', devices: ['cam-1'], waves: '100' });
    // Traffic for every metric: a download, a refused login.
    await fetch(`${running.httpUrl}/artifacts/sha256/${'0'.repeat(64)}`);
    await t.rejects(
      CommandClient.connect({ url: running.mqttUrl, user: 'admin', token: 'wrong', connectTimeoutMs: 3_000 }),
    );
    const text = await scrape(running.httpUrl);
    for (const name of ['ota_connected_devices', 'ota_reports_total', 'ota_rollouts', 'ota_audit_rows']) {
      t.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is in the scrape`);
    }
    const checked = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    t.equal(checked.status, 0, `promtool check metrics: ${checked.stdout}${checked.stderr}`.trim());
  },
);
