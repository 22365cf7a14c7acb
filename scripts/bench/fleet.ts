#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { COORDINATOR_NODE_FLAGS } from '../../coordinator/node-flags.js';
import type { RolloutSummary } from '../../shared/messages.js';
import { FleetSim } from '../fleet-sim/controller.js';
import { deviceIds, enrolDevices } from '../fleet-sim/enrol.js';
import type { SimCounters, TracesResult } from '../fleet-sim/ipc.js';
import {
  log,
  machine,
  openFilesLimit,
  type ProcStats,
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
import { InspectorClient } from './inspector.js';
import { summarizeProfile } from './profile-summary.js';
import { rawCall } from './raw-call.js';
import { BenchPublisher } from './release.js';
import { RolloutObserver, type RolloutSeen } from './rollout-observer.js';

/**
 * `npm run bench:fleet -- --devices N`: one `ota-coordinator` process (fresh data directory,
 * free ports) and N simulated devices (scripts/fleet-sim: real MQTT connections with their own
 * credentials, in worker processes), driven through the command API like an operator would:
 *
 *  enrol    N x `device.add` (concurrent), a selector group over them
 *  connect  every device connects, subscribes, publishes its status; until the coordinator
 *           counts them all online
 *  rollout  a release (fresh release key trusted with `key.add`, a tiny model) rolled out in
 *           waves 1,10,50,100 with auto gates, to completion; no report may be lost
 *  burst    every device re-sends its report `--burst` times at once: reports ingested per second
 *  halt     `--halt-trials` rollouts of a bad release whose canaries fail their probe; each halts
 *           on the first failure and is aborted (keep). Latency = the report that tripped it,
 *           sent -> the `halted` summary received by a subscriber
 *  bigwave  waves 1,10,100: the last wave holds 90% of the fleet (9,000 devices at N = 10,000)
 *  assign   isolation: the devices only record what they receive, and a one-wave rollout assigns
 *           all N at once: how fast the coordinator publishes assignments with nothing else to do
 *
 * Prints ONE JSON document (stdout); progress on stderr. With --profile-dir the coordinator runs
 * with its inspector open and every phase gets its own CPU profile (summarised in the JSON), plus
 * the sampling heap profile of what is live at the end. Exit 1 when a phase failed; the JSON then
 * says which, with everything measured until then. Everything started is stopped.
 */

const ALL_PHASES = ['rollout', 'burst', 'metrics', 'halt', 'bigwave', 'assign'] as const;
type Phase = (typeof ALL_PHASES)[number];

const args = parseArgs(
  process.argv.slice(2),
  {
    devices: { default: 1000, help: 'simulated devices' },
    workers: { default: 0, help: 'simulator processes (default: one per 2,500 devices, at most 4)' },
    phases: { default: ALL_PHASES.join(','), help: `phases after enrol+connect: ${ALL_PHASES.join(',')}` },
    'step-ms': { default: 100, help: 'mean delay between the reported transitions of a device' },
    jitter: { default: 0.5, help: 'delay jitter, fraction of step-ms' },
    'enrol-concurrency': { default: 64, help: 'device.add requests in flight' },
    'connect-concurrency': { default: 50, help: 'connections being opened at once per worker' },
    burst: { default: 3, help: 'reports per device in the ingest burst' },
    'metrics-minutes': { default: 3, help: 'metrics summaries per device (one-minute windows, sent back to back)' },
    'metrics-observations': { default: 30, help: 'inferences each metrics summary stands for' },
    'halt-trials': { default: 5, help: 'failing-canary rollouts (the first is "the second rollout")' },
    'phase-timeout-s': { default: 900, help: 'limit for each phase' },
    'timeout-s': { default: 3600, help: 'limit for the whole run' },
    'profile-dir': { default: '', help: 'profile the coordinator per phase (inspector); .cpuprofile files go here' },
    keep: { default: false, help: 'keep the temporary directory (coordinator data)' },
    'coordinator-node-flags': {
      default: COORDINATOR_NODE_FLAGS.join(' '),
      help: "node flags for the coordinator process; default: the systemd unit's (coordinator/node-flags.ts)",
    },
  },
  'npm run bench:fleet -- [options]',
);

const N = Math.floor(args.devices);
const PHASE_MS = args['phase-timeout-s'] * 1000;
const MODEL = 'bench-model';
const phasesWanted = new Set(
  args.phases
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean),
);
for (const p of phasesWanted) {
  if (!(ALL_PHASES as readonly string[]).includes(p)) {
    process.stderr.write(`unknown phase ${p}; phases: ${ALL_PHASES.join(',')}\n`);
    process.exit(2);
  }
}
const wants = (p: Phase) => phasesWanted.has(p);

