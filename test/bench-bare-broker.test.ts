import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import t from 'tap';
import {
  BROKER_RESERVE_FDS,
  desiredPayloads,
  PrimedDevices,
  planBareBroker,
} from '../scripts/bench/bare-broker-measure.js';
import { niceOthers } from '../scripts/bench/common.js';
import {
  MOSQUITTO_BIN,
  MosquittoProcess,
  mosquittoConfig,
  mosquittoVersion,
} from '../scripts/bench/mosquitto-process.js';
import { fleetSimWorkers } from '../scripts/fleet-sim/controller.js';
import { parseDesired } from '../scripts/fleet-sim/device.js';

/**
 * bench:bare-broker (scripts/bench/bare-broker.ts) is a script, not a timed test: this runs it
 * tiny from dist/ (`npm test` builds first) against both brokers and checks what it counted, so
 * it cannot rot. No timing is asserted. The Mosquitto half needs Debian's mosquitto package: a
 * skip where it is missing, a failure under CI (.ci/run installs it).
 */

const ciSet = (process.env.CI ?? '') !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const noMosquitto = !existsSync(MOSQUITTO_BIN) && !ciSet;
const mosquittoSkip = noMosquitto ? `no mosquitto at ${MOSQUITTO_BIN} (apt-get install mosquitto)` : false;

const SCRIPT = fileURLToPath(new URL('../dist/scripts/bench/bare-broker.js', import.meta.url));

interface Run {
  code: number | null;
  json: Record<string, unknown>;
  stderr: string;
}

function runBench(args: string[], timeoutMs = 50_000, interruptAt?: RegExp): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      // Only the bench itself gets the signal, as from a job runner's timeout.
      if (interruptAt?.test(stderr) && child.exitCode === null) {
        interruptAt = undefined;
        child.kill('SIGTERM');
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, json: JSON.parse(stdout) as Record<string, unknown>, stderr });
      } catch {
        reject(
          new Error(
            `bare-broker printed no JSON document (exit ${code}):\n${stdout.slice(-2000)}\n${stderr.slice(-3000)}`,
          ),
        );
      }
    });
  });
}

/** What one broker's run must have counted with `devices` devices and `burst` reports each. */
function counted(devices: number, burst: number, broker: Record<string, unknown> = {}) {
  return {
    devices,
    errors: [],
    broker: { version: String, pid: Number, url: String, fdLimit: { soft: Number, hard: Number }, ...broker },
    connect: { connected: devices, failed: 0, ms: Number, perSecond: Number },
    held: { devices, disconnects: 0 },
    memory: { idleRssMB: Number, afterConnectRssMB: Number, perDeviceKB: Number, peakRssMB: Number },
    prime: { reports: devices * 5, desiredBytes: Number },
    primeAtSubscriber: { retained: Number, devices },
    ingestBurst: {
      reports: devices * burst,
      acknowledged: devices * burst,
      received: devices * burst,
      lost: 0,
      devicesShort: 0,
      reportsPerSec: Number,
      pubackReportsPerSec: Number,
      brokerCpuUsPerReport: Number,
    },
    fanOut: { messages: devices, received: devices, allReceivedMs: Number, perSecond: Number },
    brokerUsage: { phases: [{ phase: 'connect' }, { phase: 'prime' }, { phase: 'burst' }, { phase: 'fanout' }] },
    sim: { counters: { devices, reportErrors: 0, desiredInvalid: 0, connectFailures: 0 } },
  };
}

