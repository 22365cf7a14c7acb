#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { COORDINATOR_NODE_FLAGS } from '../../coordinator/node-flags.js';
import type { RolloutSummary } from '../../shared/messages.js';
import { createTopics } from '../../shared/topics.js';
import { FleetSim, fleetSimWorkers } from '../fleet-sim/controller.js';
import { deviceIds, enrolDevices } from '../fleet-sim/enrol.js';
import type { SimCounters, TracesResult } from '../fleet-sim/ipc.js';
import {
  type BareBrokerResult,
  type BrokerKind,
  machineBusySeconds,
  measureBareBroker,
} from './bare-broker-measure.js';
import {
  abandonOnTimeoutOrSignal,
  log,
  machine,
  niceOthers,
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
import { bridgeCommands, startEdges } from './mosquitto-edges.js';
import type { MosquittoProcess } from './mosquitto-process.js';
import { mosquittoVersion } from './mosquitto-process.js';
import { type ProvisionedMosquitto, provisionMosquitto } from './mosquitto-provision.js';
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
 * `--broker mosquitto`: the same, through a Mosquitto 2 the bench starts (loopback, a free port,
 * `ota-coordinator mosquitto-config`'s config; stopped by its pid) with the coordinator as its
 * client (`--broker`). The devices are enrolled on the embedded broker as above, then moved
 * offline (scripts/bench/mosquitto-provision.ts says why): the coordinator is stopped, every
 * device's client and role are written into the plugin's file, Mosquitto starts, and the
 * coordinator starts again on the same data directory with `--broker` (`switch` in the JSON).
 * The devices then connect to Mosquitto. Through it, a device's PUBACK comes from Mosquitto, not
 * from the coordinator: the ingest and metrics rates are therefore taken at the coordinator's
 * counters (`externalBroker.notes`), and Mosquitto's RSS and CPU are reported beside the
 * coordinator's.
 *
 * `--bare`: afterwards, the same simulator against the bare broker of the same kind and N
 * (scripts/bench/bare-broker-measure.ts), and every fleet figure as a ratio to it (`vsBare`).
 * With `--edges K` the bare Mosquitto's devices connect to K bare edges bridged into it, the same
 * two hops as the fleet's.
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
    broker: {
      default: 'embedded',
      help: "embedded (the coordinator's Aedes) or mosquitto (a Mosquitto 2 started here, the coordinator its client)",
    },
    bare: {
      default: false,
      help: 'then the bare broker of the same kind with the same simulator and N, and every figure as a ratio to it',
    },
    'mosquitto-conf': {
      default: '',
      help: "config lines appended to the product's Mosquitto config (mosquitto-config.ts), ';'-separated, for experiments (e.g. 'max_inflight_messages 0')",
    },
    'bare-mosquitto-conf': {
      default: 'set_tcp_nodelay true;max_inflight_messages 1000',
      help: "config lines for the bare Mosquitto, ';'-separated: by default the product config's (mosquitto-config.ts) that bear on speed",
    },
    edges: {
      default: 0,
      help: "with --broker mosquitto: the devices connect to this many edge Mosquittos bridged into the one the coordinator uses (scripts/bench/mosquitto-edges.ts: past one process's open-files limit)",
    },
    'ingest-poll-ms': {
      default: 50,
      help: "through Mosquitto: how often the coordinator's counters are read to time the ingest and metrics bursts",
    },
    workers: { default: 0, help: 'simulator processes (default: one per 10,000 devices, at most 4)' },
    'sim-nice': {
      default: 0,
      help: "nice value (0-19) for the simulator processes and the edge brokers, which stand in for other machines (and the bare run's): 0 leaves them sharing the cores evenly with the coordinator",
    },
    phases: {
      default: ALL_PHASES.join(','),
      help: `phases after enrol+connect: ${ALL_PHASES.join(',')} (burst without rollout: reports with no model, no history rows to write, a lighter load)`,
    },
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
if (args.broker !== 'embedded' && args.broker !== 'mosquitto') {
  process.stderr.write(`--broker must be embedded or mosquitto, got ${args.broker}\n`);
  process.exit(2);
}
const EXTERNAL = args.broker === 'mosquitto';
try {
  niceOthers([], args['sim-nice']); // checks the value only
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}
const EDGES = Math.floor(args.edges);
if (EDGES !== 0 && (!EXTERNAL || !(EDGES >= 1))) {
  process.stderr.write(`--edges ${args.edges}: edge brokers need --broker mosquitto and a whole number >= 1\n`);
  process.exit(2);
}
/** `--mosquitto-conf 'a 1; b 2'` -> ['a 1', 'b 2']. */
const confLines = (text: string) =>
  text
    .split(';')
    .map((l) => l.trim())
    .filter(Boolean);
const BARE_KIND: BrokerKind = EXTERNAL ? 'mosquitto' : 'aedes';
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
  /** Through Mosquitto: its CPU time over the phase and its RSS at the end. */
  brokerCpuSeconds?: number;
  brokerRssMB?: number;
  /** With --edges: their CPU time over the phase (together) and each one's RSS at the end. */
  edgesCpuSeconds?: number;
  edgesRssMB?: number[];
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
  /**
   * Through Mosquitto only: what started the wave -> summary showing all its devices terminal
   * (waveMs starts at a summary that reaches a subscriber only behind the wave's desired states;
   * externalBroker.notes).
   */
  triggerToDoneMs?: number | null;
}

const result: Record<string, unknown> = {
  benchmark: 'fleet',
  command: `npm run bench:fleet -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: machine(),
  revision: revision(),
  params: {
    devices: N,
    ...(EXTERNAL || args.bare ? { broker: args.broker, bare: args.bare } : {}),
    ...(args['mosquitto-conf'] ? { mosquittoConf: confLines(args['mosquitto-conf']) } : {}),
    phases: [...phasesWanted],
    stepMs: args['step-ms'],
    jitter: args.jitter,
    enrolConcurrency: args['enrol-concurrency'],
    connectConcurrencyPerWorker: args['connect-concurrency'],
    ...(args['sim-nice'] !== 0 ? { simNice: args['sim-nice'] } : {}),
    burstReportsPerDevice: args.burst,
    metricsSummariesPerDevice: args['metrics-minutes'],
    haltTrials: args['halt-trials'],
    profiled: Boolean(args['profile-dir']),
  },
};
const errors: string[] = [];
const phases: PhaseUsage[] = [];
/**
 * Per phase, the CPU time the rest of the machine took (all CPUs busy, /proc/stat, minus the
 * coordinator, Mosquitto, the simulator and this process): well above 0 means something else
 * competed and the phase's times are suspect. In the JSON with --broker mosquitto or --bare.
 */
const contention: {
  phase: string;
  otherCpuSeconds: number;
  /** The simulator's workers and this process (its clients and the simulator's controller). */
  simCpuSeconds: number;
  benchCpuSeconds: number;
  /** All CPU time the machine spent over the phase / (cores x wall time): near 1, the machine was saturated. */
  machineBusyShare: number;
}[] = [];
const profiles: Record<string, unknown> = {};

let coordinator: CoordinatorProcess | null = null;
let inspector: InspectorClient | null = null;
let sim: FleetSim | null = null;
let admin: CommandClient | null = null;
let observer: RolloutObserver | null = null;
let mosquitto: MosquittoProcess | null = null;
/** --edges: the Mosquittos the devices connect to, bridged into `mosquitto`. */
const edges: MosquittoProcess[] = [];
let tmp = '';
const bareAbort = new AbortController();

function coordinatorStats(): ProcStats | null {
  return coordinator ? tryProcStats(coordinator.pid) : null;
}

function brokerStats(): ProcStats | null {
  return mosquitto ? tryProcStats(mosquitto.pid) : null;
}

/** CPU seconds of the simulator's workers, of this process and of the edges (the coordinator and the core Mosquitto apart). */
function ourCpuSeconds(): { sim: number; self: number; edges: number } {
  const cpu = (pids: readonly (number | 'self')[]) =>
    pids.reduce<number>((a, p) => a + (tryProcStats(p)?.cpuSeconds ?? 0), 0);
  return { sim: cpu(sim?.pids ?? []), self: cpu(['self']), edges: cpu(edges.map((e) => e.pid)) };
}

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
  log(`phase ${name}...`);
  const profileDir = args['profile-dir'];
  if (inspector) await inspector.startCpuProfile();
  const t0 = wallMs();
  const before = coordinatorStats();
  const brokerBefore = brokerStats();
  const oursBefore = ourCpuSeconds();
  const busyBefore = machineBusySeconds();
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
    const brokerAfter = brokerStats();
    const ours = ourCpuSeconds();
    const busy = machineBusySeconds() - busyBefore;
    const other = round(
      busy -
        (ours.sim - oursBefore.sim) -
        (ours.self - oursBefore.self) -
        (ours.edges - oursBefore.edges) -
        ((after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0)) -
        ((brokerAfter?.cpuSeconds ?? 0) - (brokerBefore?.cpuSeconds ?? 0)),
      2,
    );
    contention.push({
      phase: name,
      otherCpuSeconds: other,
      simCpuSeconds: round(ours.sim - oursBefore.sim, 2),
      benchCpuSeconds: round(ours.self - oursBefore.self, 2),
      machineBusyShare: round(busy / (os.availableParallelism() * (usage.ms / 1000)), 2),
    });
    if (brokerAfter) {
      usage.brokerCpuSeconds = round(brokerAfter.cpuSeconds - (brokerBefore?.cpuSeconds ?? 0), 2);
      usage.brokerRssMB = brokerAfter.rssMB;
    }
    if (edges.length > 0) {
      usage.edgesCpuSeconds = round(ours.edges - oursBefore.edges, 2);
      usage.edgesRssMB = edges.map((e) => tryProcStats(e.pid)?.rssMB ?? 0);
    }
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
    const brokerRss = usage.brokerRssMB !== undefined ? `, mosquitto rss ${usage.brokerRssMB} MB` : '';
    log(
      `phase ${name} done in ${usage.ms} ms (coordinator rss ${after?.rssMB ?? '?'} MB${brokerRss}; others' cpu ${other} s)`,
    );
  }
}