interface PhaseUsage {
  phase: string;
  ms: number;
  coordinatorCpuSeconds: number;
  coordinatorRssMB: number;
  coordinatorMemory?: Record<string, number>;
}

interface WaveResult {
  index: number;
  percent: number;
  devices: number;
  /** Summary showing the wave started (its assignments were published just before) -> summary showing all its devices terminal. */
  waveMs: number | null;
  /** What started the wave (rollout.create sent, or the report completing the previous wave) -> the last device of the wave received its desired state. */
  assignPublishMs: number | null;
  /** First -> last device of the wave receiving its desired state. */
  assignSpreadMs: number | null;
  /** The wave's reports for this rollout / (first desired state received -> summary showing all terminal). */
  reportsPerSec: number | null;
}

const result: Record<string, unknown> = {
  benchmark: 'fleet',
  command: `npm run bench:fleet -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: machine(),
  revision: revision(),
  params: {
    devices: N,
    phases: [...phasesWanted],
    stepMs: args['step-ms'],
    jitter: args.jitter,
    enrolConcurrency: args['enrol-concurrency'],
    connectConcurrencyPerWorker: args['connect-concurrency'],
    burstReportsPerDevice: args.burst,
    metricsSummariesPerDevice: args['metrics-minutes'],
    haltTrials: args['halt-trials'],
    profiled: Boolean(args['profile-dir']),
  },
};
const errors: string[] = [];
const phases: PhaseUsage[] = [];
const profiles: Record<string, unknown> = {};

let coordinator: CoordinatorProcess | null = null;
let inspector: InspectorClient | null = null;
let sim: FleetSim | null = null;
let admin: CommandClient | null = null;
let observer: RolloutObserver | null = null;
let tmp = '';

function coordinatorStats(): ProcStats | null {
  return coordinator ? tryProcStats(coordinator.pid) : null;
}

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
  log(`phase ${name}...`);
  const profileDir = args['profile-dir'];
  if (inspector) await inspector.startCpuProfile();
  const t0 = wallMs();
  const before = coordinatorStats();
  // A coordinator that dies mid-phase fails the phase at once, with its last log lines.
  const c = coordinator;
  const died = c
    ? c.exited.then((e) => {
        throw new Error(`ota-coordinator exited (${e.code ?? e.signal}) during phase ${name}:\n${c.tail(20)}`);
      })
    : new Promise<never>(() => {});
  died.catch(() => {});
  try {
    return await Promise.race([fn(), died]);
  } finally {
    const after = coordinatorStats();
    const usage: PhaseUsage = {
      phase: name,
      ms: Math.round(wallMs() - t0),
      coordinatorCpuSeconds: round((after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0), 2),
      coordinatorRssMB: after?.rssMB ?? 0,
    };
    if (inspector) {
      try {
        const file = path.join(profileDir, `coordinator-${name}.cpuprofile`);
        await inspector.stopCpuProfile(file);
        const summary = summarizeProfile(file, 12);
        profiles[name] = {
          file,
          busyMs: summary.totalMs - summary.idleMs,
          gcMs: summary.gcMs,
          self: summary.self,
          inclusive: summary.inclusive,
        };
        usage.coordinatorMemory = await inspector.memoryUsage();
      } catch (err) {
        errors.push(`profile of ${name}: ${(err as Error).message}`);
      }
    }
    phases.push(usage);
    log(`phase ${name} done in ${usage.ms} ms (coordinator rss ${after?.rssMB ?? '?'} MB)`);
  }
}

async function waitMetric(name: string, pred: (v: number) => boolean, timeoutMs: number, pollMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last = Number.NaN;
  for (;;) {
    const c = coordinator as CoordinatorProcess;
    try {
      last = (await c.metrics())[name] ?? Number.NaN;
      if (pred(last)) return { value: last, at: wallMs() };
    } catch {
      // the coordinator is busy; try again
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting on ${name} (last ${last})`);
    await sleep(pollMs);
  }
}