/** /proc/<pid>/status, or '' once it is gone. */
function readStatus(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

const heldFds = (r: unknown) => (r as { held: { brokerOpenFds: number } }).held.brokerOpenFds;

t.test(
  'fleetSimWorkers: one simulator process per 10,000 devices, at most 4, and enough for the open-files limit',
  async (t) => {
    t.equal(fleetSimWorkers(1), 1);
    t.equal(fleetSimWorkers(10_000), 1);
    t.equal(fleetSimWorkers(10_001), 2);
    t.equal(fleetSimWorkers(1_000_000), 4, 'at most 4 when the limit allows');
    t.equal(fleetSimWorkers(10_000, 0, 4096), 3, 'a 4,096 limit: 3,996 connections per process');
    t.equal(fleetSimWorkers(100_000, 0, 20_000), 6, 'more than 4 when the limit needs them');
    t.equal(fleetSimWorkers(10_000, 7, 20_000), 7, 'an explicit count is kept');
    t.throws(() => fleetSimWorkers(10_000, 2, 4096), {
      message:
        /2 simulator processes cannot hold 10000 devices: each connection is an open file and the hard limit on open files \(ulimit -Hn\) is 4096 per process here, so use --workers 3 or more/,
    });
  },
);

t.test('planBareBroker: sizes within the limits, and a clear refusal naming the limit beyond them', async (t) => {
  const limits = { fdHard: 20_000, ephemeralPorts: [32768, 60999] as [number, number] };
  t.same(planBareBroker(1000, 0, limits), { workers: 1, devicesPerWorker: 1000 });
  t.same(planBareBroker(10_000, 0, limits), { workers: 1, devicesPerWorker: 10_000 });
  t.same(planBareBroker(10_001, 0, limits), { workers: 2, devicesPerWorker: 5001 });
  t.same(planBareBroker(19_000, 2, limits), { workers: 2, devicesPerWorker: 9500 });
  t.same(planBareBroker(3, 8, limits), { workers: 3, devicesPerWorker: 1 }, 'never more workers than devices');
  const most = 20_000 - BROKER_RESERVE_FDS;
  t.same(planBareBroker(most, 0, limits).workers, 2);
  t.same(planBareBroker(50_000, 0, { fdHard: 100_000, ephemeralPorts: [1024, 65535] }).workers, 4, 'at most 4');
  t.throws(() => planBareBroker(most + 1, 0, limits), {
    message: new RegExp(
      `hard limit on open files \\(RLIMIT_NOFILE, ulimit -Hn\\) is 20000 per process.*at most ${most} devices`,
    ),
  });
  t.throws(() => planBareBroker(850, 0, { ...limits, fdHard: 900 }), {
    message: /is 900 per process here, so at most 800 devices/,
  });
  t.throws(() => planBareBroker(5000, 0, { fdHard: 100_000, ephemeralPorts: [60000, 60999] }), {
    message: /ip_local_port_range is 60000-60999 \(1000 ports\), so at most 998 devices/,
  });
  t.throws(() => planBareBroker(50_000, 0, limits), { message: /do not fit one broker process.*, or use --edges$/ });
  // Behind edges: each edge holds its share, and the workers are a multiple of the edges.
  t.same(planBareBroker(50_000, 0, limits, 4), { workers: 4, devicesPerWorker: 12_500 });
  t.same(planBareBroker(10, 0, limits, 4), { workers: 4, devicesPerWorker: 3 }, 'one worker per edge at least');
  t.same(planBareBroker(30_000, 0, limits, 3), { workers: 3, devicesPerWorker: 10_000 });
  t.throws(() => planBareBroker(50_000, 0, limits, 2), {
    message: new RegExp(`50000 devices do not fit one of 2 edge brokers: .* at most ${most} devices per broker`),
  });
  t.throws(() => planBareBroker(50_000, 0, { fdHard: 100_000, ephemeralPorts: [50000, 60999] }, 4), {
    message: /ip_local_port_range is 50000-60999 \(11000 ports\), so at most 11000 devices per edge/,
  });
  t.throws(() => planBareBroker(10, 0, limits, -1), { message: /--edges must be a whole number >= 0, got -1/ });
  t.throws(() => planBareBroker(0, 0, limits), { message: /--devices must be a whole number >= 1, got 0/ });
  t.throws(() => planBareBroker(10, 1.5, limits), { message: /--workers must be a whole number >= 0, got 1.5/ });
});

t.test('niceOthers: the processes standing in for other machines get the nice value asked for', async (t) => {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  const pid = child.pid as number;
  t.strictSame(niceOthers([pid], 0), [os.getPriority(process.pid)], '0: left as it was (inherited from us)');
  t.strictSame(niceOthers([pid], 7), [7]);
  t.equal(os.getPriority(pid), 7);
  t.strictSame(niceOthers([], 19), []);
  for (const bad of [20, -1, 1.5]) {
    t.throws(() => niceOthers([pid], bad), {
      message: `--sim-nice must be a whole number from 0 (as now) to 19 (lowest priority), got ${bad}`,
    });
  }
  t.equal(os.getPriority(pid), 7, 'a refused value changes nothing');
});

t.test(
  'PrimedDevices: a device counts once its newest report at the subscriber is healthy, retained or live',
  async (t) => {
    const report = (...states: string[]) =>
      Buffer.from(
        JSON.stringify({ deviceId: 'd', models: Object.fromEntries(states.map((s, i) => [`m${i}`, { state: s }])) }),
      );
    const p = new PrimedDevices();
    // The core had only an older report when the subscriber subscribed; the last came over the bridge.
    p.seen('a', report('probing'), true);
    t.equal(p.size, 0, 'a retained report before healthy does not count');
    p.seen('a', report('healthy'), false);
    t.equal(p.size, 1, 'the live healthy report after it does');
    p.seen('b', report('healthy'), true);
    t.equal(p.size, 2, 'a retained healthy report counts');
    p.seen('b', report('healthy'), true);
    t.equal(p.size, 2, 'once per device');
    p.seen('c', report('healthy', 'applying'), true);
    t.equal(p.size, 2, 'every model must be healthy');
    p.seen('b', report('downloading'), false);
    t.equal(p.size, 1, 'a newer report that is not healthy takes the device out again');
    for (const bad of ['{', '[]', '{"models":null}', '{"models":{}}', '{"models":{"m":null}}'])
      p.seen('d', Buffer.from(bad), false);
    t.equal(p.size, 1, 'unreadable or empty reports never count, and do not throw');
    t.equal(p.retained, 4, 'the retained reports are counted apart');
  },
);

t.test('desiredPayloads: one signed desired state per device, as the simulator reads them', async (t) => {
  const payloads = desiredPayloads(['d-1', 'constructor'], { version: '2.0.0', rolloutId: 'r-1', seq: 3, counter: 1 });
  t.equal(payloads.length, 2);
  const parsed = payloads.map((p) => parseDesired(p));
  t.same(
    parsed.map((p) => [p.deviceId, p.seq, p.models['bench-model']?.version, p.models['bench-model']?.rolloutId]),
    [
      ['d-1', 3, '2.0.0', 'r-1'],
      ['constructor', 3, '2.0.0', 'r-1'],
    ],
  );
});

t.test('mosquittoConfig: the generated config', async (t) => {
  const base = { port: 18830, logFile: '/tmp/x/mosquitto.log', maxQueuedMessages: 5000 };
  const asRoot = mosquittoConfig({ ...base, runAsRoot: true }).split('\n');
  t.ok(asRoot.includes('listener 18830 127.0.0.1'));
  t.ok(asRoot.includes('allow_anonymous true'));
  t.ok(asRoot.includes('persistence false'));
  t.ok(asRoot.includes('max_queued_messages 5000'));
  t.ok(asRoot.includes('log_dest file /tmp/x/mosquitto.log'));
  t.ok(asRoot.includes('user root'));
  t.notOk(
    asRoot.some((l) => l.startsWith('max_inflight_messages')),
    "Mosquitto's default unless told",
  );
  const other = mosquittoConfig({ ...base, runAsRoot: false, maxInflightMessages: 0, extra: ['set_tcp_nodelay true'] });
  t.notOk(other.split('\n').includes('user root'), 'no `user root` when not running as root');
  t.match(other, /^max_inflight_messages 0$/m);
  t.match(other, /set_tcp_nodelay true\n$/);
  t.throws(() => mosquittoConfig({ ...base, port: 0, runAsRoot: false }), { message: /port must be 1-65535, got 0/ });
  t.throws(() => mosquittoConfig({ ...base, maxQueuedMessages: -1, runAsRoot: false }), {
    message: /max_queued_messages must be a whole number >= 0, got -1/,
  });
});

t.test('MosquittoProcess: started on a free port, stopped by its pid', { skip: mosquittoSkip }, async (t) => {
  t.ok(existsSync(MOSQUITTO_BIN), 'mosquitto is installed');
  t.match(await mosquittoVersion(), /^2\./);
  t.equal(await mosquittoVersion('/nonexistent/mosquitto'), null);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-test-mosquitto-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const m = await MosquittoProcess.start({ dir, maxQueuedMessages: 100 });
  t.teardown(() => m.kill());
  t.equal(m.url, `mqtt://127.0.0.1:${m.port}`);
  // A retained message goes in and comes back: a working broker, not just an open port.
  const c = await mqtt.connectAsync(m.url, { clientId: 'probe', reconnectPeriod: 0 });
  await c.publishAsync('bench/x', 'hello', { qos: 1, retain: true });
  const got = new Promise<string>((resolve) => c.once('message', (_topic, payload) => resolve(payload.toString())));
  await c.subscribeAsync('bench/x', { qos: 1 });
  t.equal(await got, 'hello');
  await c.endAsync();
  t.same(await m.stop(), { code: 0, signal: null }, 'exits cleanly on SIGTERM');
  t.match(m.tail(), /mosquitto version 2\.\S+ terminating/);

  await t.rejects(MosquittoProcess.start({ dir, extra: ['no_such_option 1'] }), {
    message: /mosquitto exited \(\d+\) before listening:[\s\S]*no_such_option/,
  });
  // Known from its spawn, before it listens: a caller aborted meanwhile kills it (the benches'
  // SIGINT/SIGTERM), and the start fails instead of returning a broker that is gone.
  let spawned: MosquittoProcess | null = null;
  await t.rejects(
    MosquittoProcess.start({
      dir,
      onSpawn: (p) => {
        spawned = p;
        p.kill();
      },
    }),
    { message: /mosquitto exited \(SIGKILL\) before listening/ },
  );
  const killed = spawned as MosquittoProcess | null;
  t.ok(killed, 'onSpawn was called');
  if (killed) t.same(await killed.exited, { code: null, signal: 'SIGKILL' }, 'the spawned broker was the one killed');
  await t.rejects(MosquittoProcess.start({ dir, bin: '/nonexistent/mosquitto' }), {
    message: 'mosquitto is not installed at /nonexistent/mosquitto: apt-get install mosquitto (or name the binary)',
  });
});

t.test('bench:bare-broker prints its JSON document', async (t) => {
  const devices = 100;
  const burst = 2;
  const args = ['--devices', String(devices), '--burst', String(burst), '--step-ms', '5', '--timeout-s', '45'];
  // Run together: each is a few seconds of mostly waiting on sockets.
  const [main, indexed, tooMany] = await Promise.all([
    runBench([...args, '--broker', noMosquitto ? 'aedes' : 'both']),
    runBench(['--devices', '30', '--burst', '1', '--step-ms', '5', '--broker', 'aedes', '--aedes-retained-index']),
    // Beyond any machine's limits: the ephemeral ports alone (at most 64,511) refuse it at once.
    runBench(['--devices', '1000000', '--broker', 'aedes']),
  ]);

  t.test('aedes', async (t) => {
    t.equal(main.code, 0, 'exits 0', { stderr: main.stderr.slice(-3000) });
    t.match(main.json, {
      benchmark: 'bare-broker',
      machine: { cores: Number, node: String },
      params: { devices, burstReportsPerDevice: burst, aedesPersistence: 'stock' },
      aedes: { kind: 'aedes', ...counted(devices, burst, { persistence: 'stock' }) },
    });
    t.ok(heldFds(main.json.aedes) >= devices, 'the broker holds a descriptor per device');
  });

  t.test('mosquitto', { skip: mosquittoSkip }, async (t) => {
    t.same(main.json.errors, []);
    t.match(main.json, {
      mosquitto: { kind: 'mosquitto', ...counted(devices, burst, { config: Array }) },
      mosquittoOverAedes: { ingestReportsPerSec: Number, fanOutPerSecond: Number, memoryPerDevice: Number },
    });
    const config = (main.json.mosquitto as { broker: { config: string[] } }).broker.config;
    t.ok(config.includes(`max_queued_messages ${devices * (burst + 2) + 1000}`), 'the queue holds the whole burst');
    t.equal(config.includes('user root'), process.getuid?.() === 0);
    t.ok(heldFds(main.json.mosquitto) >= devices, 'the broker holds a descriptor per device');
  });

  t.test("aedes with the coordinator's retained index", async (t) => {
    t.equal(indexed.code, 0, 'exits 0', { stderr: indexed.stderr.slice(-3000) });
    t.match(indexed.json, {
      params: { aedesPersistence: 'retained-index' },
      aedes: counted(30, 1, { persistence: 'retained-index' }),
    });
    t.notOk('mosquitto' in indexed.json);
  });

  t.test('too many devices: refused before anything starts, naming the limit', async (t) => {
    t.equal(tooMany.code, 1);
    t.match(tooMany.json.errors, [/1000000 devices do not fit (one broker process|the ephemeral ports)/]);
    t.notOk('aedes' in tooMany.json, 'nothing was measured');
  });
});

t.test('bench:bare-broker: a subscriber that misses messages fails the run', { skip: mosquittoSkip }, async (t) => {
  // Mosquitto drops what does not fit a client's queue: one in flight and one queued, so the
  // subscriber gets 2 of the 30 retained reports it is owed and the run must say so.
  const run = await runBench([
    '--broker',
    'mosquitto',
    '--devices',
    '30',
    '--step-ms',
    '5',
    '--stall-s',
    '1',
    '--mosquitto-conf',
    'max_inflight_messages 1; max_queued_messages 1',
  ]);
  t.equal(run.code, 1);
  t.match(run.json, {
    params: { mosquittoConf: ['max_inflight_messages 1', 'max_queued_messages 1'] },
    errors: [/^mosquitto: devices whose prime report reached the subscriber: \d+ of 30, no progress for 1000 ms$/],
    mosquitto: { connect: { connected: 30 }, prime: { reports: 150 } },
  });
  t.notOk('ingestBurst' in (run.json.mosquitto as object), 'no burst after the loss');
  t.match(run.stderr, /Outgoing messages are being dropped/, "Mosquitto's log tail says why");
});

t.test(
  'bench:bare-broker interrupted (SIGTERM): it stops the brokers and the simulator it started',
  { skip: mosquittoSkip },
  async (t) => {
    const run = await runBench(
      ['--broker', 'mosquitto', '--edges', '2', '--devices', '40', '--step-ms', '5'],
      50_000,
      /mosquitto: prime\.\.\./,
    );
    t.equal(run.code, 143, 'exits 128 + SIGTERM');
    t.match(run.json.errors, ['interrupted by SIGTERM; everything was killed']);
    const m = run.json.mosquitto as { broker: { pid: number; edges: { pid: number }[] } } | undefined;
    // The result is printed as the run is abandoned: the pids of what it started are in it.
    t.ok(m?.broker.pid, 'the bare broker had started');
    t.equal(m?.broker.edges.length, 2, 'and both edges');
    const pids = [m?.broker.pid, ...(m?.broker.edges ?? []).map((e) => e.pid)] as number[];
    const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readStatus(pid));
    const deadline = Date.now() + 10_000;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const left = pids.filter(alive);
    // A failure here must not leave them running either.
    t.teardown(() => {
      for (const pid of left) process.kill(pid, 'SIGKILL');
    });
    t.strictSame(left, [], 'no broker left running');
  },
);

t.test('bench:bare-broker: usage errors and a missing mosquitto', async (t) => {
  const [badBroker, edgesOnAedes, missing] = await Promise.all([
    runBench(['--broker', 'hivemq']).catch((err: Error) => err),
    runBench(['--broker', 'both', '--edges', '2']).catch((err: Error) => err),
    runBench(['--broker', 'mosquitto', '--mosquitto', '/nonexistent/mosquitto', '--devices', '5']),
  ]);
  t.match(badBroker, {
    message: /printed no JSON document \(exit 2\)[\s\S]*--broker must be aedes, mosquitto or both, got hivemq/,
  });
  t.match(edgesOnAedes, {
    message:
      /printed no JSON document \(exit 2\)[\s\S]*--edges 2: edge brokers are Mosquittos bridged into the bare Mosquitto; use a whole number >= 1 with --broker mosquitto/,
  });
  t.equal(missing.code, 1);
  t.match(missing.json, {
    errors: [
      'mosquitto: mosquitto is not installed at /nonexistent/mosquitto: apt-get install mosquitto (or name the binary)',
    ],
    mosquitto: { kind: 'mosquitto', devices: 5 },
  });
});
