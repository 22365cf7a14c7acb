#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Table from 'cli-table3';
import mqtt from 'mqtt';
import type { Browser, CDPSession, Page } from 'playwright-core';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { COORDINATOR_NODE_FLAGS } from '../../coordinator/node-flags.js';
import type { RolloutSummary } from '../../shared/messages.js';
import { createTopics } from '../../shared/topics.js';
import { FleetSim, fleetSimWorkers } from '../fleet-sim/controller.js';
import { deviceIds, enrolDevices } from '../fleet-sim/enrol.js';
import { chromiumPath, launchChromium } from './chromium.js';
import {
  log,
  machine,
  openFilesLimit,
  parseArgs,
  percentile,
  printResult,
  revision,
  round,
  sleep,
  tryProcStats,
  wallMs,
} from './common.js';
import { CoordinatorProcess } from './coordinator.js';
import { summarizeProfile } from './profile-summary.js';
import { rawCall } from './raw-call.js';
import { BenchPublisher } from './release.js';
import { RolloutObserver } from './rollout-observer.js';

/**
 * `npm run bench:dashboard -- --devices N`: the dashboard (dashboard/, served by the coordinator)
 * open in Debian's chromium while N simulated devices (scripts/fleet-sim: real MQTT connections)
 * go through a rollout whose last wave holds 90% of the fleet (9,000 devices at N = 10,000):
 *
 *  1. one `ota-coordinator` (127.0.0.1, free ports, fresh data), N devices enrolled and connected;
 *  2. chromium (playwright-core, executablePath) opens `/`, signs in as the admin through the
 *     form and waits for "live" and a fleet summary counting all N devices online: the page's
 *     load, its longest task and its JS heap at idle;
 *  3. a rollout with waves `--waves` (default 1,10,100:manual) is created, the page goes to
 *     `#/rollouts/<id>`; once the first two waves are done and the rollout waits at the gate
 *     before the big wave, the bench approves it (command API) and watches the page until the
 *     wave's bar shows every device healthy.
 *
 * Measured during the big wave:
 *  - report -> screen: the page's own figures (`window.otaDashboard.state.latencies`, see
 *    dashboard/src/fleet-state.ts): for every report the page applied (the page follows the
 *    devices on screen only: the 50 rows of the wave's first page), the report's `ts` (set by
 *    the device when it made the report) -> the effect after the render that included it. The
 *    devices and the page share this machine's clock. Drained every `--sample-ms`;
 *  - cross-check, independent of the page's code: the simulator's send time of each `healthy`
 *    report (its trace) -> the moment a MutationObserver saw the wave bar's healthy count reach
 *    that report's rank (the k-th healthy report sent is matched with the count reaching k). This
 *    goes through the coordinator's decision and its rollout summary, as the bar does;
 *  - long tasks: a `longtask` PerformanceObserver installed before the page's scripts
 *    (addInitScript, buffered), entries that started after the approval;
 *  - JS heap: CDP Performance.getMetrics JSHeapUsedSize, every `--sample-ms` (peak), and after a
 *    forced GC (HeapProfiler.collectGarbage) at idle and after the wave; main-thread time from the
 *    same metrics (TaskDuration, ScriptDuration, LayoutDuration, RecalcStyleDuration);
 *  - renders (window.otaDashboard.renders) and the coordinator's RSS, for context.
 *
 * Prints ONE JSON document (stdout; also to --out), a table of the headline numbers on stderr.
 * With --profile-dir the page's main thread is CPU-profiled during the wave (CDP Profiler).
 * Exit 1 when something failed (the JSON says what); everything started is stopped.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    devices: { default: 10_000, help: 'simulated devices' },
    workers: { default: 0, help: 'simulator processes (default: one per 10,000 devices, at most 4)' },
    waves: { default: '1,10,100:manual', help: 'rollout waves; the last one is measured (approved by the bench)' },
    'step-ms': { default: 100, help: 'mean delay between the reported transitions of a device' },
    jitter: { default: 0.5, help: 'delay jitter, fraction of step-ms' },
    'sample-ms': { default: 500, help: 'how often heap and delays are read from the page during the wave' },
    'phase-timeout-s': { default: 600, help: 'limit for each wait' },
    'timeout-s': { default: 1800, help: 'limit for the whole run' },
    'profile-dir': { default: '', help: "CPU-profile the page's main thread during the wave; .cpuprofile goes here" },
    out: { default: '', help: 'also write the JSON document to this file' },
    wire: {
      default: false,
      help: 'also subscribe to every report from node (MQTT over TCP): report ts -> arrival, the delay before the page',
    },
    keep: { default: false, help: 'keep the temporary directory (coordinator data)' },
    'coordinator-node-flags': {
      default: COORDINATOR_NODE_FLAGS.join(' '),
      help: "node flags for the coordinator process; default: the systemd unit's (coordinator/node-flags.ts)",
    },
  },
  'npm run bench:dashboard -- [options]',
);

const N = Math.floor(args.devices);
const WAIT_MS = args['phase-timeout-s'] * 1000;
const MODEL = 'bench-model';
const GOALS = { p95Ms: 1000, longestTaskMs: 200, heapMB: 150 };

const result: Record<string, unknown> = {
  benchmark: 'dashboard',
  command: `npm run bench:dashboard -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: machine(),
  revision: revision(),
  params: { devices: N, waves: args.waves, stepMs: args['step-ms'], jitter: args.jitter, sampleMs: args['sample-ms'] },
};
const errors: string[] = [];
const pageErrors: string[] = [];

let coordinator: CoordinatorProcess | null = null;
let sim: FleetSim | null = null;
let admin: CommandClient | null = null;
let observer: RolloutObserver | null = null;
let browser: Browser | null = null;
let tmp = '';

// ---- what runs in the page ----

/** The page's globals the bench reads (the dashboard's own `otaDashboard`, and ours). */
interface PageGlobals {
  otaDashboard?: {
    state: {
      latencies: number[];
      unrendered: number[];
      statuses: Map<string, unknown>;
      fleet: { devices: number; online: number } | null;
      version: number;
    };
    renders: number;
  };
  __bench: {
    longtasks: { start: number; duration: number }[];
    dom: { at: number; healthy: number }[];
    unsupported?: string;
    stopDom?: () => void;
  };
}