/** Per wave timings of one rollout, from the summaries seen and the devices' own traces. */
function waveResults(
  seen: RolloutSeen,
  devices: { deviceId: string; wave: number }[],
  traces: TracesResult,
  startEventAt: number,
): WaveResult[] {
  const byWave = new Map<number, string[]>();
  for (const d of devices) {
    const list = byWave.get(d.wave);
    if (list) list.push(d.deviceId);
    else byWave.set(d.wave, [d.deviceId]);
  }
  let previousDoneAt = startEventAt; // the report that completed the previous waves
  return seen.waves.map((w) => {
    let firstDesired = Number.POSITIVE_INFINITY;
    let lastDesired = Number.NEGATIVE_INFINITY;
    let reports = 0;
    let lastTerminalSent = 0;
    for (const id of byWave.get(w.index) ?? []) {
      const t = traces[id]?.[seen.id];
      if (!t) continue;
      if (t.desiredAt !== null) {
        firstDesired = Math.min(firstDesired, t.desiredAt);
        lastDesired = Math.max(lastDesired, t.desiredAt);
      }
      reports += Object.keys(t.sent).length;
      const terminal = t.sent.healthy ?? t.sent.rolled_back ?? t.sent.failed;
      if (terminal !== undefined) lastTerminalSent = Math.max(lastTerminalSent, terminal);
    }
    const got = Number.isFinite(lastDesired);
    const out: WaveResult = {
      index: w.index,
      percent: w.percent,
      devices: w.devices,
      waveMs: w.startedAt !== null && w.terminalAt !== null ? Math.round(w.terminalAt - w.startedAt) : null,
      assignPublishMs: got ? Math.round(lastDesired - previousDoneAt) : null,
      assignSpreadMs: got ? Math.round(lastDesired - firstDesired) : null,
      reportsPerSec:
        got && w.terminalAt !== null && w.terminalAt > firstDesired
          ? Math.round(reports / ((w.terminalAt - firstDesired) / 1000))
          : null,
    };
    if (lastTerminalSent > 0) previousDoneAt = Math.max(previousDoneAt, lastTerminalSent);
    return out;
  });
}

function mustAdmin(): CommandClient {
  if (!admin) throw new Error('no admin connection');
  return admin;
}

async function rolloutDevices(id: string): Promise<{ deviceId: string; wave: number; state: string }[]> {
  // Not CommandClient.call: its 256 KiB reply cap drops the status of a large rollout.
  const status = await rawCall<{ devices: { id: string; wave: number; state: string }[] }>(
    mustAdmin(),
    'rollout.status',
    { id },
  );
  // Waves from 1 in the reply; 0-based indexes here (the observer's and the results').
  return status.devices.map((d) => ({ deviceId: d.id, wave: d.wave - 1, state: d.state }));
}

async function createRollout(version: string, waves: string): Promise<{ id: string; createdAt: number }> {
  const createdAt = wallMs();
  const created = await mustAdmin().call<RolloutSummary>('rollout.create', {
    model: MODEL,
    version,
    group: 'bench',
    waves,
    maxFailureRate: 0,
  });
  return { id: created.id, createdAt };
}

function waitDone(id: string): Promise<RolloutSeen> {
  return (observer as RolloutObserver).waitFor(
    id,
    (r) => r.completedAt !== null || r.haltedAt !== null,
    'completed',
    PHASE_MS,
  );
}

