import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { MetricsQueryView } from '../coordinator/cli/commands/metrics.js';
import { goodModel } from '../scripts/tiny-models.js';
import { otactl, startOtactl } from './helpers/cli.js';
import { FleetFixture } from './helpers/fleet-fixture.js';
import { exactQuantile } from './helpers/quantiles.js';

// Device metrics end to end, all real: a coordinator process, an agent process, and an
// application process that loads the device's current model with onnxruntime, runs inferences
// and reports each one on the agent's metrics socket. What `otactl metrics` shows is checked
// against the exact latencies the application measured; kill -9 of the agent and of the
// coordinator lose nothing that was closed (agent) or acknowledged (coordinator).

t.setTimeout(300_000);

const APP = fileURLToPath(new URL('../dist/scripts/metrics-app.js', import.meta.url));
const WINDOW_SECONDS = 2;

interface AppRun {
  version: string;
  latencies: number[];
  stats: { sent: number; dropped: number; refused: number };
}

function runApp(stateDir: string, socket: string, count: number, extra: string[] = []): Promise<AppRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [APP, '--state-dir', stateDir, '--model', 'det', '--socket', socket, '--count', String(count), ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`metrics-app exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1) as string) as AppRun);
    });
  });
}

t.test('application inferences reach otactl metrics; kill -9 loses at most the open window', async (t) => {
  const f = await FleetFixture.create(t);
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  const stateDir = path.join(f.dir, 'cam-1-state');
  const socket = path.join(stateDir, 'metrics.sock');
  await f.enrol('cam-1', { config: { metrics: { windowSeconds: WINDOW_SECONDS } } });
  await f.waitForDevice('cam-1', 'det', 'healthy', '1.0.0');

  const env = { OTA_URL: f.coordinator.mqttUrl, OTA_USER: 'admin', OTA_TOKEN: f.coordinator.admin().token };
  const query = async (...args: string[]): Promise<MetricsQueryView> => {
    const r = await otactl(['metrics', '--model', 'det', '--json', ...args], { env });
    if (r.code !== 0) throw new Error(`otactl metrics exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as MetricsQueryView;
  };
  const samplesNow = async (...args: string[]) => (await query(...args)).rows.reduce((n, r) => n + r.samples, 0);
  const waitForSamples = async (want: number, ...args: string[]) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const have = await samplesNow(...args);
      if (have >= want) return have;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${want} samples (have ${have})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  // The probe's own latency arrives as the `probe` source once the window closes.
  await waitForSamples(1, '--source', 'probe');
  t.pass('the health probe latency is reported');

  const first = await runApp(stateDir, socket, 400, ['--error-every', '50']);
  t.equal(first.version, '1.0.0', 'the application ran the current version');
  t.match(first.stats, { sent: 400, dropped: 0, refused: 0 }, 'sent, none refused');
  const seen = await waitForSamples(400);
  t.equal(seen, 400, 'every observation counted once');
  const view = await query();
  t.equal(view.rows.length, 1);
  const row = view.rows[0];
  t.match(row, { version: '1.0.0', devices: 1, samples: 400, errors: 8 });
  t.equal(row?.errorRate, 8 / 400);
  const accuracy = row?.latencyMs?.relativeAccuracy ?? 1;
  for (const [q, key] of [
    [0.5, 'p50'],
    [0.95, 'p95'],
    [0.99, 'p99'],
  ] as const) {
    const want = exactQuantile(first.latencies, q);
    const got = row?.latencyMs?.[key] as number;
    t.ok(Math.abs(got - want) <= accuracy * want + 1e-9, `${key}: ${got} within ${accuracy} of the exact ${want}`);
  }
  t.equal(row?.confidence?.samples, 400, 'every observation had a confidence');

  // /metrics has fleet-wide aggregates only: counts by source, no device or version label.
  const scrape = await (await fetch(`${f.coordinator.httpUrl}/metrics`)).text();
  const appObservations = Number(/^ota_device_observations_total\{source="app"\} (\d+)/m.exec(scrape)?.[1]);
  t.equal(appObservations, 400, '/metrics counts the application observations');
  t.match(scrape, /^ota_device_inference_errors_total\{source="app"\} 8$/m);
  t.notMatch(scrape, /cam-1|1\.0\.0"/, 'no device id or version in a label');

  // --watch: the query again every interval, one JSON document per line with --json; Ctrl-C ends it.
  const watch = startOtactl(['metrics', '--model', 'det', '--watch', '--json', '--interval-ms', '100'], { env });
  await watch.waitForStdout(/"samples":400[^\n]*\n[^\n]*"samples":400/);
  watch.child.kill('SIGINT');
  const watched = await watch.result;
  t.equal(watched.code, 130, 'Ctrl-C stops watching (exit 130)');

  // The human view says the same.
  const text = await otactl(['metrics', '--model', 'det'], { env });
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /1\.0\.0\s+│?\s*1\s+│?\s*400/, 'one device, 400 samples');

  // kill -9 of the agent while a window is open: closed windows are on disk, the open one is at
  // most what is lost. The batch sent just before the kill is all errors, so the counts say
  // whether it arrived; the batches before and after it must arrive whole.
  await runApp(stateDir, socket, 100, ['--error-every', '1']);
  await f.agents.get('cam-1')?.kill9();
  const restarted = f.startAgent('cam-1');
  await restarted.waitForLog((l) => l.msg === 'metrics socket listening');
  const third = await runApp(stateDir, socket, 150);
  t.equal(third.stats.dropped, 0, 'the application could report every observation');
  const good = async () => {
    const rows = (await query()).rows;
    const samples = rows.reduce((n, x) => n + x.samples, 0);
    const errors = rows.reduce((n, x) => n + x.errors, 0);
    return { ok: samples - errors, errors };
  };
  const deadline = Date.now() + 60_000;
  let counts = await good();
  while (counts.ok < 392 + 150 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    counts = await good();
  }
  t.equal(counts.ok, 392 + 150, 'the windows before and after the kill arrived whole, once');
  t.ok(
    counts.errors === 8 || counts.errors === 108,
    `the killed window arrived whole or not at all (errors ${counts.errors})`,
  );

  // A coordinator restart loses nothing acknowledged: the agent deletes a summary from its outbox
  // only after the PUBACK, which the coordinator gives after the commit. The coordinator is
  // killed the moment the agent saw the acknowledgement, with no query in between (a query
  // commits what is queued), and the total must be what the application sent.
  const before = counts.ok + counts.errors;
  const agent = restarted;
  const acksBefore = agent.logs.filter((l) => l.msg === 'metrics summary acknowledged').length;
  const late = await runApp(stateDir, socket, 50);
  t.equal(late.stats.dropped, 0);
  await agent.waitForLog(
    (l) =>
      l.msg === 'metrics summary acknowledged' &&
      agent.logs.filter((x) => x.msg === 'metrics summary acknowledged').length > acksBefore,
  );
  await f.restartCoordinator('SIGKILL');
  const env2 = { ...env, OTA_URL: f.coordinator.mqttUrl, OTA_TOKEN: f.coordinator.admin().token };
  const r = await otactl(['metrics', '--model', 'det', '--json'], { env: env2 });
  t.equal(r.code, 0, r.stderr);
  const afterRestart = JSON.parse(r.stdout) as MetricsQueryView;
  t.equal(
    afterRestart.rows.reduce((n, x) => n + x.samples, 0),
    before + 50,
    'every acknowledged summary is there after kill -9 of the coordinator',
  );
  const outbox = path.join(stateDir, 'metrics-outbox');

  // Offline: closed windows wait in the agent's outbox, through a kill -9 of the agent, and
  // arrive once the coordinator is back (an offline device catches up).
  const jsonFiles = () => readdirSync(outbox).filter((n) => n.endsWith('.json')).length;
  await f.restartCoordinator('SIGKILL', async () => {
    const offline = await runApp(stateDir, socket, 70);
    t.equal(offline.stats.dropped, 0);
    await f.waitFor('a closed window in the outbox', () => jsonFiles() > 0);
    await f.agents.get('cam-1')?.kill9();
    const again = f.startAgent('cam-1');
    await again.waitForLog((l) => l.msg === 'metrics socket listening');
  });
  const env3 = { ...env, OTA_URL: f.coordinator.mqttUrl, OTA_TOKEN: f.coordinator.admin().token };
  const deadline2 = Date.now() + 60_000;
  let total = 0;
  for (;;) {
    const q = await otactl(['metrics', '--model', 'det', '--json'], { env: env3 });
    total = (JSON.parse(q.stdout) as MetricsQueryView).rows.reduce((n, x) => n + x.samples, 0);
    if (total >= before + 50 + 70 || Date.now() > deadline2) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(total, before + 50 + 70, 'the window closed while offline arrived after the kill -9 and the reconnect');
});