/**
 * Installed before any script of the page (so the buffered long tasks include the page's load).
 * A string: it runs in the page, not here.
 */
const INIT_SCRIPT = `(() => {
  const bench = { longtasks: [], dom: [] };
  Object.defineProperty(window, '__bench', { value: bench });
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) bench.longtasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  } catch (err) {
    bench.unsupported = String(err);
  }
})();`;

interface HeapSample {
  usedMB: number;
  totalMB: number;
}

async function metrics(cdp: CDPSession): Promise<Record<string, number>> {
  const r = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
  return Object.fromEntries(r.metrics.map((m) => [m.name, m.value]));
}

async function heap(cdp: CDPSession, gc = false): Promise<HeapSample> {
  if (gc) await cdp.send('HeapProfiler.collectGarbage');
  const m = await metrics(cdp);
  return { usedMB: round((m.JSHeapUsedSize ?? 0) / 2 ** 20, 1), totalMB: round((m.JSHeapTotalSize ?? 0) / 2 ** 20, 1) };
}

/** Main-thread busy time (seconds, cumulative) from Performance.getMetrics. */
function mainThread(m: Record<string, number>) {
  return {
    task: m.TaskDuration ?? 0,
    script: m.ScriptDuration ?? 0,
    layout: m.LayoutDuration ?? 0,
    style: m.RecalcStyleDuration ?? 0,
  };
}

function stats(samples: readonly number[]) {
  return {
    count: samples.length,
    p50Ms: round(percentile(samples, 50), 1),
    p95Ms: round(percentile(samples, 95), 1),
    p99Ms: round(percentile(samples, 99), 1),
    maxMs: samples.length > 0 ? round(Math.max(...samples), 1) : null,
  };
}

function longTaskStats(tasks: readonly { start: number; duration: number }[]) {
  const d = tasks.map((t) => t.duration);
  return {
    count: d.length,
    longestMs: d.length > 0 ? round(Math.max(...d), 1) : 0,
    over50ms: d.filter((x) => x > 50).length,
    over100ms: d.filter((x) => x > 100).length,
    over200ms: d.filter((x) => x > 200).length,
    totalMs: round(
      d.reduce((a, b) => a + b, 0),
      0,
    ),
  };
}

function mustAdmin(): CommandClient {
  if (!admin) throw new Error('no admin connection');
  return admin;
}

