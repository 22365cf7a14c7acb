import { promises as fs, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { canonicalJson } from '../../shared/canonical-json.js';
import { signManifest } from '../../shared/envelope.js';
import { generateKey } from '../../shared/keys.js';
import { DESIRED_TYPE } from '../../shared/messages.js';
import { signerFor, signText } from '../../shared/signatures.js';
import { createTopics } from '../../shared/topics.js';
import { FleetSim, fleetSimWorkers } from '../fleet-sim/controller.js';
import { deviceIds } from '../fleet-sim/enrol.js';
import type { SimCounters } from '../fleet-sim/ipc.js';
import { AedesProcess, aedesVersion } from './aedes-process.js';
import {
  niceOthers,
  openFilesLimit,
  percentile,
  procStats,
  round,
  sleep,
  log as stderrLog,
  tryProcStats,
  wallMs,
  within,
} from './common.js';
import { startBareEdges } from './mosquitto-edges.js';
import { MOSQUITTO_BIN, MosquittoProcess, mosquittoVersion } from './mosquitto-process.js';
import { benchManifest } from './release.js';

/**
 * The bare-broker baseline of bench:fleet: the same simulated devices (scripts/fleet-sim, the
 * same connections, reports and bursts) against a broker with nothing behind it, so every fleet
 * figure can be given as a ratio to "the broker alone". `kind` is
 *
 *  aedes      Aedes 1.x (the coordinator's embedded broker) in a child process: defaults, no
 *             authentication, no ACL, no handlers (scripts/bench/aedes-child.ts);
 *  mosquitto  Mosquitto from its Debian package, started here with a generated config:
 *             anonymous, no persistence, one loopback listener (scripts/bench/mosquitto-process.ts).
 *
 * Phases, each limited by `phaseTimeoutMs`:
 *
 *  connect  every device connects (its own client id, persistent session, retained will),
 *           subscribes to its `desired` and publishes its retained status (QoS 1)
 *  prime    one client publishes each device a desired state (retained, QoS 1); the devices walk
 *           it to healthy, five reports each, so the burst's reports carry one model, as they do
 *           in bench:fleet (where the burst follows a rollout)
 *  burst    one subscriber on ota/v1/devices/+/reported (QoS 1); every device re-sends its report
 *           `burst` times at once (FleetSim.burst, bench:fleet's burst): first report sent -> the
 *           subscriber received the last one, every one received
 *  fanout   the devices only record what they receive; one client publishes N retained QoS 1
 *           desired states, one per device: first publish -> the last device received its own
 *           (bench:fleet's `assign` phase without the coordinator)
 *
 * Payloads have the real shapes: desired states are signed messages of shared/desired.ts's form
 * (a tiny-model release envelope), reports are the simulator's. Their sizes are in the result.
 *
 * bench:fleet's figures and theirs here:
 *  connect.ms                        connect.ms
 *  ingestBurst.reportsPerSec         ingestBurst.pubackReportsPerSec (both: first sent -> last
 *                                    PUBACK); ingestBurst.reportsPerSec is what one subscriber,
 *                                    as a coordinator behind an external broker would be, takes
 *  assignOnly.allReceivedMs          fanOut.allReceivedMs (the coordinator's also holds deciding
 *                                    and signing: its createReplyMs)
 *  coordinator.peakRssMB             memory.peakRssMB
 *  coordinator.phases[].cpuSeconds   brokerUsage.phases[].cpuSeconds
 *
 * One broker process holds every connection, so the hard limit on open files bounds N
 * (planBareBroker); one loopback source address is enough below that (28,232 ephemeral ports by
 * default).
 */

export type BrokerKind = 'aedes' | 'mosquitto';

export interface BareBrokerOptions {
  kind: BrokerKind;
  devices: number;
  /** Reports per device in the ingest burst (bench:fleet's --burst). */
  burst: number;
  /** Simulator processes; 0 = the simulator's rule (fleetSimWorkers: one per 10,000 devices, at most 4). */
  workers?: number;
  /** Connections being opened at once per worker. */
  connectConcurrency?: number;
  /** Mean delay between a device's reported transitions in the prime phase, ms. */
  stepMs?: number;
  phaseTimeoutMs?: number;
  /** No progress for this long while waiting on deliveries = the rest is lost. */
  stallMs?: number;
  /**
   * Aedes with the coordinator's retained-message store (coordinator/broker/retained-index.ts)
   * instead of the stock one, whose every SUBSCRIBE walks all retained messages.
   */
  aedesRetainedIndex?: boolean;
  mosquittoBin?: string;
  /** Mosquitto's max_inflight_messages; unset = its default (20), 0 = no limit. */
  mosquittoMaxInflight?: number;
  /** More Mosquitto config lines, verbatim (the edges' too). */
  mosquittoExtra?: readonly string[];
  /**
   * Mosquitto only: the devices connect to this many edge Mosquittos, each bridged into the one
   * the subscriber and the publisher use (bench:fleet --edges, scripts/bench/mosquitto-edges.ts):
   * more devices than one process's open-files limit. 0: none.
   */
  edges?: number;
  /** Nice value for the simulator processes and the edges (common.ts niceOthers); 0: as now. */
  simNice?: number;
  /** Aborting kills the broker and the simulator at once; the call then ends with an error. */
  signal?: AbortSignal;
  /**
   * Given the result object as soon as it exists; it fills in as the run goes, so a caller that
   * gives up (a signal, a watchdog) can print what was measured until then.
   */
  onResult?: (partial: BareBrokerResult) => void;
  log?: (line: string) => void;
  /** Overrides for the limits read from this machine (tests). */
  limits?: Partial<MachineLimits>;
}

export interface MachineLimits {
  /** Hard RLIMIT_NOFILE of a process started from here (brokers and workers inherit it). */
  fdHard: number;
  /** net.ipv4.ip_local_port_range: the source ports of connections to one broker address. */
  ephemeralPorts: [number, number];
}

export interface BareBrokerPlan {
  workers: number;
  devicesPerWorker: number;
}

/** Descriptors a broker process uses besides its client connections (listener, log, epoll, Node's own). */
export const BROKER_RESERVE_FDS = 100;

export function machineLimits(): MachineLimits {
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  return { fdHard: openFilesLimit('self').hard, ephemeralPorts: [low ?? 32768, high ?? 60999] };
}

/**
 * Checks that `devices` fit this machine's limits and picks the worker count (pure). Throws a
 * message naming the limit when they do not, so a run too big fails at once instead of hanging
 * on connections that can never open.
 */
export function planBareBroker(devices: number, workers: number, limits: MachineLimits, edges = 0): BareBrokerPlan {
  if (!Number.isInteger(devices) || devices < 1)
    throw new Error(`--devices must be a whole number >= 1, got ${devices}`);
  if (!Number.isInteger(workers) || workers < 0)
    throw new Error(`--workers must be a whole number >= 0, got ${workers}`);
  if (!Number.isInteger(edges) || edges < 0) throw new Error(`--edges must be a whole number >= 0, got ${edges}`);
  // Behind edges, each edge holds its share of the devices (the simulator's workers are spread
  // evenly over them, below) and the broker only the bridges.
  const perBroker = edges > 0 ? Math.ceil(devices / edges) : devices;
  const holder = edges > 0 ? `one of ${edges} edge brokers` : 'one broker process';
  const brokerMax = limits.fdHard - BROKER_RESERVE_FDS;
  if (perBroker > brokerMax) {
    throw new Error(
      `${devices} devices do not fit ${holder}: each connection is an open file and the hard limit on open files (RLIMIT_NOFILE, ulimit -Hn) is ${limits.fdHard} per process here, so at most ${brokerMax} devices per broker (${BROKER_RESERVE_FDS} kept for the broker's own files); raising the hard limit needs CAP_SYS_RESOURCE${edges > 0 ? '' : ', or use --edges'}`,
    );
  }
  const [low, high] = limits.ephemeralPorts;
  const ports = high - low + 1;
  // The subscriber and the publisher connect to the broker itself, not to an edge.
  const clients = edges > 0 ? perBroker : devices + 2;
  if (clients > ports) {
    throw new Error(
      `${devices} devices do not fit the ephemeral ports: every connection to a broker's one address needs its own source port and net.ipv4.ip_local_port_range is ${low}-${high} (${ports} ports), so at most ${ports - (edges > 0 ? 0 : 2)} devices${edges > 0 ? ' per edge' : ''}`,
    );
  }
  // A simulator process has the broker's open-files limit and at most its connections, so the
  // broker's check above covers one process holding them all; fleetSimWorkers checks an explicit
  // --workers the same way. Behind edges the count is rounded up to a multiple of them (worker i
  // connects to edge i mod K), as bench:fleet does.
  const simWorkers = fleetSimWorkers(devices, workers, limits.fdHard);
  const n = Math.min(edges > 0 ? Math.ceil(simWorkers / edges) * edges : simWorkers, devices);
  return { workers: n, devicesPerWorker: Math.ceil(devices / n) };
}

export interface BrokerUsage {
  rssMB: number;
  peakRssMB: number;
  cpuSeconds: number;
}

export interface PhaseUsage {
  phase: string;
  ms: number;
  /** The broker's CPU time over the phase. */
  cpuSeconds: number;
  /** The broker's RSS at its end. */
  rssMB: number;
  /** The simulator workers' CPU time over the phase (the machine's other big user). */
  simCpuSeconds: number;
  /** This process's: the subscriber and the publisher, and the simulator's controller. */
  benchCpuSeconds: number;
  /** With edges: their CPU time over the phase, together (not in cpuSeconds, the broker's own). */
  edgesCpuSeconds?: number;
  /**
   * CPU time the rest of the machine took over the phase (all CPUs busy, /proc/stat, minus the
   * three above; 10 ms ticks, so +-0.05): well above 0 means something else competed and the
   * phase's times are suspect.
   */
  otherCpuSeconds: number;
}

export interface BareBrokerResult {
  kind: BrokerKind;
  broker: {
    version: string | null;
    pid: number | null;
    url: string | null;
    fdLimit: { soft: number; hard: number } | null;
    /** Aedes's in-memory store: the stock one, or the coordinator's retained index. */
    persistence?: 'stock' | 'retained-index';
    /** Mosquitto's generated config, line by line. */
    config?: string[];
    /** With edges: the Mosquittos the devices connect to, each bridged into this one. */
    edges?: { pid: number; url: string }[];
    /** The first edge's config, line by line (the others differ in port and bridge name). */
    edgeConfig?: string[];
  };
  devices: number;
  burstReportsPerDevice: number;
  workers: number;
  connect?: {
    connected: number;
    failed: number;
    firstError: string | null;
    /** First CONNECT sent -> every device subscribed and its retained status acknowledged. */
    ms: number;
    perSecond: number;
    perDeviceP50Ms: number;
    perDeviceP99Ms: number;
  };
  held?: {
    /** Devices connected and subscribed (the simulator's count). */
    devices: number;
    /** The broker's open descriptors: one per connection plus its own (behind edges: one per edge). */
    brokerOpenFds: number | null;
    /** With edges: each edge's open descriptors. */
    edgeOpenFds?: (number | null)[];
    /** Connections that dropped at any point of the run (each reconnects): 0 when all were held throughout. */
    disconnects: number;
  };
  memory?: {
    /** Broker RSS before any device connected. */
    idleRssMB: number;
    /** Broker RSS once all were connected and subscribed. */
    afterConnectRssMB: number;
    /** (afterConnect - idle) / devices: session, socket buffers, retained status and subscription. */
    perDeviceKB: number;
    /** The broker's peak RSS over the run (VmHWM). */
    peakRssMB: number;
    /** With edges: each edge's RSS at the end (the connections' memory is theirs, not the broker's). */
    edgesRssMB?: number[];
  };
  prime?: { ms: number; reports: number; desiredBytes: number };
  /**
   * When the subscriber subscribed: how many of the devices' prime reports it was sent retained;
   * the rest (with edges, those still crossing the bridges) came live, and were waited for.
   */
  primeAtSubscriber?: { retained: number; devices: number };
  ingestBurst?: {
    reports: number;
    acknowledged: number;
    received: number;
    lost: number;
    /** Devices whose burst did not reach the subscriber in full. */
    devicesShort: number;
    /** First report sent -> the subscriber received the last. */
    ms: number;
    reportsPerSec: number;
    /** First report sent -> the last PUBACK at the devices (bench:fleet's ingestBurst.ms definition). */
    pubackMs: number;
    pubackReportsPerSec: number;
    reportBytes: number;
    brokerCpuSeconds: number;
    /**
     * Broker CPU per report (taking it, acknowledging it, keeping it retained, delivering it to
     * the subscriber). The rates above are bounded by whatever saturates first on the machine
     * (the simulator and the subscriber share it); this is the broker's own cost.
     */
    brokerCpuUsPerReport: number;
  };
  fanOut?: {
    messages: number;
    received: number;
    desiredBytes: number;
    /** First publish -> the publisher had every PUBACK. */
    publishAckMs: number;
    /** First publish -> the last device received its desired state. */
    allReceivedMs: number | null;
    /** First -> last device receiving. */
    spreadMs: number | null;
    perSecond: number | null;
    brokerCpuSeconds: number;
    /** Broker CPU per desired state (taking it, keeping it retained, delivering it). */
    brokerCpuUsPerMessage: number;
  };
  brokerUsage?: { end: BrokerUsage | null; phases: PhaseUsage[] };
  /** --sim-nice: the value, and each simulator process's and edge's nice as read back. */
  simNice?: { value: number; readBack: number[] };
  sim?: { counters: SimCounters | null; workers: number; rssMB: number[]; cpuSeconds: number[] };
  errors: string[];
}

const topics = createTopics();
const MODEL = 'bench-model';

type Broker = AedesProcess | MosquittoProcess;

/**
 * Signed desired-state messages, one per device, of the coordinator's form (a tiny-model release
 * envelope; no trust chain, which the coordinator adds once a trust document is published).
 */
export function desiredPayloads(
  ids: readonly string[],
  release: { version: string; rolloutId: string; seq: number; counter: number },
): Buffer[] {
  const releaseKey = generateKey();
  const envelope = signManifest(
    benchManifest(
      { sha256: 'ab'.repeat(32), size: 1_234 },
      { model: MODEL, version: release.version, counter: release.counter },
    ),
    [signerFor(releaseKey)],
  );
  const signer = signerFor(generateKey(), { fast: true });
  const issuedAt = new Date().toISOString();
  return ids.map((deviceId) => {
    const text = canonicalJson({
      type: DESIRED_TYPE,
      deviceId,
      seq: release.seq,
      issuedAt,
      models: { [MODEL]: { envelope, rolloutId: release.rolloutId } },
    });
    return Buffer.from(JSON.stringify({ desired: text, signatures: signText(text, [signer]) }));
  });
}

/** CPU time all CPUs of the machine spent busy since boot, seconds (/proc/stat; USER_HZ = 100). */
export function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: all but idle and iowait
  const busy = fields.slice(0, 8).reduce((a, v, i) => (i === 3 || i === 4 ? a : a + v), 0);
  return busy / 100;
}

