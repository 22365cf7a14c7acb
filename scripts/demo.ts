#!/usr/bin/env node
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { goodModel, goodProbe, wrongOutputsModel } from './tiny-models.js';

/**
 * `npm run demo`: the whole loop on one machine, through the same commands a person types.
 * A coordinator with a fresh data directory, six enrolled devices running real `ota-agent`
 * processes, a signed model v1 on `stable`, v2 on `canary` rolled out in waves 1/50/100 with a
 * manual gate (approved, then promoted to completion), then a bad v3 whose inference probe
 * fails: the canary rolls back, the rollout halts and is aborted with revert. The audit chain is
 * verified and everything is shut down. At the gate, an example application on every device
 * reports its inferences, and `otactl metrics` shows the canary's version beside the fleet's. Exits non-zero when any step does not behave as shown.
 *
 * The dashboard is served by the coordinator all along (its URL is printed at the start): open it
 * to watch the waves live. `npm run demo -- --keep` leaves everything running at the end, so the
 * fleet can be explored in the browser, until Ctrl-C.
 */
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const OTACTL = here('../coordinator/cli/main.js');
const AGENT = here('../agent/main.js');
const COORDINATOR = here('../coordinator/main.js');
const METRICS_APP = here('./metrics-app.js');
const DEVICES = ['cam-1', 'cam-2', 'cam-3', 'cam-4', 'cam-5', 'cam-6'];
const STEP_TIMEOUT_MS = 60_000;
const KEEP = process.argv.includes('--keep');

const dir = mkdtempSync(path.join(os.tmpdir(), 'ota-demo-'));
const at = (f: string) => path.join(dir, f);
const dataDir = at('coordinator-data');
const children: ChildProcess[] = [];
let failures = 0;
const started = Date.now();

const say = (text: string) => process.stdout.write(`${text}\n`);
const shown = (text: string) => text.replaceAll(`${dir}/`, '').replaceAll(dir, '.');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs otactl as a person would, shows the command and its output, checks the exit code. */
async function otactl(title: string | null, args: string[], expectExit = 0, quiet = false): Promise<Result> {
  if (title) say(`\n== ${title}`);
  if (!quiet) say(`$ otactl ${shown(args.join(' '))}`);
  const r = await new Promise<Result>((resolve) => {
    const child = spawn(process.execPath, [OTACTL, ...args], {
      env: { ...process.env, NO_COLOR: '1', OTA_DATA: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  if (!quiet) {
    if (r.stdout.trim()) say(shown(r.stdout.trimEnd()));
    if (r.stderr.trim()) say(shown(r.stderr.trimEnd()));
  }
  if (r.code !== expectExit) {
    failures++;
    say(`!! exit ${r.code}, expected ${expectExit}`);
    if (quiet) say(shown(`${r.stdout}${r.stderr}`.trimEnd()));
  }
  return r;
}

async function json<T>(args: string[]): Promise<T> {
  const r = await otactl(null, [...args, '--json'], 0, true);
  return JSON.parse(r.stdout) as T;
}

/** Polls until `check` holds (or fails the step after the timeout). */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = STEP_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  failures++;
  say(`!! timed out waiting for ${what}`);
  throw new Error(`timed out waiting for ${what}`);
}

interface DeviceRow {
  id: string;
  online: boolean;
  models: Record<string, { state: string; version: string | null; current: string | null }>;
}

async function fleetOn(version: string): Promise<boolean> {
  const devices = await json<DeviceRow[]>(['device', 'ls']);
  return devices.length === DEVICES.length && devices.every((d) => d.models.detector?.current === version);
}

function startCoordinator(): Promise<{ mqtt: string; http: string }> {
  const child = spawn(
    process.execPath,
    [COORDINATOR, '--data', dataDir, '--host', '127.0.0.1', '--mqtt-port', '0', '--http-port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OTA_LOG_LEVEL: 'info' } },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error('the coordinator did not become ready in 30 s')), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (const line of buffer.split('\n')) {
        if (!line.includes('ota-coordinator ready')) continue;
        clearTimeout(timer);
        const ready = JSON.parse(line.replace(/^<\d>/, '')) as { mqtt: string; http: string };
        resolve(ready);
      }
      buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
    });
    child.on('exit', (code) => reject(new Error(`the coordinator exited with ${code}`)));
  });
}

function startAgent(id: string): void {
  // Without RUNTIME_DIRECTORY (set when the demo runs under systemd): each device's metrics
  // socket is then in its own state directory, not one shared path.
  const { RUNTIME_DIRECTORY: _shared, ...env } = process.env;
  const child = spawn(process.execPath, [AGENT, '--config', at(`${id}.agent.json`)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  });
  children.push(child);
}

/**
 * The example application (scripts/metrics-app.ts) on one device: it loads the device's current
 * model with onnxruntime and reports each inference on the agent's metrics socket.
 */
function runApp(id: string, count: number): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      METRICS_APP,
      '--state-dir',
      at(`${id}-state`),
      '--model',
      'detector',
      '--socket',
      at(`${id}-state/metrics.sock`),
      '--count',
      String(count),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`metrics-app on ${id}: ${stderr.trim()}`))));
  });
}