async function waitPage(page: Page, what: string, fn: () => boolean): Promise<void> {
  try {
    await page.waitForFunction(fn, undefined, { polling: 100, timeout: WAIT_MS });
  } catch (err) {
    throw new Error(`the page did not show ${what} within ${WAIT_MS} ms: ${(err as Error).message.split('\n')[0]}`);
  }
}

async function run(): Promise<void> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error('no chromium (apt-get install chromium, or set CHROMIUM=/path)');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-dashboard-'));
  if (args['profile-dir']) await fs.mkdir(args['profile-dir'], { recursive: true });
  coordinator = await CoordinatorProcess.start({
    nodeFlags: args['coordinator-node-flags'].split(' ').filter(Boolean),
    dataDir: path.join(tmp, 'data'),
  });
  const c = coordinator;
  const token = c.admin();
  log(`coordinator pid ${c.pid} at ${c.mqttUrl} / ${c.httpUrl}`);
  admin = await CommandClient.connect({ url: c.mqttUrl, user: token.user, token: token.token, timeoutMs: 120_000 });
  observer = await RolloutObserver.connect(c.mqttUrl, token.user, token.token);
  const publisher = new BenchPublisher(admin, { url: c.httpUrl, user: token.user, token: token.token }, tmp);
  await publisher.trustKey();

  // ---- the fleet ----
  log(`enrolling ${N} devices...`);
  const enrolled = await enrolDevices(admin, deviceIds('sim', N), {
    labels: { bench: 'dashboard' },
    onProgress: (n) => log(`  enrolled ${n}`),
  });
  await admin.call('group.create', { name: 'bench', selector: { bench: 'dashboard' } });
  const workers = fleetSimWorkers(N, args.workers, openFilesLimit('self').hard);
  sim = await FleetSim.start(
    {
      url: c.mqttUrl,
      keepaliveS: 30,
      connectConcurrency: 50,
      connectTimeoutMs: 120_000,
      stepMs: args['step-ms'],
      jitter: args.jitter,
      fail: { probability: 0, devices: [], versions: [] },
    },
    enrolled.devices,
    workers,
  );
  const s = sim;
  log('connecting the devices...');
  const connected = await s.connect();
  if (connected.failed > 0) throw new Error(`${connected.failed} devices could not connect: ${connected.firstError}`);
  result.fleet = {
    devices: N,
    enrolMs: enrolled.ms,
    connectMs: Math.round(connected.doneAt - connected.startedAt),
    simWorkers: workers,
  };
  await publisher.publish(MODEL, '2.0.0');

  // ---- the page ----
  log(`chromium ${executablePath}`);
  browser = await launchChromium(executablePath);
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
  });
  await page.addInitScript(INIT_SCRIPT);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  result.browser = { executablePath, version: browser.version() };

  const gotoAt = wallMs();
  await page.goto(c.httpUrl, { timeout: WAIT_MS });
  await page.getByLabel('Operator').fill(token.user);
  await page.getByLabel('Token').fill(token.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('[data-link="live"]').waitFor({ timeout: WAIT_MS });
  const liveAt = wallMs();
  // Loaded: the coordinator's fleet summary is in the page and counts every device online (the
  // page holds no list of the whole fleet: the devices view asks for its page, device.find).
  await page.waitForFunction(
    (n) => {
      const d = (globalThis as unknown as PageGlobals).otaDashboard;
      return d !== undefined && (d.state.fleet?.devices ?? 0) >= n && (d.state.fleet?.online ?? 0) >= n;
    },
    N,
    { polling: 100, timeout: WAIT_MS },
  );
  const loadedAt = wallMs();
  await sleep(2000); // let the last render and the effects settle before the idle figures
  const loadTasks = await page.evaluate(() => (globalThis as unknown as PageGlobals).__bench.longtasks.slice());
  const unsupported = await page.evaluate(() => (globalThis as unknown as PageGlobals).__bench.unsupported ?? null);
  if (unsupported) throw new Error(`no longtask entries in this chromium: ${unsupported}`);
  const idleHeap = await heap(cdp);
  const idleHeapAfterGc = await heap(cdp, true);
  result.load = {
    /** page.goto -> the `live` indicator (sign-in through the form included). */
    liveMs: Math.round(liveAt - gotoAt),
    /** page.goto -> the fleet summary in the page, counting all N devices online. */
    loadedMs: Math.round(loadedAt - gotoAt),
    longTasks: longTaskStats(loadTasks),
    heapIdle: idleHeap,
    heapIdleAfterGc: idleHeapAfterGc,
  };
  log(
    `page loaded in ${Math.round(loadedAt - gotoAt)} ms; heap ${idleHeap.usedMB} MB (${idleHeapAfterGc.usedMB} after GC)`,
  );

  // ---- the rollout, up to the gate before the big wave ----
  const created = await mustAdmin().call<RolloutSummary>('rollout.create', {
    model: MODEL,
    version: '2.0.0',
    group: 'bench',
    waves: args.waves,
    maxFailureRate: 0,
  });
  const id = created.id;
  const bigWave = created.waves.length; // 1-based, as the page's data-wave
  await page.evaluate(
    (hash) => {
      (globalThis as unknown as { location: { hash: string } }).location.hash = hash;
    },
    `#/rollouts/${encodeURIComponent(id)}`,
  );
  const o = observer as RolloutObserver;
  await o.waitFor(
    id,
    (r) => r.last.status === 'waiting_approval' || r.last.status === 'halted',
    'at its gate',
    WAIT_MS,
  );
  if (o.rollouts.get(id)?.last.status !== 'waiting_approval') {
    throw new Error(`rollout ${id} did not stop at the gate before wave ${bigWave} (waves ${args.waves})`);
  }
  await waitPage(page, 'the rollout waiting for approval', () => {
    const d = (globalThis as unknown as { document: { querySelector(s: string): unknown } }).document;
    return d.querySelector('#rollout-title [data-status="waiting_approval"]') !== null;
  });
  await s.waitIdle(60_000);
  await sleep(1000);
  const bigWaveDevices = created.waves[bigWave - 1]?.devices ?? 0;
  log(`rollout ${id} waits for approval; wave ${bigWave} holds ${bigWaveDevices} devices`);

  // ---- the big wave ----
  await page.evaluate(() => (globalThis as unknown as PageGlobals).otaDashboard?.state.latencies.splice(0)); // earlier waves: not this figure
  await page.evaluate((wave) => {
    const w = globalThis as unknown as PageGlobals & {
      document: {
        querySelector(s: string): { textContent: string | null } | null;
        getElementById(id: string): unknown;
      };
      MutationObserver: new (
        fn: () => void,
      ) => { observe(node: unknown, o: Record<string, boolean>): void; disconnect(): void };
    };
    const bench = w.__bench;
    const selector = `li.wave[data-wave="${wave}"] ul.legend li[data-state="healthy"] .count`;
    let last = -1;
    const read = () => {
      const el = w.document.querySelector(selector);
      const n = el ? Number(el.textContent) : 0;
      if (n !== last) {
        last = n;
        bench.dom.push({ at: Date.now(), healthy: n });
      }
    };
    read();
    const mo = new w.MutationObserver(read);
    mo.observe(w.document.getElementById('main'), { subtree: true, childList: true, characterData: true });
    bench.stopDom = () => mo.disconnect();
  }, bigWave);
  const rendersBefore = await page.evaluate(() => (globalThis as unknown as PageGlobals).otaDashboard?.renders ?? 0);
  const waveStartPerf = await page.evaluate(() => performance.now());
  const beforeHeap = await heap(cdp);
  const beforeMain = mainThread(await metrics(cdp));
  if (args['profile-dir']) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
    await cdp.send('Profiler.start');
  }
  const coordinatorBefore = tryProcStats(c.pid);
  const latencies: number[] = [];
  const heapSamples: number[] = [beforeHeap.usedMB];
  let coordinatorPeakRss = coordinatorBefore?.rssMB ?? 0;
  const sample = async () => {
    const drained = await page.evaluate(
      () => (globalThis as unknown as PageGlobals).otaDashboard?.state.latencies.splice(0) ?? [],
    );
    latencies.push(...drained);
    heapSamples.push((await heap(cdp)).usedMB);
    coordinatorPeakRss = Math.max(coordinatorPeakRss, tryProcStats(c.pid)?.rssMB ?? 0);
  };

  // Diagnosis (--wire): the same reports as the page gets, to a node subscriber over TCP.
  const wireDelays: number[] = [];
  let wire: mqtt.MqttClient | null = null;
  if (args.wire) {
    wire = await mqtt.connectAsync(c.mqttUrl, {
      clientId: `${token.user}@bench-wire`,
      username: token.user,
      password: token.token,
      protocolVersion: 4,
      clean: true,
    });
    wire.on('message', (_topic, payload) => {
      const at = Date.now();
      try {
        const ts = Date.parse((JSON.parse(payload.toString('utf8')) as { ts: string }).ts);
        if (Number.isFinite(ts)) wireDelays.push(at - ts);
      } catch {
        // not a report
      }
    });
    await wire.subscribeAsync(createTopics().allDevices('reported'), { qos: 1 });
    await sleep(1000); // the retained reports of earlier waves arrive first
    wireDelays.length = 0;
  }

  // The same cross-check one step earlier: the wave's healthy count in each rollout summary as a
  // node subscriber (the bench's observer) receives it: what the coordinator adds, without the page.
  const summarySeen: { at: number; healthy: number }[] = [];
  const summaryTopic = createTopics().rollout(id);
  o.client.on('message', (topic, payload) => {
    if (topic !== summaryTopic) return;
    try {
      const s = JSON.parse(payload.toString('utf8')) as RolloutSummary;
      summarySeen.push({ at: wallMs(), healthy: s.waves[bigWave - 1]?.counts.healthy ?? 0 });
    } catch {
      // not a summary
    }
  });
  // prom-client resets its event-loop delay histogram at each scrape: the one after the wave
  // covers the wave only.
  await c.metrics();
  const approvedAt = wallMs();
  await mustAdmin().call('rollout.approve', { id });
  log(`approved wave ${bigWave} of ${id}`);
  const deadline = Date.now() + WAIT_MS;
  let pageDoneAt: number | null = null;
  for (;;) {
    await sample();
    const seen = o.rollouts.get(id);
    if (seen?.last.status === 'halted') throw new Error(`rollout ${id} halted: ${seen.last.haltReason}`);
    const shown = await page.evaluate(() => (globalThis as unknown as PageGlobals).__bench.dom.at(-1) ?? null);
    if (shown && shown.healthy >= bigWaveDevices && bigWaveDevices > 0) {
      pageDoneAt = shown.at;
      break;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `the page did not show wave ${bigWave} all healthy within ${WAIT_MS} ms (shows ${shown?.healthy ?? 0} of ${bigWaveDevices}; rollout ${seen?.last.status})`,
      );
    }
    await sleep(args['sample-ms']);
  }
  await o.waitFor(id, (r) => r.completedAt !== null, 'completed', WAIT_MS);
  await s.waitIdle(60_000);
  // The last reports rendered: nothing applied is waiting for a render.
  await waitPage(page, 'every applied report rendered', () => {
    const d = (globalThis as unknown as PageGlobals).otaDashboard;
    return d !== undefined && d.state.unrendered.length === 0;
  });
  await sleep(1000);
  await sample();
  const waveEndPerf = await page.evaluate(() => performance.now());
  await wire?.endAsync(true);
  let profile: unknown = null;
  if (args['profile-dir']) {
    const stopped = (await cdp.send('Profiler.stop')) as { profile: unknown };
    const file = path.join(args['profile-dir'], 'page-wave.cpuprofile');
    await fs.writeFile(file, JSON.stringify(stopped.profile));
    const summary = summarizeProfile(file, 15);
    profile = {
      file,
      busyMs: summary.totalMs - summary.idleMs,
      gcMs: summary.gcMs,
      self: summary.self,
      inclusive: summary.inclusive,
    };
  }
  const afterMain = mainThread(await metrics(cdp));
  const afterHeap = await heap(cdp);
  const afterHeapGc = await heap(cdp, true);
  const rendersAfter = await page.evaluate(() => (globalThis as unknown as PageGlobals).otaDashboard?.renders ?? 0);
  const bench = await page.evaluate(() => {
    const b = (globalThis as unknown as PageGlobals).__bench;
    b.stopDom?.();
    return { longtasks: b.longtasks.slice(), dom: b.dom.slice() };
  });
  const waveTasks = bench.longtasks.filter((t) => t.start >= waveStartPerf);
  const longest = waveTasks.reduce<{ start: number; duration: number } | null>(
    (a, t) => (a === null || t.duration > a.duration ? t : a),
    null,
  );

  // Cross-check: the simulator's send time of each healthy report -> the bar showing that many.
  const status = await rawCall<{ devices: { id: string; wave: number }[] }>(mustAdmin(), 'rollout.status', { id });
  const inWave = status.devices.filter((d) => d.wave === bigWave).map((d) => d.id);
  const traces = await s.traces([id]);
  const sends = inWave
    .map((d) => traces[d]?.[id]?.sent.healthy)
    .filter((t): t is number => typeof t === 'number')
    .sort((a, b) => a - b);
  const dom = bench.dom.slice().sort((a, b) => a.at - b.at);
  const barDelays = rankDelays(sends, dom);
  const summaryDelays = rankDelays(sends, summarySeen);
  const firstDesired = Math.min(...inWave.map((d) => traces[d]?.[id]?.desiredAt ?? Number.POSITIVE_INFINITY));
  const lastHealthySent = sends.at(-1) ?? null;
  const waveSeconds = (waveEndPerf - waveStartPerf) / 1000;
  const busy = {
    taskS: round(afterMain.task - beforeMain.task, 2),
    scriptS: round(afterMain.script - beforeMain.script, 2),
    layoutS: round(afterMain.layout - beforeMain.layout, 2),
    styleS: round(afterMain.style - beforeMain.style, 2),
  };
  const coordinatorAfter = tryProcStats(c.pid);
  const lag = await c.metrics();
  const observed = o.rollouts.get(id)?.waves[bigWave - 1];
  result.wave = {
    rolloutId: id,
    wave: bigWave,
    devices: bigWaveDevices,
    /** rollout.approve sent -> the page's bar shows every device of the wave healthy. */
    approveToPageDoneMs: pageDoneAt !== null ? Math.round(pageDoneAt - approvedAt) : null,
    /** rollout.approve sent -> first device of the wave received its desired state. */
    approveToFirstAssignmentMs: Number.isFinite(firstDesired) ? Math.round(firstDesired - approvedAt) : null,
    /**
     * rollout.approve sent -> a node subscriber of the rollout summaries (the bench's observer,
     * MQTT over TCP) saw the wave all terminal: the same summary the page's bar waits for.
     */
    approveToObserverDoneMs:
      observed?.terminalAt !== null && observed?.terminalAt !== undefined
        ? Math.round(observed.terminalAt - approvedAt)
        : null,
    /** The last healthy report sent by a device -> the page's bar shows the whole wave healthy. */
    lastReportToPageDoneMs:
      pageDoneAt !== null && lastHealthySent !== null ? Math.round(pageDoneAt - lastHealthySent) : null,
    observedSeconds: round(waveSeconds, 1),
    /** Report `ts` (device) -> the effect after the render that included it (the page's own figure). */
    reportToScreen: stats(latencies),
    /** A device's `healthy` report sent (simulator trace) -> the page's bar shows that many healthy (MutationObserver). */
    healthyReportToBar: { ...stats(barDelays), healthyReportsSent: sends.length },
    /** The same -> a node subscriber got a rollout summary counting that many: the part before the page. */
    healthyReportToSummary: { ...stats(summaryDelays), summaries: summarySeen.length },
    ...(args.wire ? { wireReportToNode: stats(wireDelays) } : {}),
    longTasks: {
      ...longTaskStats(waveTasks),
      longestStartedAfterApproveMs: longest ? Math.round(longest.start - waveStartPerf) : null,
    },
    mainThread: { ...busy, busyShare: waveSeconds > 0 ? round(busy.taskS / waveSeconds, 2) : null },
    renders: rendersAfter - rendersBefore,
    rendersPerSecond: waveSeconds > 0 ? round((rendersAfter - rendersBefore) / waveSeconds, 1) : null,
    heap: {
      beforeMB: beforeHeap.usedMB,
      /** The highest of the samples during the wave and the one after it (before any forced GC). */
      peakSampledMB: Math.max(...heapSamples, afterHeap.usedMB),
      afterMB: afterHeap.usedMB,
      afterGcMB: afterHeapGc.usedMB,
      samples: heapSamples.length,
    },
    coordinator: {
      rssBeforeMB: coordinatorBefore?.rssMB ?? null,
      rssPeakSampledMB: coordinatorPeakRss,
      cpuSeconds: round((coordinatorAfter?.cpuSeconds ?? 0) - (coordinatorBefore?.cpuSeconds ?? 0), 2),
      /** How late its event loop ran a due timer during the wave (prom-client, nodejs_eventloop_lag_*). */
      eventLoopLagMs: {
        p50: round((lag.nodejs_eventloop_lag_p50_seconds ?? Number.NaN) * 1000, 1),
        p99: round((lag.nodejs_eventloop_lag_p99_seconds ?? Number.NaN) * 1000, 1),
        max: round((lag.nodejs_eventloop_lag_max_seconds ?? Number.NaN) * 1000, 1),
      },
    },
    /** How many different healthy counts the page's bar showed (1 step = it jumped to the end). */
    domSamples: dom.length,
    /** When the wave's healthy reports were sent, after the approval: the pace the devices set. */
    healthySentAfterApproveMs: sends.length
      ? {
          first: Math.round((sends[0] as number) - approvedAt),
          p50: Math.round((sends[Math.floor(sends.length / 2)] as number) - approvedAt),
          last: Math.round((sends.at(-1) as number) - approvedAt),
        }
      : null,
  };
  if (profile) result.pageProfile = profile;
}