/** Open descriptors of a process (null when it is gone). */
function openFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/**
 * Polls `read` until it reaches `target`. Fails on `timeoutMs`, or when the value has not moved
 * for `stallMs` (what has not come by then is lost, not late).
 */
async function waitCount(
  what: string,
  read: () => number | Promise<number>,
  target: number,
  o: { timeoutMs: number; stallMs: number; pollMs?: number },
): Promise<number> {
  const start = Date.now();
  let last = -1;
  let movedAt = Date.now();
  for (;;) {
    const v = await read();
    if (v >= target) return v;
    if (v !== last) {
      last = v;
      movedAt = Date.now();
    }
    if (Date.now() - movedAt > o.stallMs) {
      throw new Error(`${what}: ${v} of ${target}, no progress for ${o.stallMs} ms`);
    }
    if (Date.now() - start > o.timeoutMs) throw new Error(`${what}: ${v} of ${target} after ${o.timeoutMs} ms`);
    await sleep(o.pollMs ?? 50);
  }
}

/**
 * The devices whose newest report at the subscriber is the prime's last (every model healthy),
 * fed every report it is sent, in order, retained or live. Why not a count of retained reports:
 * the devices' PUBACKs come from their edge, and with edges the core may still be receiving the
 * prime's reports over the bridges when the subscriber subscribes; those arrive live, not
 * retained (MQTT 3.1.1 section 3.3.1.3), so a count of retained ones stops short of N.
 */