async function waitMetric(
  name: string,
  pred: (v: number) => boolean,
  timeoutMs: number,
  pollMs = 50,
  signal?: AbortSignal,
) {
  const deadline = Date.now() + timeoutMs;
  let last = Number.NaN;
  for (;;) {
    signal?.throwIfAborted();
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
    if (EXTERNAL) out.triggerToDoneMs = w.terminalAt !== null ? Math.round(w.terminalAt - previousDoneAt) : null;
    if (lastTerminalSent > 0) previousDoneAt = Math.max(previousDoneAt, lastTerminalSent);
    return out;
  });
}

function mustAdmin(): CommandClient {
  if (!admin) throw new Error('no admin connection');
  return admin;
}

/** Devices per `rollout.status` page: as an operator's script would page a large rollout (~1.5 MB a reply). */
const STATUS_PAGE = 5_000;

async function rolloutDevices(id: string): Promise<{ deviceId: string; wave: number; state: string }[]> {
  const out: { deviceId: string; wave: number; state: string }[] = [];
  for (let total = 1; out.length < total; ) {
    const status = await rawCall<{ devices: { id: string; wave: number; state: string }[]; devicesTotal: number }>(
      mustAdmin(),
      'rollout.status',
      { id, offset: out.length, limit: STATUS_PAGE },
    );
    total = status.devicesTotal;
    if (status.devices.length === 0) break; // a guard: a rollout's rows never shrink
    // Waves from 1 in the reply; 0-based indexes here (the observer's and the results').
    for (const d of status.devices) out.push({ deviceId: d.id, wave: d.wave - 1, state: d.state });
  }
  return out;
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

/** Starts the coordinator on the bench's data directory (and its inspector when profiling). */
async function startCoordinator(extraArgs: string[] = []): Promise<CoordinatorProcess> {
  const c = await CoordinatorProcess.start({
    nodeFlags: args['coordinator-node-flags'].split(' ').filter(Boolean),
    dataDir: path.join(tmp, 'data'),
    inspect: Boolean(args['profile-dir']),
    args: extraArgs,
    // Through Mosquitto it republishes every desired state and reconciles every client first.
    ...(extraArgs.length > 0 ? { readyTimeoutMs: PHASE_MS } : {}),
  });
  coordinator = c;
  if (args['profile-dir']) {
    if (!c.inspectorUrl) throw new Error('the coordinator did not report an inspector URL');
    inspector = await InspectorClient.connect(c.inspectorUrl);
    await inspector.startHeapSampling();
  }
  return c;
}

/**
 * The installer's migration (mosquitto-provision.ts): the coordinator stopped, the enrolled
 * devices' clients and roles written into a fresh Mosquitto config, Mosquitto started, the
 * coordinator started again on the same data directory as its client.
 */
async function switchToMosquitto(devices: readonly { id: string; token: string }[]): Promise<CoordinatorProcess> {
  const t0 = wallMs();
  await observer?.close();
  await admin?.close();
  observer = null;
  admin = null;
  if (inspector) {
    // The embedded run's heap is not what the result describes: sampling starts again below.
    inspector.close();
    inspector = null;
  }
  const old = coordinator as CoordinatorProcess;
  const embeddedPeakRssMB = tryProcStats(old.pid)?.peakRssMB ?? null;
  const exit = await old.stop(60_000);
  coordinator = null;
  const stoppedAt = wallMs();
  log(
    `  embedded coordinator stopped (${exit.code ?? exit.signal}); writing Mosquitto's files for ${devices.length} devices`,
  );
  const bridgePassword = randomBytes(24).toString('base64url');
  const p: ProvisionedMosquitto = await provisionMosquitto({
    dataDir: path.join(tmp, 'data'),
    dir: path.join(tmp, 'mosquitto'),
    devices,
    readyTimeoutMs: PHASE_MS,
    extraConf: confLines(args['mosquitto-conf']),
    ...(EDGES > 0 ? { extraCommands: bridgeCommands(createTopics(), bridgePassword) } : {}),
    // Known to abandon() from its spawn: its start loads every device's client (seconds).
    onSpawn: (m) => {
      mosquitto = m;
    },
  });
  mosquitto = p.mosquitto;
  log(`  mosquitto pid ${p.mosquitto.pid} at ${p.url} (${p.clients} clients); starting the coordinator with --broker`);
  if (EDGES > 0) {
    // Into `edges` as each is spawned: abandon() kills those already running.
    await startEdges(
      {
        count: EDGES,
        dir: path.join(tmp, 'edges'),
        core: { port: p.mosquitto.port, dynsecFile: p.dynsecFile, input: p.input },
        password: bridgePassword,
        readyTimeoutMs: PHASE_MS,
        extraConf: confLines(args['mosquitto-conf']),
      },
      edges,
    );
    log(`  ${EDGES} edge mosquittos bridged into it: ${edges.map((e) => `pid ${e.pid} at ${e.url}`).join(', ')}`);
  }
  const t1 = wallMs();
  const c = await startCoordinator(p.coordinatorArgs);
  const readyMs = Math.round(wallMs() - t1);
  const problems = c.problems();
  result.switch = {
    /** The embedded coordinator's peak RSS while enrolling (the figures below are the external run's). */
    embeddedPeakRssMB,
    /** SIGTERM -> the embedded coordinator exited. */
    stopMs: Math.round(stoppedAt - t0),
    /** Config and plugin file written, every device's password hashed (PBKDF2-SHA512, 101 rounds). */
    writeMs: p.writeMs,
    dynsecFileMB: round(p.dynsecFileBytes / 1024 ** 2, 1),
    clients: p.clients,
    /** mosquitto -c -> listening (the plugin's file loaded). */
    mosquittoStartMs: p.startMs,
    /** ota-coordinator --broker started -> ready (connected, every desired state republished, clients reconciled). */
    coordinatorReadyMs: readyMs,
    totalMs: Math.round(wallMs() - t0),
    /** Warnings the coordinator logged while starting (a device without a client would be named here). */
    coordinatorWarnings: problems.map((l) => l.slice(0, 400)),
  };
  const config = await fs.readFile(p.mosquitto.configFile, 'utf8');
  result.broker = {
    kind: 'mosquitto',
    version: await mosquittoVersion(),
    pid: p.mosquitto.pid,
    url: p.url,
    config: config.trimEnd().split('\n'),
    ...(edges.length > 0
      ? {
          edges: edges.map((e) => ({ pid: e.pid, url: e.url })),
          edgeConfig: edges[0]?.config.trimEnd().split('\n'),
          edgeNote:
            "The devices connect to the edges (round robin by simulator process), each bridged into this Mosquitto, the coordinator's (scripts/bench/mosquitto-edges.ts): a harness for more devices than one process's open-files limit, not a recommended deployment.",
        }
      : {}),
  };
  return c;
}

async function run(): Promise<void> {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-fleet-'));
  if (args['profile-dir']) await fs.mkdir(args['profile-dir'], { recursive: true });
  let c = await startCoordinator();
  let token = c.admin();
  log(`coordinator pid ${c.pid} at ${c.mqttUrl} / ${c.httpUrl}`);
  admin = await CommandClient.connect({ url: c.mqttUrl, user: token.user, token: token.token, timeoutMs: 120_000 });
  observer = await RolloutObserver.connect(c.mqttUrl, token.user, token.token);
  let publisher = new BenchPublisher(admin, { url: c.httpUrl, user: token.user, token: token.token }, tmp);
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
  if (EXTERNAL) {
    c = await switchToMosquitto(enrolled.devices);
    token = c.admin();
    log(`coordinator pid ${c.pid} through ${c.mqttUrl} / ${c.httpUrl}`);
    admin = await CommandClient.connect({ url: c.mqttUrl, user: token.user, token: token.token, timeoutMs: 120_000 });
    observer = await RolloutObserver.connect(c.mqttUrl, token.user, token.token);
    // The release key trusted before the switch (the data directory keeps it).
    publisher = new BenchPublisher(admin, { url: c.httpUrl, user: token.user, token: token.token }, tmp, publisher.key);
    result.externalBroker = {
      notes: [
        "A device's PUBACK comes from Mosquitto once it has the message, not from the coordinator: ingestBurst.reportsPerSec and deviceMetrics.summariesPerSec are taken at the coordinator's counters (ota_reports_total, ota_device_metrics_summaries_total read every ingestPollMs), and Mosquitto's own intake is in their puback* fields.",
        'halt latency, the waves and the assignments are timed at the devices and at a subscriber, as in the embedded run: each path now has a broker hop more (device -> Mosquitto -> coordinator, coordinator -> Mosquitto -> subscriber).',
        "perWave[].waveMs starts when a subscriber sees the summary saying the wave started. The coordinator hands that summary to its one connection after the wave's desired states, so through Mosquitto it arrives behind all of them, when the devices served first may be done already: for a large wave waveMs then shrinks to almost nothing and means little. perWave[].triggerToDoneMs (what started the wave -> all its devices terminal) and assignPublishMs are the figures to compare.",
        "The embedded broker holds device reports in bounded turns while a large wave's desired states go out (IngestGate); through Mosquitto the coordinator takes the wave's first reports, and decides on them, while it is still sending the rest of the wave.",
        "coordinator.peakRssMB is the coordinator started with --broker (connections live in Mosquitto: broker.*RssMB); switch.embeddedPeakRssMB is the embedded coordinator's while enrolling.",
        'The devices were enrolled on the embedded broker and their clients written into the plugin file offline (switch): enrolling through the plugin rewrites its whole file per device.',
      ],
      ingestPollMs: args['ingest-poll-ms'],
    };
  }

  const badVersions = Array.from({ length: args['halt-trials'] }, (_, i) => `3.0.${i + 1}`);
  // Behind edges, the same number of simulator processes per edge (worker i connects to edge
  // i mod K), so the edges hold equal shares of the fleet.
  const simWorkers = fleetSimWorkers(N, args.workers, openFilesLimit('self').hard);
  const workers = EDGES > 0 ? Math.ceil(simWorkers / EDGES) * EDGES : simWorkers;
  sim = await FleetSim.start(
    {
      url: c.mqttUrl,
      ...(edges.length > 0 ? { urls: edges.map((e) => e.url) } : {}),
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
  const niced = niceOthers([...sim.pids, ...edges.map((e) => e.pid)], args['sim-nice']);
  if (args['sim-nice'] !== 0) result.simNice = { value: args['sim-nice'], readBack: niced };
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
    ...(mosquitto ? { broker: openFilesLimit(mosquitto.pid) } : {}),
    ...(edges.length > 0 ? { edges: edges.map((e) => openFilesLimit(e.pid)) } : {}),
    ...s.fdLimits(),
    limitedBy: EXTERNAL
      ? `RLIMIT_NOFILE: hard limit ${hard} per process; soft limits are raised to it (Node does so at start and Mosquitto inherits it, workers are also started through prlimit); raising the hard limit needs CAP_SYS_RESOURCE, which this container lacks. Mosquitto holds one descriptor per device connection (the coordinator one for its own), so one Mosquitto process tops out near ${hard - 100} devices; simulator workers split theirs.`
      : `RLIMIT_NOFILE: hard limit ${hard} per process; soft limits are raised to it (Node does so at start, workers are also started through prlimit); raising the hard limit needs CAP_SYS_RESOURCE, which this container lacks. The coordinator holds one descriptor per device connection, so one coordinator tops out near ${hard - 100} devices; simulator workers split theirs.`,
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
  /**
   * Model entries per burst report: 1 after the rollout phase. Without it (`--phases burst`) the
   * reports carry no model, so the coordinator writes no history row for them: a lighter load,
   * whose rate is not comparable with a full run's (BENCHMARKS.md, 2026-12-07 afternoon).
   */
  const modelsPerReport = (b: { sent: number; models?: number }) => round((b.models ?? 0) / Math.max(1, b.sent), 2);
  if (wants('burst') && args.burst > 0) {
    const b = await phase('burst', async () => {
      const base = (await c.metrics()).ota_reports_total ?? 0;
      const expected = N * args.burst;
      if (EXTERNAL) {
        // Mosquitto acknowledges without the coordinator: its counter is read during the burst
        // (cheap there, it holds a handful of descriptors), from the start.
        const stop = new AbortController();
        const counting = waitMetric(
          'ota_reports_total',
          (v) => v >= base + expected,
          PHASE_MS,
          args['ingest-poll-ms'],
          stop.signal,
        );
        counting.catch(() => {});
        try {
          const r = await s.burst(args.burst);
          const counted = await counting;
          return { ...r, expected, counted: counted.value - base, countedAt: counted.at };
        } finally {
          stop.abort();
        }
      }
      const r = await s.burst(args.burst);
      // Cross-check (after the fact: scraping /metrics during the burst costs the coordinator
      // ~10% of its CPU at 10,000 connections, prom-client's open-fds and handles collectors).
      const counted = await waitMetric('ota_reports_total', (v) => v >= base + expected, PHASE_MS, 250);
      return { ...r, expected, counted: counted.value - base, countedAt: counted.at };
    });
    if (EXTERNAL) {
      const countedMs = Math.round(b.countedAt - b.startedAt);
      const pubackMs = Math.round(b.doneAt - b.startedAt);
      result.ingestBurst = {
        reports: b.expected,
        acknowledged: b.acked,
        countedByCoordinator: b.counted,
        /** First report sent -> the coordinator's ota_reports_total counted them all (read every ingestPollMs). */
        ms: countedMs,
        /** The coordinator's ingest rate through Mosquitto: reports / ms. */
        reportsPerSec: Math.round(b.expected / (countedMs / 1000)),
        countedMs,
        /** First report sent -> last PUBACK, which Mosquitto gives once it has the report: its intake, not the coordinator's. */
        pubackMs,
        pubackReportsPerSec: Math.round(b.acked / (pubackMs / 1000)),
        modelsPerReport: modelsPerReport(b),
        definition: 'through Mosquitto: first report sent -> counted by the coordinator (see externalBroker.notes)',
      };
    } else
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
        modelsPerReport: modelsPerReport(b),
      };
  }

  // ---- device metrics: every device catches up on a few minutes of summaries ----
  if (wants('metrics') && args['metrics-minutes'] > 0) {
    const minutes = args['metrics-minutes'];
    const base = (await c.metrics()).ota_device_metrics_summaries_total ?? 0;
    const fromMs = Math.floor(Date.now() / 60_000) * 60_000 - minutes * 60_000;
    const expectedSummaries = N * minutes;
    const m = await phase('metrics', async () => {
      if (!EXTERNAL) return { ...(await s.metricsBurst(minutes, fromMs, args['metrics-observations'])), countedAt: 0 };
      // Mosquitto acknowledges without the coordinator: its counter times the phase (as the burst's).
      const stop = new AbortController();
      const counting = waitMetric(
        'ota_device_metrics_summaries_total',
        (v) => v >= base + expectedSummaries,
        PHASE_MS,
        args['ingest-poll-ms'],
        stop.signal,
      );
      counting.catch(() => {});
      try {
        const r = await s.metricsBurst(minutes, fromMs, args['metrics-observations']);
        if (r.sent !== expectedSummaries) return { ...r, countedAt: 0 };
        return { ...r, countedAt: (await counting).at };
      } finally {
        stop.abort();
      }
    });
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
      ...(EXTERNAL && m.countedAt > 0
        ? {
            /** First summary sent -> the coordinator counted them all (stored; read every ingestPollMs). */
            ms: Math.round(m.countedAt - m.startedAt),
            summariesPerSec: Math.round(m.sent / ((m.countedAt - m.startedAt) / 1000)),
            /** First summary sent -> last PUBACK, Mosquitto's (it does not wait for the coordinator's commit). */
            pubackMs: Math.round(m.doneAt - m.startedAt),
            pubackSummariesPerSec: Math.round(m.acked / ((m.doneAt - m.startedAt) / 1000)),
            definition:
              'through Mosquitto: first summary sent -> counted by the coordinator (see externalBroker.notes)',
          }
        : {
            ms: Math.round(m.doneAt - m.startedAt),
            summariesPerSec: Math.round(m.sent / ((m.doneAt - m.startedAt) / 1000)),
          }),
      coordinatorCpuMsPerSummary: round((usage.coordinatorCpuSeconds * 1000) / Math.max(1, m.sent), 3),
      storeBytes: scrape.ota_device_metrics_store_bytes ?? null,
      queryFleetByVersion1h: fleetQuery,
      queryGroupByVersion1h: groupQuery,
    };
  }

  // ---- halt trials ----
  if (wants('halt') && badVersions.length > 0) {
    for (const v of badVersions) await publisher.publish(MODEL, v);
    const trials: { id: string; trigger: string | null; haltSeenAt: number | null; decidedAt: number | null }[] = [];
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
        const decidedAt = seen.haltEvent ? Date.parse(seen.haltEvent.ts) : Number.NaN;
        trials.push({
          id,
          trigger,
          haltSeenAt: seen.haltedAt,
          decidedAt: Number.isFinite(decidedAt) ? decidedAt : null,
        });
        log(`  trial ${i + 1}: ${id} halted (trigger ${trigger})`);
      }
    });
    const traces = await s.traces(trials.map((t) => t.id));
    const latencies: number[] = [];
    const perTrial = trials.map((t) => {
      const sent = t.trigger ? traces[t.trigger]?.[t.id]?.sent.rolled_back : undefined;
      const ms = sent !== undefined && t.haltSeenAt !== null ? round(t.haltSeenAt - sent, 1) : null;
      if (ms !== null) latencies.push(ms);
      // The split of that latency: the device's send -> the coordinator's decision (the halt's audit
      // `ts`, the coordinator's clock on this machine), and that decision -> the summary seen.
      const decidedMs = sent !== undefined && t.decidedAt !== null ? round(t.decidedAt - sent, 1) : null;
      const decidedToSeenMs =
        t.decidedAt !== null && t.haltSeenAt !== null ? round(t.haltSeenAt - t.decidedAt, 1) : null;
      return { rolloutId: t.id, triggerDevice: t.trigger, latencyMs: ms, decidedMs, decidedToSeenMs };
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
  const brokerPeak = (result.broker as { end?: { peakRssMB: number } | null } | undefined)?.end?.peakRssMB;
  const first: Goal = EXTERNAL
    ? {
        goal: "10,000 devices through Mosquitto: a full four-wave rollout, no report lost, coordinator RSS < 300 MB (the connections are Mosquitto's)",
        target: 'devices >= 10000, rollout completed, lost = 0, coordinator peak RSS < 300 MB',
        value: `devices ${N}, rollout ${r.rollout?.status ?? 'not run'}, lost ${r.rollout?.reports.lost ?? '-'}, coordinator peak RSS ${rss ?? '-'} MB, Mosquitto peak RSS ${brokerPeak ?? '-'} MB`,
        met: r.rollout ? at10k && rolloutOk && rss !== null && rss < 300 : null,
      }
    : {
        goal: '10,000 devices on one coordinator: a full four-wave rollout, no report lost, coordinator RSS < 400 MB',
        target: 'devices >= 10000, rollout completed, lost = 0, peak RSS < 400 MB',
        value: `devices ${N}, rollout ${r.rollout?.status ?? 'not run'}, lost ${r.rollout?.reports.lost ?? '-'}, peak RSS ${rss ?? '-'} MB`,
        met: r.rollout ? at10k && rolloutOk && rss !== null && rss < 400 : null,
      };
  const ingestRatio = (result.vsBare as { ingestReportsPerSec?: { ratio: number | null } } | undefined)
    ?.ingestReportsPerSec?.ratio;
  const bareGoal: Goal[] =
    ingestRatio === undefined
      ? []
      : [
          {
            goal: `reports ingested per second through the coordinator, against the bare ${BARE_KIND} broker's with the same simulator`,
            target: '>= 0.6 x bare',
            value: ingestRatio,
            met: ingestRatio === null ? null : ingestRatio >= 0.6,
          },
        ];
  return [
    first,
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
    ...bareGoal,
  ];
}

interface Ratio {
  fleet: number | null;
  bare: number | null;
  /** fleet / bare. */
  ratio: number | null;
  what: string;
}

function ratio(fleet: number | null | undefined, bare: number | null | undefined, what: string): Ratio {
  const f = fleet ?? null;
  const b = bare ?? null;
  return { fleet: f, bare: b, ratio: f !== null && b !== null && b !== 0 ? round(f / b, 2) : null, what };
}

/** Every fleet figure that has a counterpart in the bare broker's run, as fleet / bare (pure over the two results). */
function vsBare(bare: BareBrokerResult): Record<string, Ratio | string> {
  const r = result as {
    connect?: { perSecond: number };
    ingestBurst?: { reports: number; reportsPerSec: number; pubackReportsPerSec?: number };
    bigWave?: { lastWave: { devices: number; assignPublishMs: number | null } | null };
    assignOnly?: { allReceivedMs: number | null; perSecond: number | null };
    coordinator?: { peakRssMB?: number };
    broker?: { end?: { peakRssMB: number } | null };
  };
  const burstPhase = phases.find((p) => p.phase === 'burst');
  const cpuUsPerReport =
    burstPhase && r.ingestBurst
      ? round(
          ((burstPhase.coordinatorCpuSeconds + (burstPhase.brokerCpuSeconds ?? 0)) * 1e6) / r.ingestBurst.reports,
          1,
        )
      : null;
  const big = r.bigWave?.lastWave;
  const bigPerSec =
    big?.assignPublishMs != null && big.assignPublishMs > 0
      ? Math.round(big.devices / (big.assignPublishMs / 1000))
      : null;
  const brokerPeak = r.broker?.end?.peakRssMB ?? null;
  const coordinatorPeak = r.coordinator?.peakRssMB ?? null;
  return {
    about: `fleet / bare ${bare.kind} with ${bare.devices} devices: above 1 is more for a rate, slower or bigger for a time or memory. Halt latency is the coordinator's alone: no ratio.`,
    ingestReportsPerSec: EXTERNAL
      ? ratio(
          r.ingestBurst?.reportsPerSec,
          bare.ingestBurst?.reportsPerSec,
          'reports counted by the coordinator per second / reports one plain subscriber of the bare broker received per second (the coordinator is that subscriber here)',
        )
      : ratio(
          r.ingestBurst?.reportsPerSec,
          bare.ingestBurst?.pubackReportsPerSec,
          'reports PUBACKed per second (first sent -> last PUBACK), the embedded broker handing each to the coordinator / the bare broker with nothing behind it',
        ),
    ...(EXTERNAL
      ? {
          brokerIntakeReportsPerSec: ratio(
            r.ingestBurst?.pubackReportsPerSec,
            bare.ingestBurst?.pubackReportsPerSec,
            "Mosquitto's PUBACK rate to the devices with the coordinator subscribed / with a plain subscriber",
          ),
        }
      : {}),
    ingestCpuUsPerReport: ratio(
      cpuUsPerReport,
      bare.ingestBurst?.brokerCpuUsPerReport,
      EXTERNAL
        ? 'coordinator + Mosquitto CPU per report in the burst / bare Mosquitto CPU per report'
        : 'coordinator (its broker included) CPU per report in the burst / bare Aedes CPU per report',
    ),
    connectPerSecond: ratio(
      r.connect?.perSecond,
      bare.connect?.perSecond,
      'devices connected, subscribed and status acknowledged per second',
    ),
    bigWaveAssignPerSec: ratio(
      bigPerSec,
      bare.fanOut?.perSecond,
      "the 90% wave's devices / its assignPublishMs (decision, signing, publishing, delivery) / the bare broker's retained fan-out per second (N desired states from one publisher)",
    ),
    assignOnlyPerSec: ratio(
      r.assignOnly?.perSecond,
      bare.fanOut?.perSecond,
      'assign phase: N desired states received per second from rollout.create / bare fan-out per second',
    ),
    assignOnlyAllReceivedMs: ratio(
      r.assignOnly?.allReceivedMs,
      bare.fanOut?.allReceivedMs,
      'assign phase: rollout.create -> the last device received its desired state / bare: first publish -> the last device received (ms)',
    ),
    peakRssMB: EXTERNAL
      ? ratio(brokerPeak, bare.memory?.peakRssMB, "Mosquitto's peak RSS under the fleet / bare Mosquitto's (MB)")
      : ratio(
          coordinatorPeak,
          bare.memory?.peakRssMB,
          "the coordinator's peak RSS (its broker included) / bare Aedes's (MB)",
        ),
    ...(EXTERNAL
      ? {
          totalPeakRssMB: ratio(
            coordinatorPeak !== null && brokerPeak !== null ? round(coordinatorPeak + brokerPeak, 1) : null,
            bare.memory?.peakRssMB,
            "coordinator + Mosquitto peak RSS / bare Mosquitto's (MB)",
          ),
        }
      : {}),
  };
}

async function cleanup(): Promise<void> {
  const stats = coordinatorStats();
  result.coordinator = stats ? { pid: coordinator?.pid, ...stats, phases } : { phases };
  if (EXTERNAL || args.bare) result.contention = contention;
  if (mosquitto) {
    const b = brokerStats();
    result.broker = {
      ...(result.broker as object),
      /** Mosquitto's RSS (VmRSS) and peak (VmHWM), and its CPU time, at the end of the run. */
      end: b ? { rssMB: b.rssMB, peakRssMB: b.peakRssMB, cpuSeconds: b.cpuSeconds } : null,
      ...(edges.length > 0
        ? {
            edgesEnd: edges.map((e) => {
              const s = tryProcStats(e.pid);
              return s ? { rssMB: s.rssMB, peakRssMB: s.peakRssMB, cpuSeconds: s.cpuSeconds } : null;
            }),
          }
        : {}),
    };
  }
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
  if (edges.length > 0) {
    // Each edge's log names every client that connected to it (connection_messages): proof the
    // devices were held by the edges, not by the coordinator's Mosquitto.
    const connected = await Promise.all(
      edges.map(async (e) => {
        const text = await fs.readFile(e.logFile, 'utf8').catch(() => '');
        return new Set([...text.matchAll(/New client connected from \S+ as (\S+)/g)].map((m) => m[1])).size;
      }),
    );
    (result.broker as Record<string, unknown>).edgesClientsConnected = connected;
  }
  for (const e of edges) {
    const exit = await e.stop(60_000);
    log(`edge mosquitto ${e.pid} stopped (${exit.code ?? exit.signal})`);
  }
  if (mosquitto) {
    const m = mosquitto;
    // It saves its persistence file (every session and retained message) on the way out.
    const exit = await m.stop(60_000);
    log(`mosquitto stopped (${exit.code ?? exit.signal})`);
    const problems = m
      .tail(200)
      .split('\n')
      .filter((l) => /error|warning/i.test(l));
    if (problems.length > 0) (result.broker as Record<string, unknown>).logProblems = problems.slice(-20);
  }
  if (tmp && !args.keep) await fs.rm(tmp, { recursive: true, force: true, maxRetries: 3 });
  else if (tmp) result.dataDir = tmp;
}

/** `--bare`: the bare broker of the same kind with the same simulator and N, after everything else stopped. */
async function bareBaseline(): Promise<void> {
  if (!args.bare) return;
  log(`bare ${BARE_KIND} baseline with ${N} devices...`);
  const bare = await measureBareBroker({
    kind: BARE_KIND,
    devices: N,
    burst: Math.max(1, args.burst),
    workers: args.workers,
    connectConcurrency: args['connect-concurrency'],
    phaseTimeoutMs: PHASE_MS,
    mosquittoExtra: confLines(args['bare-mosquitto-conf']),
    // Behind the same number of edges as the fleet's devices.
    ...(EDGES > 0 ? { edges: EDGES } : {}),
    simNice: args['sim-nice'],
    signal: bareAbort.signal,
    onResult: (partial) => {
      result.bare = partial;
    },
  });
  for (const e of bare.errors) errors.push(`bare ${BARE_KIND}: ${e}`);
  result.bare = bare;
  result.vsBare = vsBare(bare);
  result.goals = goals();
}

function finish(): void {
  result.errors = errors;
  printResult(result);
}

/** Kills everything this run started (by its pid), prints what was measured until now, and exits. */
function abandon(why: string, code: number): void {
  errors.push(why);
  coordinator?.kill();
  sim?.kill();
  for (const e of edges) e.kill();
  mosquitto?.kill();
  bareAbort.abort();
  result.coordinator ??= { phases };
  finish();
  process.exit(code);
}

const watchdog = abandonOnTimeoutOrSignal(args['timeout-s'], abandon);

run()
  .catch((err: Error) => {
    errors.push(err.message);
    log(`error: ${err.message}`);
    if (coordinator) log(`coordinator log tail:\n${coordinator.tail(10)}`);
    if (mosquitto) log(`mosquitto log tail:\n${mosquitto.tail(10)}`);
  })
  .then(cleanup)
  .catch((err: Error) => {
    errors.push(`cleanup: ${err.message}`);
    coordinator?.kill();
    sim?.kill();
    mosquitto?.kill();
  })
  .then(bareBaseline)
  .catch((err: Error) => {
    errors.push(`bare ${BARE_KIND}: ${err.message}`);
  })
  .finally(() => {
    clearTimeout(watchdog);
    finish();
    process.exitCode = errors.length > 0 ? 1 : 0;
  });