/**
 * The k-th send (ascending) -> the first sample whose count reached k: ranks, not identities (the
 * k-th healthy report sent is matched with the count reaching k).
 */
function rankDelays(sends: readonly number[], samples: readonly { at: number; healthy: number }[]): number[] {
  const sorted = samples.slice().sort((a, b) => a.at - b.at);
  const delays: number[] = [];
  let j = 0;
  for (let k = 1; k <= sends.length; k++) {
    while (j < sorted.length && (sorted[j]?.healthy ?? 0) < k) j++;
    const shownAt = sorted[j]?.at;
    if (shownAt === undefined) break;
    delays.push(Math.max(0, shownAt - (sends[k - 1] as number)));
  }
  return delays;
}

interface Goal {
  goal: string;
  target: string;
  value: number | string | null;
  met: boolean | null;
}

function goals(): Goal[] {
  const w = result.wave as
    | {
        devices: number;
        reportToScreen: { p95Ms: number };
        healthyReportToBar: { p95Ms: number };
        longTasks: { longestMs: number };
        heap: { peakSampledMB: number };
      }
    | undefined;
  const at9k = (w?.devices ?? 0) >= 9000;
  // Both ways a report shows: its device's row on screen, and the wave bar's counts.
  const p95 = w ? Math.max(w.reportToScreen.p95Ms, w.healthyReportToBar.p95Ms) : null;
  const longest = w?.longTasks.longestMs ?? null;
  const heapMB = w?.heap.peakSampledMB ?? null;
  return [
    {
      goal: "a device's report to the page showing it (its row on screen, the wave bar), p95",
      target: `< ${GOALS.p95Ms} ms`,
      value: p95,
      met: p95 === null || Number.isNaN(p95) || !at9k ? null : p95 < GOALS.p95Ms,
    },
    {
      goal: 'longest main-thread task during a 9,000-device wave',
      target: `<= ${GOALS.longestTaskMs} ms`,
      value: longest,
      met: longest === null || !at9k ? null : longest <= GOALS.longestTaskMs,
    },
    {
      goal: "the page's JS heap (peak sampled during the wave)",
      target: `< ${GOALS.heapMB} MB`,
      value: heapMB,
      met: heapMB === null || !at9k ? null : heapMB < GOALS.heapMB,
    },
  ];
}