export class PrimedDevices {
  private readonly done = new Set<string>();
  retained = 0;

  seen(topic: string, payload: Buffer, retained: boolean): void {
    if (retained) this.retained++;
    if (PrimedDevices.healthy(payload)) this.done.add(topic);
    else this.done.delete(topic);
  }

  get size(): number {
    return this.done.size;
  }

  private static healthy(payload: Buffer): boolean {
    try {
      const models = (JSON.parse(payload.toString('utf8')) as { models?: Record<string, { state?: unknown }> }).models;
      const all = models && typeof models === 'object' ? Object.values(models) : [];
      return all.length > 0 && all.every((m) => m?.state === 'healthy');
    } catch {
      return false;
    }
  }
}

async function client(url: string, clientId: string): Promise<MqttClient> {
  return mqtt.connectAsync(url, {
    clientId,
    username: clientId,
    password: 'bare',
    clean: true,
    protocolVersion: 4,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
  });
}

/** Publishes every payload at once (retained, QoS 1); resolves with when the last PUBACK came. */
async function publishAll(c: MqttClient, ids: readonly string[], payloads: readonly Buffer[]): Promise<number> {
  await Promise.all(
    ids.map((id, i) => c.publishAsync(topics.desired(id), payloads[i] as Buffer, { qos: 1, retain: true })),
  );
  return wallMs();
}