async function run(): Promise<void> {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-fleet-'));
  if (args['profile-dir']) await fs.mkdir(args['profile-dir'], { recursive: true });
  coordinator = await CoordinatorProcess.start({
    nodeFlags: args['coordinator-node-flags'].split(' ').filter(Boolean),
    dataDir: path.join(tmp, 'data'),
    inspect: Boolean(args['profile-dir']),
  });
  const c = coordinator;
  if (args['profile-dir']) {
    if (!c.inspectorUrl) throw new Error('the coordinator did not report an inspector URL');
    inspector = await InspectorClient.connect(c.inspectorUrl);
    await inspector.startHeapSampling();
  }
  const token = c.admin();
  log(`coordinator pid ${c.pid} at ${c.mqttUrl} / ${c.httpUrl}`);
  admin = await CommandClient.connect({ url: c.mqttUrl, user: token.user, token: token.token, timeoutMs: 120_000 });
  observer = await RolloutObserver.connect(c.mqttUrl, token.user, token.token);
  const publisher = new BenchPublisher(admin, { url: c.httpUrl, user: token.user, token: token.token }, tmp);
  await publisher.trustKey();

  // ---- enrol and connect ----
  const enrolled = await phase('enrol', () =>
    enrolDevices(mustAdmin(), deviceIds('sim', N), {
      labels: { bench: 'fleet' },
      concurrency: args['enrol-concurrency'],
      onProgress: (n) => log(`  enrolled ${n}`),
    }),
  );
  result.enrol = { devices: N, ms: enrolled.ms, perSecond: enrolled.perSecond, concurrency: enrolled.concurrency };
  await admin.call('group.create', { name: 'bench', selector: { bench: 'fleet' } });

  const badVersions = Array.from({ length: args['halt-trials'] }, (_, i) => `3.0.${i + 1}`);
  const workers = args.workers > 0 ? args.workers : Math.min(4, Math.max(1, Math.ceil(N / 2500)));
  sim = await FleetSim.start(
    {
      url: c.mqttUrl,
      keepaliveS: 30,
      connectConcurrency: args['connect-concurrency'],
      connectTimeoutMs: 120_000,
      stepMs: args['step-ms'],
      jitter: args.jitter,
      fail: { probability: 0, devices: [], versions: badVersions },
    },
    enrolled.devices,
    workers,
  );
  const s = sim;
  const connect = await phase('connect', async () => {
    const r = await s.connect();
    log(`  ${r.connected} connected, ${r.failed} failed; waiting until the coordinator counts them online`);
    let seenAt: number | null = null;
    try {
      seenAt = (await waitMetric('ota_connected_devices', (v) => v >= r.connected, PHASE_MS, 250)).at;
    } catch (err) {
      errors.push(`connect: ${(err as Error).message}`);
    }
    return { ...r, seenAt };
  });
  result.connect = {
    connected: connect.connected,
    failed: connect.failed,
    firstError: connect.firstError,
    /** First CONNECT sent -> every device subscribed and its online status acknowledged. */
    ms: Math.round(connect.doneAt - connect.startedAt),
    perSecond: Math.round(connect.connected / ((connect.doneAt - connect.startedAt) / 1000)),
    perDeviceP50Ms: percentile(connect.latenciesMs, 50),
    perDeviceP99Ms: percentile(connect.latenciesMs, 99),
    /** -> the coordinator's ota_connected_devices gauge counts them all (presence written to SQLite). */
    allOnlineAtCoordinatorMs: connect.seenAt !== null ? Math.round(connect.seenAt - connect.startedAt) : null,
  };
  const hard = openFilesLimit('self').hard;
  result.fdLimits = {
    coordinator: openFilesLimit(c.pid),
    ...s.fdLimits(),
    limitedBy: `RLIMIT_NOFILE: hard limit ${hard} per process; soft limits are raised to it (Node does so at start, workers are also started through prlimit); raising the hard limit needs CAP_SYS_RESOURCE, which this container lacks. The coordinator holds one descriptor per device connection, so one coordinator tops out near ${hard - 100} devices; simulator workers split theirs.`,
  };
  if (connect.failed > 0) throw new Error(`${connect.failed} devices could not connect: ${connect.firstError}`);

  // ---- the four-wave rollout ----
  if (wants('rollout')) {
    await publisher.publish(MODEL, '2.0.0');
    const r = await phase('rollout', async () => {
      const { id, createdAt } = await createRollout('2.0.0', '1,10,50,100');
      const seen = await waitDone(id);
      await s.waitIdle(60_000);
      const counters = await s.counters();
      // Every report a device got a PUBACK for must reach the coordinator's counter.
      let reportsTotal = Number.NaN;
      try {
        reportsTotal = (await waitMetric('ota_reports_total', (v) => v >= counters.reportsAcked, 30_000)).value;
      } catch {
        reportsTotal = (await c.metrics()).ota_reports_total ?? Number.NaN;
      }
      return { id, createdAt, seen, counters, reportsTotal, devices: await rolloutDevices(id) };
    });
    const traces = await s.traces([r.id]);
    const states: Record<string, number> = {};
    for (const d of r.devices) states[d.state] = (states[d.state] ?? 0) + 1;
    result.rollout = {
      id: r.id,
      waves: '1,10,50,100',
      status: r.seen.last.status,
      /** rollout.create sent -> `completed` summary seen. */
      totalMs: Math.round((r.seen.completedAt ?? r.seen.haltedAt ?? wallMs()) - r.createdAt),
      perWave: waveResults(r.seen, r.devices, traces, r.createdAt),
      deviceStates: states,
      allHealthy: states.healthy === N,
      reports: {
        acknowledgedBySims: r.counters.reportsAcked,
        countedByCoordinator: r.reportsTotal,
        lost: r.counters.reportsAcked - r.reportsTotal,
      },
      /** One summary per decision: reports per decision = reports / summaries. */
      summariesSeen: r.seen.summaries,
    };
    if (r.seen.last.status !== 'completed') throw new Error(`rollout ${r.id} ended ${r.seen.last.status}`);
  }

  // ---- ingest burst ----
  if (wants('burst') && args.burst > 0) {
    const b = await phase('burst', async () => {
      const base = (await c.metrics()).ota_reports_total ?? 0;
      const expected = N * args.burst;
      const r = await s.burst(args.burst);
      // Cross-check (after the fact: scraping /metrics during the burst costs the coordinator
      // ~10% of its CPU at 10,000 connections, prom-client's open-fds and handles collectors).
      const counted = await waitMetric('ota_reports_total', (v) => v >= base + expected, PHASE_MS, 250);
      return { ...r, expected, counted: counted.value - base, countedAt: counted.at };
    });
    result.ingestBurst = {
      reports: b.expected,
      acknowledged: b.acked,
      countedByCoordinator: b.counted,
      /**
       * First report sent -> last PUBACK received. Aedes writes the PUBACK of a QoS 1 publish
       * after the ACL and payload check and hands the message to the coordinator's handler in
       * that write's callback, so this is the broker's ingest rate; every device waits for its
       * PUBACK before sending its next report.
       */
      ms: Math.round(b.doneAt - b.startedAt),
      reportsPerSec: Math.round(b.expected / ((b.doneAt - b.startedAt) / 1000)),
      /** First report sent -> /metrics ota_reports_total showed them all (polled every 250 ms after the last PUBACK). */
      countedMs: Math.round(b.countedAt - b.startedAt),
    };
  }

  // ---- device metrics: every device catches up on a few minutes of summaries ----
  if (wants('metrics') && args['metrics-minutes'] > 0) {
    const minutes = args['metrics-minutes'];
    const base = (await c.metrics()).ota_device_metrics_summaries_total ?? 0;
    const fromMs = Math.floor(Date.now() / 60_000) * 60_000 - minutes * 60_000;
    const m = await phase('metrics', () => s.metricsBurst(minutes, fromMs, args['metrics-observations']));
    if (m.sent === 0) throw new Error('no simulated device runs a model: the metrics phase needs the rollout phase');
    const usage = phases.at(-1) as PhaseUsage;
    const counted = await waitMetric('ota_device_metrics_summaries_total', (v) => v >= base + m.sent, PHASE_MS, 250);
    // Queries as otactl sends them (a command over MQTT, timed at the client): the last hour by
    // version over the fleet and over the group (every device), and one version alone.
    const queryMs = async (queryArgs: Record<string, unknown>) => {
      const t0 = wallMs();
      const r = await mustAdmin().call<{ rows: { samples: number; devices: number }[] }>('metrics.query', {
        model: MODEL,
        sinceSeconds: 3600,
        ...queryArgs,
      });
      return { ms: round(wallMs() - t0, 1), rows: r.rows.length, samples: r.rows.reduce((n, x) => n + x.samples, 0) };
    };
    const fleetQuery = await queryMs({});
    const groupQuery = await queryMs({ group: 'bench' });
    const scrape = await c.metrics();
    result.deviceMetrics = {
      summaries: m.sent,
      acknowledged: m.acked,
      countedByCoordinator: counted.value - base,
      /**
       * First summary sent -> last PUBACK. Each device sends its next summary after the PUBACK of
       * the previous one, which the coordinator gives once the summary is committed (group commit).
       */
      ms: Math.round(m.doneAt - m.startedAt),
      summariesPerSec: Math.round(m.sent / ((m.doneAt - m.startedAt) / 1000)),
      coordinatorCpuMsPerSummary: round((usage.coordinatorCpuSeconds * 1000) / Math.max(1, m.sent), 3),
      storeBytes: scrape.ota_device_metrics_store_bytes ?? null,
      queryFleetByVersion1h: fleetQuery,
      queryGroupByVersion1h: groupQuery,
    };
  }

  // ---- halt trials ----
  if (wants('halt') && badVersions.length > 0) {
    for (const v of badVersions) await publisher.publish(MODEL, v);
    const trials: { id: string; trigger: string | null; haltSeenAt: number | null }[] = [];
    await phase('halt', async () => {
      for (const [i, version] of badVersions.entries()) {
        const { id } = await createRollout(version, '1,10,50,100');
        const seen = await (observer as RolloutObserver).waitFor(
          id,
          (r) => r.haltedAt !== null && r.haltEvent !== null,
          'halted',
          PHASE_MS,
        );
        await mustAdmin().call('rollout.abort', { id, policy: 'keep' });
        await s.waitIdle(60_000);
        const trigger = typeof seen.haltEvent?.details.device === 'string' ? seen.haltEvent.details.device : null;
        trials.push({ id, trigger, haltSeenAt: seen.haltedAt });
        log(`  trial ${i + 1}: ${id} halted (trigger ${trigger})`);
      }
    });
    const traces = await s.traces(trials.map((t) => t.id));
    const latencies: number[] = [];
    const perTrial = trials.map((t) => {
      const sent = t.trigger ? traces[t.trigger]?.[t.id]?.sent.rolled_back : undefined;
      const ms = sent !== undefined && t.haltSeenAt !== null ? round(t.haltSeenAt - sent, 1) : null;
      if (ms !== null) latencies.push(ms);
      return { rolloutId: t.id, triggerDevice: t.trigger, latencyMs: ms };
    });
    result.halt = {
      trials: perTrial.length,
      canaryDevicesPerTrial: Math.max(1, Math.ceil(N * 0.01)),
      /** The report that crossed the threshold, sent by its device -> the `halted` summary received by a subscriber. */
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      maxMs: latencies.length > 0 ? Math.max(...latencies) : null,
      perTrial,
    };
  }

  // ---- a 90% wave ----
  if (wants('bigwave')) {
    await publisher.publish(MODEL, '4.0.0');
    const b = await phase('bigwave', async () => {
      const { id, createdAt } = await createRollout('4.0.0', '1,10,100');
      const seen = await waitDone(id);
      await s.waitIdle(60_000);
      return { id, createdAt, seen, devices: await rolloutDevices(id) };
    });
    const waves = waveResults(b.seen, b.devices, await s.traces([b.id]), b.createdAt);
    const last = waves.at(-1);
    result.bigWave = {
      id: b.id,
      waves: '1,10,100',
      status: b.seen.last.status,
      totalMs: Math.round((b.seen.completedAt ?? wallMs()) - b.createdAt),
      perWave: waves,
      lastWave: last ? { devices: last.devices, assignPublishMs: last.assignPublishMs } : null,
      summariesSeen: b.seen.summaries,
    };
  }

  // ---- assignments published with nothing else going on ----
  if (wants('assign')) {
    await publisher.publish(MODEL, '5.0.0');
    await s.setBehaviour({ silent: true });
    const a = await phase('assign', async () => {
      const { id, createdAt } = await createRollout('5.0.0', '100');
      const repliedAt = wallMs();
      const deadline = Date.now() + PHASE_MS;
      let traces: TracesResult = {};
      for (;;) {
        traces = await s.traces([id]);
        if (Object.keys(traces).length >= N || Date.now() > deadline) break;
        await sleep(250);
      }
      await mustAdmin().call('rollout.abort', { id, policy: 'keep' });
      return { id, createdAt, repliedAt, traces };
    });
    await s.setBehaviour({ silent: false });
    const got = Object.values(a.traces)
      .map((t) => t[a.id]?.desiredAt)
      .filter((x): x is number => typeof x === 'number');
    result.assignOnly = {
      devices: N,
      received: got.length,
      /** rollout.create sent -> its reply (decision, N desired states signed and written, one transaction). */
      createReplyMs: Math.round(a.repliedAt - a.createdAt),
      /** rollout.create sent -> the last device received its desired state. */
      allReceivedMs: got.length > 0 ? Math.round(Math.max(...got) - a.createdAt) : null,
      /** First -> last device receiving its desired state. */
      spreadMs: got.length > 0 ? Math.round(Math.max(...got) - Math.min(...got)) : null,
      perSecond: got.length > 0 ? Math.round(got.length / ((Math.max(...got) - a.createdAt) / 1000)) : null,
    };
  }

  const verifyStart = wallMs();
  const verdict = await admin.call<{ ok: boolean; count: number; head: string }>('audit.verify', {});
  result.audit = { ok: verdict.ok, rows: verdict.count, verifyMs: Math.round(wallMs() - verifyStart) };
}