function table(): string {
  const t = new Table({ head: ['measure', 'value'], style: { head: [], border: [] } });
  const w = result.wave as Record<string, Record<string, unknown>> | undefined;
  const load = result.load as Record<string, Record<string, unknown> | number> | undefined;
  const row = (k: string, v: unknown) => t.push([k, v === undefined || v === null ? '-' : String(v)]);
  row('devices / big wave', `${N} / ${w?.devices ?? '-'}`);
  if (load) {
    row('load: goto -> the fleet summary counting all devices online (ms)', load.loadedMs);
    row('load: longest task (ms)', (load.longTasks as Record<string, unknown>).longestMs);
    row(
      'heap at idle / after GC (MB)',
      `${(load.heapIdle as unknown as HeapSample).usedMB} / ${(load.heapIdleAfterGc as unknown as HeapSample).usedMB}`,
    );
  }
  if (w) {
    const r = w.reportToScreen as Record<string, unknown>;
    const b = w.healthyReportToBar as Record<string, unknown>;
    const lt = w.longTasks as Record<string, unknown>;
    const h = w.heap as Record<string, unknown>;
    const m = w.mainThread as Record<string, unknown>;
    row(
      'report ts -> render, rows on screen (page), p50/p95/p99/max ms',
      `${r.p50Ms} / ${r.p95Ms} / ${r.p99Ms} / ${r.maxMs} (n=${r.count})`,
    );
    row(
      'healthy sent -> bar count (DOM), p50/p95/p99/max ms',
      `${b.p50Ms} / ${b.p95Ms} / ${b.p99Ms} / ${b.maxMs} (n=${b.count})`,
    );
    const sm = w.healthyReportToSummary as Record<string, unknown>;
    row(
      'healthy sent -> summary count (node), p50/p95/p99/max ms',
      `${sm.p50Ms} / ${sm.p95Ms} / ${sm.p99Ms} / ${sm.maxMs} (n=${sm.count}, ${sm.summaries} summaries)`,
    );
    row(
      'approve -> wave all healthy: node observer / page (ms)',
      `${w.approveToObserverDoneMs} / ${w.approveToPageDoneMs}`,
    );
    row('long tasks: longest ms (>50 / >200 ms)', `${lt.longestMs} (${lt.over50ms} / ${lt.over200ms})`);
    row(
      'main thread busy s (script/layout/style), share',
      `${m.taskS} (${m.scriptS}/${m.layoutS}/${m.styleS}), ${m.busyShare}`,
    );
    row('renders (per second)', `${w.renders} (${w.rendersPerSecond})`);
    row(
      'heap before / peak / after / after GC (MB)',
      `${h.beforeMB} / ${h.peakSampledMB} / ${h.afterMB} / ${h.afterGcMB}`,
    );
    row('coordinator RSS peak (MB)', (w.coordinator as Record<string, unknown>).rssPeakSampledMB);
  }
  for (const goal of result.goals as Goal[]) {
    row(
      `goal: ${goal.goal} ${goal.target}`,
      `${goal.value ?? '-'} ${goal.met === null ? '(goal applies at 9,000)' : goal.met ? 'met' : 'MISSED'}`,
    );
  }
  return t.toString();
}