/**
 * Runs the baseline against one broker kind and returns its figures. Bad input and sizes beyond
 * the machine's limits throw before anything starts; a phase that fails ends the run with what
 * was measured until then and the failure in `errors`. Everything started is stopped.
 */
export async function measureBareBroker(options: BareBrokerOptions): Promise<BareBrokerResult> {
  const o = {
    workers: 0,
    connectConcurrency: 50,
    stepMs: 20,
    phaseTimeoutMs: 600_000,
    stallMs: 30_000,
    mosquittoBin: MOSQUITTO_BIN,
    log: stderrLog,
    // An option given as undefined keeps its default.
    ...(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as BareBrokerOptions),
  };
  const say = o.log;
  const edgeCount = o.edges ?? 0;
  if (edgeCount !== 0 && o.kind !== 'mosquitto') {
    throw new Error(
      `--edges ${edgeCount}: edge brokers are Mosquittos bridged into a Mosquitto; use --broker mosquitto`,
    );
  }
  const plan = planBareBroker(o.devices, o.workers, { ...machineLimits(), ...o.limits }, edgeCount);
  niceOthers([], o.simNice ?? 0); // checks the value before anything starts
  if (!Number.isInteger(o.burst) || o.burst < 1) throw new Error(`--burst must be a whole number >= 1, got ${o.burst}`);
  const N = o.devices;
  const result: BareBrokerResult = {
    kind: o.kind,
    broker: { version: null, pid: null, url: null, fdLimit: null },
    devices: N,
    burstReportsPerDevice: o.burst,
    workers: plan.workers,
    errors: [],
  };
  o.onResult?.(result);
  const phases: PhaseUsage[] = [];
  let broker: Broker | null = null;
  const edges: MosquittoProcess[] = [];
  let sim: FleetSim | null = null;
  let subscriber: MqttClient | null = null;
  let publisher: MqttClient | null = null;
  let tmp = '';
  const onAbort = () => {
    broker?.kill();
    for (const e of edges) e.kill();
    sim?.kill();
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const waitOpts = { timeoutMs: o.phaseTimeoutMs, stallMs: o.stallMs };

  try {
    o.signal?.throwIfAborted();
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), `ota-bench-bare-${o.kind}-`));
    if (o.kind === 'aedes') {
      broker = await AedesProcess.start({ retainedIndex: o.aedesRetainedIndex === true });
      result.broker.version = aedesVersion();
      result.broker.persistence = o.aedesRetainedIndex ? 'retained-index' : 'stock';
    } else {
      const m = await MosquittoProcess.start({
        dir: tmp,
        bin: o.mosquittoBin,
        // The subscriber is sent the retained reports and the whole burst; Mosquitto's default
        // queue (1000) would drop most of it.
        maxQueuedMessages: N * (o.burst + 2) + 1000,
        ...(o.mosquittoMaxInflight !== undefined ? { maxInflightMessages: o.mosquittoMaxInflight } : {}),
        ...(o.mosquittoExtra ? { extra: o.mosquittoExtra } : {}),
        // Known from its spawn: an abort during its start (~100 ms) kills it too.
        onSpawn: (p) => {
          broker = p;
        },
      });
      broker = m;
      o.signal?.throwIfAborted();
      result.broker.version = await mosquittoVersion(o.mosquittoBin);
      result.broker.config = m.config.trimEnd().split('\n');
      if (edgeCount > 0) {
        // Into `edges` as each starts: an abort meanwhile stops those already running.
        await startBareEdges(
          {
            count: edgeCount,
            dir: tmp,
            corePort: m.port,
            bin: o.mosquittoBin,
            // What an edge queues for its bridge (the burst, on its way to the broker) and for each device.
            maxQueuedMessages: N * (o.burst + 2) + 1000,
            ...(o.mosquittoMaxInflight !== undefined ? { maxInflightMessages: o.mosquittoMaxInflight } : {}),
            extra: o.mosquittoExtra ?? [],
          },
          edges,
        );
        o.signal?.throwIfAborted();
        result.broker.edges = edges.map((e) => ({ pid: e.pid, url: e.url }));
        result.broker.edgeConfig = edges[0]?.config.trimEnd().split('\n');
      }
    }
    const b = broker;
    result.broker.pid = b.pid;
    result.broker.url = b.url;
    result.broker.fdLimit = openFilesLimit(b.pid);
    await sleep(200); // let it settle before the idle RSS
    // The broker's figures; throws (failing the phase) if it is gone.
    const stats = () => procStats(b.pid);
    const idle = stats();
    say(`${o.kind} ${result.broker.version} pid ${b.pid} at ${b.url}; ${N} devices, ${plan.workers} workers`);
    if (edges.length > 0)
      say(`  behind ${edges.length} edges: ${edges.map((e) => `pid ${e.pid} at ${e.url}`).join(', ')}`);

    const ids = deviceIds('bare', N);
    const s = await FleetSim.start(
      {
        url: b.url,
        // Worker i connects to edge i mod K (the plan makes the workers a multiple of K).
        ...(edges.length > 0 ? { urls: edges.map((e) => e.url) } : {}),
        keepaliveS: 30,
        connectConcurrency: o.connectConcurrency,
        connectTimeoutMs: Math.min(o.phaseTimeoutMs, 120_000),
        stepMs: o.stepMs,
        jitter: 0.5,
        fail: { probability: 0, devices: [], versions: [] },
      },
      ids.map((id) => ({ id, token: 'bare' })),
      plan.workers,
    );
    sim = s;
    const niced = niceOthers([...s.pids, ...edges.map((e) => e.pid)], o.simNice ?? 0);
    if ((o.simNice ?? 0) !== 0) result.simNice = { value: o.simNice as number, readBack: niced };
    const cpu = (pids: readonly (number | 'self')[]) => pids.reduce<number>((a, p) => a + procStats(p).cpuSeconds, 0);
    const edgePids = edges.map((e) => e.pid);
    /** Runs one phase within the phase limit; its result, and the CPU and memory it took. */
    const phase = async <T>(name: string, fn: () => Promise<T>): Promise<[T, PhaseUsage]> => {
      say(`${o.kind}: ${name}...`);
      const before = {
        broker: stats().cpuSeconds,
        sim: cpu(s.pids),
        self: cpu(['self']),
        edges: cpu(edgePids),
        all: machineBusySeconds(),
      };
      const t0 = wallMs();
      const value = await within(fn(), o.phaseTimeoutMs, `${o.kind} ${name} phase`);
      const after = stats();
      const ours = {
        broker: after.cpuSeconds - before.broker,
        sim: cpu(s.pids) - before.sim,
        self: cpu(['self']) - before.self,
        edges: cpu(edgePids) - before.edges,
      };
      const usage: PhaseUsage = {
        phase: name,
        ms: Math.round(wallMs() - t0),
        cpuSeconds: round(ours.broker, 2),
        rssMB: after.rssMB,
        simCpuSeconds: round(ours.sim, 2),
        benchCpuSeconds: round(ours.self, 2),
        ...(edges.length > 0 ? { edgesCpuSeconds: round(ours.edges, 2) } : {}),
        otherCpuSeconds: round(machineBusySeconds() - before.all - ours.broker - ours.sim - ours.self - ours.edges, 2),
      };
      phases.push(usage);
      say(
        `${o.kind}: ${name} done in ${usage.ms} ms (broker rss ${usage.rssMB} MB, cpu s: broker ${usage.cpuSeconds}, sim ${usage.simCpuSeconds}, others ${usage.otherCpuSeconds})`,
      );
      return [value, usage];
    };

    // ---- connect ----
    const [c] = await phase('connect', () => s.connect());
    result.connect = {
      connected: c.connected,
      failed: c.failed,
      firstError: c.firstError,
      ms: Math.round(c.doneAt - c.startedAt),
      perSecond: Math.round(c.connected / ((c.doneAt - c.startedAt) / 1000)),
      perDeviceP50Ms: percentile(c.latenciesMs, 50),
      perDeviceP99Ms: percentile(c.latenciesMs, 99),
    };
    const afterConnect = stats();
    result.held = {
      devices: (await s.counters()).connected,
      brokerOpenFds: openFds(b.pid),
      ...(edges.length > 0 ? { edgeOpenFds: edgePids.map(openFds) } : {}),
      disconnects: 0,
    };
    result.memory = {
      idleRssMB: idle.rssMB,
      afterConnectRssMB: afterConnect.rssMB,
      perDeviceKB: round(((afterConnect.rssMB - idle.rssMB) * 1024) / N, 2),
      peakRssMB: afterConnect.peakRssMB,
    };
    if (c.failed > 0) throw new Error(`${c.failed} of ${N} devices could not connect: ${c.firstError}`);

    // ---- prime: one desired state each, walked to healthy ----
    const pub = await client(b.url, 'bare-bench-publisher');
    publisher = pub;
    const primePayloads = desiredPayloads(ids, { version: '2.0.0', rolloutId: 'bare-prime', seq: 1, counter: 1 });
    const [prime] = await phase('prime', async () => {
      const base = (await s.counters()).reportsAcked;
      const t0 = wallMs();
      await publishAll(pub, ids, primePayloads);
      // downloading, verifying, applying, probing, healthy
      const reported = async () => (await s.counters()).reportsAcked - base;
      await waitCount('prime reports acknowledged', reported, 5 * N, { ...waitOpts, pollMs: 200 });
      if (!(await s.waitIdle(o.stallMs))) throw new Error('prime: devices still busy after their five reports');
      return { ms: Math.round(wallMs() - t0), reports: 5 * N };
    });
    result.prime = { ...prime, desiredBytes: (primePayloads[0] as Buffer).length };

    // ---- burst: the subscriber counts what it is sent ----
    const sub = await client(b.url, 'bare-bench-subscriber');
    subscriber = sub;
    let live = 0;
    let lastLiveAt = 0;
    let reportBytes = 0;
    const perDevice = new Map<string, number>();
    // Until the burst: every device's prime report, however it comes (PrimedDevices).
    const primed = new PrimedDevices();
    let bursting = false;
    sub.on('message', (topic, payload, packet) => {
      if (!bursting) {
        primed.seen(topic, payload, packet.retain);
        return;
      }
      live++;
      lastLiveAt = wallMs();
      reportBytes = payload.length;
      perDevice.set(topic, (perDevice.get(topic) ?? 0) + 1);
    });
    // What happened to the subscriber's connection, named when a count stalls (it does not
    // reconnect: a lost connection is a failed run, and this says how it was lost).
    const subEvents: string[] = [];
    sub.on('close', () =>
      subEvents.push(`connection closed after ${primed.retained} retained and ${live} live reports`),
    );
    sub.on('error', (err) => subEvents.push(`error: ${err.message}`));
    const stalled = (err: unknown) =>
      new Error(`${(err as Error).message}${subEvents.length > 0 ? ` (subscriber: ${subEvents.join('; ')})` : ''}`);
    await sub.subscribeAsync(topics.allDevices('reported'), { qos: 1 });
    // Every device's prime report first (retained, or live if the bridges were still carrying
    // it), so they do not share the burst's pipe.
    try {
      await waitCount('devices whose prime report reached the subscriber', () => primed.size, N, waitOpts);
    } catch (err) {
      throw stalled(err);
    }
    bursting = true;
    result.primeAtSubscriber = { retained: primed.retained, devices: primed.size };
    const expected = N * o.burst;
    const [burst, burstUsage] = await phase('burst', async () => {
      const r = await s.burst(o.burst);
      let error: string | null = null;
      try {
        await waitCount('burst reports at the subscriber', () => live, expected, waitOpts);
      } catch (err) {
        error = stalled(err).message;
      }
      return { ...r, received: live, lastLiveAt, error };
    });
    let devicesShort = 0;
    for (const id of ids) if ((perDevice.get(topics.reported(id)) ?? 0) < o.burst) devicesShort++;
    const recvMs = burst.lastLiveAt - burst.startedAt;
    result.ingestBurst = {
      reports: expected,
      acknowledged: burst.acked,
      received: burst.received,
      lost: expected - burst.received,
      devicesShort,
      ms: Math.round(recvMs),
      reportsPerSec: Math.round(burst.received / (recvMs / 1000)),
      pubackMs: Math.round(burst.doneAt - burst.startedAt),
      pubackReportsPerSec: Math.round(burst.acked / ((burst.doneAt - burst.startedAt) / 1000)),
      reportBytes,
      brokerCpuSeconds: burstUsage.cpuSeconds,
      brokerCpuUsPerReport: round((burstUsage.cpuSeconds * 1e6) / expected, 1),
    };
    if (burst.error) throw new Error(burst.error);

    // ---- fan-out: N retained desired states, one per device ----
    await s.setBehaviour({ silent: true });
    const fanPayloads = desiredPayloads(ids, { version: '5.0.0', rolloutId: 'bare-fanout', seq: 2, counter: 2 });
    const [fan, fanUsage] = await phase('fanout', async () => {
      const base = (await s.counters()).desiredReceived;
      const t0 = wallMs();
      const acked = publishAll(pub, ids, fanPayloads);
      const received = async () => (await s.counters()).desiredReceived - base;
      await waitCount('desired states received by the devices', received, N, { ...waitOpts, pollMs: 100 });
      return { t0, ackedAt: await acked };
    });
    // Each device's own clock reading when its desired state arrived (one host: comparable).
    const got = Object.values(await s.traces(['bare-fanout'])).map((t) => t['bare-fanout']?.desiredAt ?? Number.NaN);
    const last = Math.max(...got);
    result.fanOut = {
      messages: N,
      received: got.filter(Number.isFinite).length,
      desiredBytes: (fanPayloads[0] as Buffer).length,
      publishAckMs: Math.round(fan.ackedAt - fan.t0),
      allReceivedMs: Math.round(last - fan.t0),
      spreadMs: Math.round(last - Math.min(...got)),
      perSecond: Math.round(got.length / ((last - fan.t0) / 1000)),
      brokerCpuSeconds: fanUsage.cpuSeconds,
      brokerCpuUsPerMessage: round((fanUsage.cpuSeconds * 1e6) / N, 1),
    };
    if (result.fanOut.received < N)
      throw new Error(`fan-out: ${result.fanOut.received} of ${N} devices recorded their desired state`);
  } catch (err) {
    result.errors.push((err as Error).message);
    say(`${o.kind}: error: ${(err as Error).message}`);
    if (broker instanceof MosquittoProcess) say(`mosquitto log tail:\n${broker.tail(10)}`);
    for (const [i, e] of edges.entries()) say(`edge ${i} log tail:\n${e.tail(5)}`);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    const end = broker ? tryProcStats(broker.pid) : null;
    if (result.memory && end) result.memory.peakRssMB = end.peakRssMB;
    if (result.memory && edges.length > 0) result.memory.edgesRssMB = edges.map((e) => tryProcStats(e.pid)?.rssMB ?? 0);
    result.brokerUsage = {
      end: end ? { rssMB: end.rssMB, peakRssMB: end.peakRssMB, cpuSeconds: end.cpuSeconds } : null,
      phases,
    };
    if (sim) {
      const counters = await within(sim.counters(), 10_000, 'simulator counters').catch(() => null);
      if (result.held && counters) result.held.disconnects = counters.disconnects;
      const u = sim.usage();
      result.sim = { counters, workers: u.workers, rssMB: u.rssMB, cpuSeconds: u.cpuSeconds };
    }
    await subscriber?.endAsync(true).catch(() => {});
    await publisher?.endAsync(true).catch(() => {});
    await sim?.stop(10_000);
    for (const e of edges) await e.stop(10_000);
    await broker?.stop(10_000);
    if (tmp) await fs.rm(tmp, { recursive: true, force: true, maxRetries: 3 });
    say(`${o.kind}: stopped`);
  }
  return result;
}