interface Goal {
  goal: string;
  target: string;
  value: number | string | null;
  met: boolean | null;
}

function goals(): Goal[] {
  const r = result as {
    coordinator?: { peakRssMB?: number };
    rollout?: { status: string; allHealthy: boolean; reports: { lost: number } };
    ingestBurst?: { reportsPerSec: number };
    halt?: { p99Ms: number };
    bigWave?: { lastWave: { devices: number; assignPublishMs: number | null } | null };
  };
  const at10k = N >= 10_000;
  const rss = r.coordinator?.peakRssMB ?? null;
  const rolloutOk = r.rollout
    ? r.rollout.status === 'completed' && r.rollout.allHealthy && r.rollout.reports.lost === 0
    : false;
  const ingest = r.ingestBurst?.reportsPerSec ?? null;
  const p99 = r.halt?.p99Ms ?? null;
  const big = r.bigWave?.lastWave ?? null;
  return [
    {
      goal: '10,000 devices on one coordinator: a full four-wave rollout, no report lost, coordinator RSS < 400 MB',
      target: 'devices >= 10000, rollout completed, lost = 0, peak RSS < 400 MB',
      value: `devices ${N}, rollout ${r.rollout?.status ?? 'not run'}, lost ${r.rollout?.reports.lost ?? '-'}, peak RSS ${rss ?? '-'} MB`,
      met: r.rollout ? at10k && rolloutOk && rss !== null && rss < 400 : null,
    },
    {
      goal: 'reports ingested per second (burst)',
      target: '>= 15000',
      value: ingest,
      met: ingest === null ? null : ingest >= 15_000,
    },
    {
      goal: 'halt latency p99 at 10,000 devices',
      target: '< 100 ms',
      value: p99,
      met: p99 === null || Number.isNaN(p99) ? null : at10k && p99 < 100,
    },
    {
      goal: "a 9,000-device wave's assignments published",
      target: '<= 2000 ms for 9,000 devices',
      value: big ? `${big.assignPublishMs} ms for ${big.devices} devices` : null,
      met: big?.assignPublishMs == null ? null : big.devices >= 9000 && big.assignPublishMs <= 2000,
    },
  ];
}