async function shutdown(): Promise<void> {
  // Agents first (clean offline status), then the coordinator; SIGKILL whatever hangs.
  const stop = async (list: ChildProcess[]) =>
    Promise.all(
      list
        .filter((c) => c.exitCode === null && c.signalCode === null)
        .map(
          (c) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
              c.once('exit', () => {
                clearTimeout(timer);
                resolve();
              });
              c.kill('SIGTERM');
            }),
        ),
    );
  await stop(children.slice(1));
  await stop(children.slice(0, 1));
}

async function main(): Promise<void> {
  say('ota-models demo: a coordinator, six devices with real agents, three releases.');
  writeFileSync(at('probe.json'), JSON.stringify(goodProbe(), null, 2));
  writeFileSync(at('detector-v1.onnx'), goodModel(1));
  writeFileSync(at('detector-v2.onnx'), goodModel(2));
  writeFileSync(at('detector-v3.onnx'), wrongOutputsModel());

  say('\n== start the coordinator (fresh data directory, embedded broker and database)');
  const ready = await startCoordinator();
  say(`coordinator ready: mqtt ${ready.mqtt}, http ${ready.http}`);
  say(`dashboard: ${ready.http}/ (operator admin; token: ${at('coordinator-data/admin.token')})`);

  await otactl('create a release key (kept offline) and trust it', ['keygen', '--out', at('release.key')]);
  await otactl(null, ['key', 'add', at('release.key.pub'), '--name', 'demo release key']);

  say('\n== enrol six devices; each gets its agent config, and its agent starts');
  for (const id of DEVICES) {
    await otactl(
      null,
      ['device', 'add', id, '--label', 'site=demo', '--agent-config', at(`${id}.agent.json`)],
      0,
      id !== 'cam-1',
    );
    // Each demo device keeps its models in its own directory.
    const config = JSON.parse(readFileSync(at(`${id}.agent.json`), 'utf8')) as Record<string, unknown>;
    // Metrics windows of 2 s instead of a minute, so the demo's summaries arrive at once.
    writeFileSync(
      at(`${id}.agent.json`),
      JSON.stringify({ ...config, stateDir: at(`${id}-state`), metrics: { windowSeconds: 2 } }),
      { mode: 0o600 },
    );
    startAgent(id);
  }
  say(`(${DEVICES.length} devices enrolled, agents started)`);

  const sign = (version: string) => [
    'release',
    'publish',
    '--model',
    'detector',
    '--version',
    version,
    '--file',
    at(`detector-v${version[0]}.onnx`),
    '--probe',
    at('probe.json'),
    '--key',
    at('release.key'),
  ];
  // Six devices follow stable: moving it re-targets all of them at once, which needs --yes.
  await otactl('sign model v1 locally, upload it and put it on the stable channel', [
    ...sign('1.0.0'),
    '--channel',
    'stable',
    '--yes',
  ]);
  await until('every device healthy on 1.0.0', () => fleetOn('1.0.0'));
  await otactl('every device runs v1', ['device', 'ls']);

  await otactl('publish v2 to the canary channel', [...sign('2.0.0'), '--channel', 'canary']);
  await otactl('a group of all demo devices', ['group', 'create', 'demo', '--selector', 'site=demo']);
  await otactl('roll v2 out in waves 1% / 50% (manual gate) / 100%, no failure tolerated', [
    'rollout',
    'create',
    '--id',
    'demo-v2',
    '--model',
    'detector',
    '--version',
    '2.0.0',
    '--group',
    'demo',
    '--waves',
    '1,50:manual,100',
    '--max-failure-rate',
    '0',
  ]);
  await until('the canary wave to finish at the gate', async () => {
    const s = await json<{ summary: { status: string } }>(['rollout', 'status', 'demo-v2']);
    return s.summary.status === 'waiting_approval';
  });
  await otactl('the canary is healthy; the rollout waits at the gate', ['rollout', 'status', 'demo-v2']);
  say('\n== an application on every device runs 300 inferences and reports each one to its agent');
  await Promise.all(DEVICES.map((id) => runApp(id, 300)));
  await until('the summaries of all six devices', async () => {
    const r = await json<{ rows: { samples: number }[] }>(['metrics', '--model', 'detector', '--since', '10m']);
    return r.rows.reduce((n, row) => n + row.samples, 0) >= DEVICES.length * 300;
  });
  await otactl('the canary (v2) beside the rest of the fleet (v1): latency, confidence, errors', [
    'metrics',
    '--model',
    'detector',
    '--since',
    '10m',
  ]);
  await otactl('approve the next wave', ['rollout', 'approve', 'demo-v2']);
  await otactl('promote: approve every remaining wave', ['rollout', 'promote', 'demo-v2'], 0);
  await otactl('watch it to completion', ['rollout', 'status', 'demo-v2', '--watch'], 0);
  await until('every device healthy on 2.0.0', () => fleetOn('2.0.0'));
  await otactl('stable now points at v2', ['channel', 'ls']);

  await otactl('publish a bad v3 (its outputs fail the signed probe)', sign('3.0.0'));
  await otactl('roll v3 out with waves 20% / 100%', [
    'rollout',
    'create',
    '--id',
    'demo-v3',
    '--model',
    'detector',
    '--version',
    '3.0.0',
    '--group',
    'demo',
    '--waves',
    '20,100',
    '--max-failure-rate',
    '0',
  ]);
  await otactl(
    'the canaries roll back and the rollout halts (watch exits 1)',
    ['rollout', 'status', 'demo-v3', '--watch'],
    1,
  );
  await otactl('abort it, reverting the devices it touched', ['rollout', 'abort', 'demo-v3', '--policy', 'revert']);
  await until('every device back on 2.0.0', () => fleetOn('2.0.0'));
  await otactl('the fleet runs v2; the canaries never stopped serving it', ['device', 'ls']);
  await otactl('the audit trail of the bad rollout', ['audit', 'ls', '--rollout', 'demo-v3']);
  await otactl('verify the audit chain', ['audit', 'verify']);
}

let crashed: unknown = null;
try {
  await main();
} catch (err) {
  crashed = err;
}
if (KEEP && !crashed) {
  say('\n== left running (--keep): explore the fleet in the dashboard above; Ctrl-C stops everything');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
}
say('\n== shut everything down');
await shutdown();
rmSync(dir, { recursive: true, force: true });
const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (crashed || failures > 0) {
  say(
    `\ndemo: FAILED (${failures} step(s) did not behave as shown${crashed ? `; ${(crashed as Error).message}` : ''})`,
  );
  process.exitCode = 1;
} else {
  say(`\ndemo: every step behaved as shown (${seconds} s); nothing left running.`);
}