async function cleanup(): Promise<void> {
  const stats = coordinator ? tryProcStats(coordinator.pid) : null;
  if (stats) result.coordinator = { pid: coordinator?.pid, ...stats };
  if (sim) {
    const counters = await Promise.race([sim.counters(), sleep(10_000).then(() => null)]).catch(() => null);
    result.sim = { counters, ...sim.usage() };
  }
  result.goals = goals();
  await browser?.close().catch(() => {});
  await observer?.close().catch(() => {});
  await admin?.close().catch(() => {});
  // The coordinator first: stopping the devices first would make it process N offline statuses.
  if (coordinator) {
    const exit = await coordinator.stop(20_000);
    log(`coordinator stopped (${exit.code ?? exit.signal})`);
  }
  await sim?.stop(10_000);
  if (tmp && !args.keep) await fs.rm(tmp, { recursive: true, force: true, maxRetries: 3 });
  else if (tmp) result.dataDir = tmp;
}

async function finish(): Promise<void> {
  result.pageErrors = pageErrors;
  if (pageErrors.length > 0) errors.push(`the page logged ${pageErrors.length} errors (pageErrors)`);
  result.errors = errors;
  if (result.goals) process.stderr.write(`${table()}\n`);
  printResult(result);
  if (args.out) await fs.writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`);
}

const watchdog = setTimeout(() => {
  errors.push(`the whole run exceeded ${args['timeout-s']} s; everything was killed`);
  coordinator?.kill();
  sim?.kill();
  void browser?.close().catch(() => {});
  void finish().finally(() => process.exit(1));
}, args['timeout-s'] * 1000);

run()
  .catch((err: Error) => {
    errors.push(err.message);
    log(`error: ${err.message}`);
    if (coordinator) log(`coordinator log tail:\n${coordinator.tail(10)}`);
  })
  .then(cleanup)
  .catch((err: Error) => {
    errors.push(`cleanup: ${err.message}`);
    coordinator?.kill();
    sim?.kill();
  })
  .then(finish)
  .finally(() => {
    clearTimeout(watchdog);
    process.exitCode = errors.length > 0 ? 1 : 0;
  });