async function cleanup(): Promise<void> {
  const stats = coordinatorStats();
  result.coordinator = stats ? { pid: coordinator?.pid, ...stats, phases } : { phases };
  if (inspector) {
    try {
      result.coordinatorHeap = {
        memoryUsage: await inspector.memoryUsage(),
        /** Sampling heap profiler: live memory at the end by allocating function. */
        liveByAllocator: await inspector.heapSamplingTop(
          20,
          path.join(args['profile-dir'], 'coordinator-live.heapprofile'),
        ),
      };
    } catch (err) {
      errors.push(`heap profile: ${(err as Error).message}`);
    }
    inspector.close();
    result.profiles = profiles;
  }
  if (sim) {
    const counters: SimCounters | null = await Promise.race([sim.counters(), sleep(10_000).then(() => null)]).catch(
      () => null,
    );
    result.sim = { counters, ...sim.usage() };
  }
  result.goals = goals();
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

function finish(): void {
  result.errors = errors;
  printResult(result);
}

const watchdog = setTimeout(() => {
  errors.push(`the whole run exceeded ${args['timeout-s']} s; everything was killed`);
  coordinator?.kill();
  sim?.kill();
  result.coordinator = { phases };
  finish();
  process.exit(1);
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
  .finally(() => {
    clearTimeout(watchdog);
    finish();
    process.exitCode = errors.length > 0 ? 1 : 0;
  });
