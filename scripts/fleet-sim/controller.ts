import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openFilesLimit } from '../bench/common.js';
import type {
  BurstResult,
  ConnectResult,
  FromWorker,
  SimBehaviour,
  SimCounters,
  SimCredentials,
  SimOptions,
  ToWorker,
  TracesResult,
} from './ipc.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
const PRLIMIT = ['/usr/bin/prlimit', '/bin/prlimit'].find((p) => existsSync(p));

/** Distributive version of Omit, so each request variant keeps its own fields. */
type Request = ToWorker extends infer T ? (T extends ToWorker ? Omit<T, 'rid'> : never) : never;

interface Worker {
  child: ChildProcess;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  rssMB: number;
  cpuSeconds: number;
  devices: number;
}

export interface FdLimits {
  /** Limits of this controller process (Node raises its soft limit to the hard limit at start). */
  controller: { soft: number; hard: number };
  /** Limits each worker actually runs with. */
  workers: { soft: number; hard: number }[];
  /** Whether workers were started through prlimit --nofile=HARD:HARD. */
  raisedWith: string;
}

/** Devices one simulator process holds by default (fleetSimWorkers). */
export const DEVICES_PER_SIM_WORKER = 10_000;
/** Open files a simulator process keeps for itself beside its connections. */
export const SIM_WORKER_RESERVE_FDS = 100;

/**
 * How many simulator processes a benchmark starts for `devices` (pure): `requested` when given
 * (> 0), else one per 10,000 devices, at most 4, and always enough that each process's
 * connections fit its hard open-files limit `fdHard` (one descriptor per connection).
 *
 * Why so few: the simulator shares the machine's cores with what it measures, and more
 * processes cost the measured side more than they give the simulator: with four of them beside
 * one single-threaded Mosquitto on 2 cores the 9,000-device wave took about twice as long as
 * with one, the same code otherwise (BENCHMARKS.md, 2026-12-07).
 */
export function fleetSimWorkers(devices: number, requested = 0, fdHard = Number.POSITIVE_INFINITY): number {
  const perProcess = Math.max(1, fdHard - SIM_WORKER_RESERVE_FDS);
  const needed = Math.ceil(devices / perProcess);
  if (requested > 0) {
    if (requested < needed) {
      throw new Error(
        `${requested} simulator processes cannot hold ${devices} devices: each connection is an open file and the hard limit on open files (ulimit -Hn) is ${fdHard} per process here, so use --workers ${needed} or more`,
      );
    }
    return requested;
  }
  return Math.max(needed, Math.min(4, Math.max(1, Math.ceil(devices / DEVICES_PER_SIM_WORKER))));
}

/**
 * The fleet simulator's controller: forks `workers` processes, each holding a share of the
 * simulated devices' connections (scripts/fleet-sim/device.ts), and talks to them over IPC.
 * Every connection needs one file descriptor, so each worker is started with its soft
 * open-files limit raised to the hard limit (prlimit; Node also raises it itself at start).
 */
export class FleetSim {
  private readonly workers: Worker[] = [];
  private rid = 0;

  private constructor() {}

  static async start(options: SimOptions, devices: SimCredentials[], workerCount: number): Promise<FleetSim> {
    const sim = new FleetSim();
    const n = Math.max(1, Math.min(workerCount, devices.length || 1));
    const { hard } = openFilesLimit('self');
    const limit = Number.isFinite(hard) ? String(hard) : 'unlimited';
    for (let i = 0; i < n; i++) {
      const child = PRLIMIT
        ? fork(WORKER, [], {
            execPath: PRLIMIT,
            execArgv: [`--nofile=${limit}:${limit}`, '--', process.execPath],
            stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
          })
        : fork(WORKER, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      const w: Worker = { child, pending: new Map(), rssMB: 0, cpuSeconds: 0, devices: 0 };
      child.on('message', (raw) => {
        const msg = raw as FromWorker;
        const p = w.pending.get(msg.rid);
        if (!p) return;
        w.pending.delete(msg.rid);
        if (msg.ok) {
          w.rssMB = msg.rssMB;
          w.cpuSeconds = msg.cpuSeconds;
          p.resolve(msg.result);
        } else p.reject(new Error(`fleet-sim worker ${i}: ${msg.error}`));
      });
      child.on('exit', (code, signal) => {
        for (const p of w.pending.values()) p.reject(new Error(`fleet-sim worker ${i} exited (${code ?? signal})`));
        w.pending.clear();
      });
      sim.workers.push(w);
    }
    // Round-robin shares, so every worker has devices of every wave.
    const shares: SimCredentials[][] = sim.workers.map(() => []);
    for (const [i, d] of devices.entries()) shares[i % shares.length]?.push(d);
    await Promise.all(
      sim.workers.map((w, i) => {
        w.devices = shares[i]?.length ?? 0;
        const url = options.urls?.length ? (options.urls[i % options.urls.length] as string) : options.url;
        return sim.ask(w, { type: 'init', options: { ...options, url }, devices: shares[i] ?? [] });
      }),
    );
    return sim;
  }

  get pids(): number[] {
    return this.workers.map((w) => w.child.pid as number);
  }

  fdLimits(): FdLimits {
    return {
      controller: openFilesLimit('self'),
      workers: this.pids.map((pid) => {
        try {
          return openFilesLimit(pid);
        } catch {
          return { soft: Number.NaN, hard: Number.NaN };
        }
      }),
      raisedWith: PRLIMIT ? `${PRLIMIT} --nofile=HARD:HARD` : 'none (Node raises the soft limit itself)',
    };
  }

  private ask<T>(w: Worker, request: Request): Promise<T> {
    const rid = ++this.rid;
    return new Promise<T>((resolve, reject) => {
      w.pending.set(rid, { resolve: resolve as (v: unknown) => void, reject });
      w.child.send({ ...request, rid } as ToWorker, (err) => {
        if (err) {
          w.pending.delete(rid);
          reject(err);
        }
      });
    });
  }

  private all<T>(request: Request): Promise<T[]> {
    return Promise.all(this.workers.map((w) => this.ask<T>(w, request)));
  }

  /** Connects every device; resolves when all are connected, subscribed and their status acknowledged. */
  async connect(): Promise<{
    connected: number;
    failed: number;
    firstError: string | null;
    startedAt: number;
    doneAt: number;
    latenciesMs: number[];
  }> {
    const results = await this.all<ConnectResult>({ type: 'connect' });
    return {
      connected: results.reduce((a, r) => a + r.connected, 0),
      failed: results.reduce((a, r) => a + r.failed, 0),
      firstError: results.find((r) => r.firstError)?.firstError ?? null,
      startedAt: Math.min(...results.map((r) => r.startedAt)),
      doneAt: Math.max(...results.map((r) => r.doneAt)),
      latenciesMs: results.flatMap((r) => r.latenciesMs),
    };
  }

  async setBehaviour(behaviour: Partial<SimBehaviour>): Promise<void> {
    await this.all({ type: 'behaviour', behaviour });
  }

  async burst(reportsPerDevice: number): Promise<BurstResult> {
    const results = await this.all<BurstResult>({ type: 'burst', reportsPerDevice });
    return {
      sent: results.reduce((a, r) => a + r.sent, 0),
      acked: results.reduce((a, r) => a + r.acked, 0),
      models: results.reduce((a, r) => a + (r.models ?? 0), 0),
      startedAt: Math.min(...results.map((r) => r.startedAt)),
      doneAt: Math.max(...results.map((r) => r.doneAt)),
    };
  }

  /**
   * Every device sends `summariesPerDevice` metrics summaries of consecutive one-minute windows
   * from `fromMs`, each of `observations` inferences (SimDevice.metricsBurst), one at a time.
   */
  async metricsBurst(summariesPerDevice: number, fromMs: number, observations: number): Promise<BurstResult> {
    const results = await this.all<BurstResult>({ type: 'metrics', summariesPerDevice, fromMs, observations });
    return {
      sent: results.reduce((a, r) => a + r.sent, 0),
      acked: results.reduce((a, r) => a + r.acked, 0),
      startedAt: Math.min(...results.map((r) => r.startedAt)),
      doneAt: Math.max(...results.map((r) => r.doneAt)),
    };
  }

  async traces(rolloutIds: string[]): Promise<TracesResult> {
    const results = await this.all<TracesResult>({ type: 'traces', rolloutIds });
    return Object.assign({}, ...results) as TracesResult;
  }

  async counters(): Promise<SimCounters> {
    const results = await this.all<SimCounters>({ type: 'counters' });
    const sum = (k: keyof Omit<SimCounters, 'firstError'>) => results.reduce((a, r) => a + r[k], 0);
    return {
      devices: sum('devices'),
      connected: sum('connected'),
      connectFailures: sum('connectFailures'),
      disconnects: sum('disconnects'),
      reconnects: sum('reconnects'),
      desiredReceived: sum('desiredReceived'),
      desiredIgnored: sum('desiredIgnored'),
      desiredInvalid: sum('desiredInvalid'),
      assignments: sum('assignments'),
      reportsSent: sum('reportsSent'),
      reportsAcked: sum('reportsAcked'),
      reportErrors: sum('reportErrors'),
      outboxPending: sum('outboxPending'),
      burstReports: sum('burstReports'),
      firstError: results.find((r) => r.firstError)?.firstError ?? null,
    };
  }

  /** Waits until no device has a step scheduled or a report unsent (or the time is up). */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await this.all<{ idle: boolean }>({ type: 'idle' });
      if (states.every((s) => s.idle)) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Resident memory and CPU time of the workers, as of their last reply. */
  usage(): { workers: number; devicesPerWorker: number[]; rssMB: number[]; cpuSeconds: number[] } {
    return {
      workers: this.workers.length,
      devicesPerWorker: this.workers.map((w) => w.devices),
      rssMB: this.workers.map((w) => w.rssMB),
      cpuSeconds: this.workers.map((w) => w.cpuSeconds),
    };
  }

  /** Closes every connection and ends the workers (SIGKILL after `graceMs`). */
  async stop(graceMs = 15_000): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        if (w.child.exitCode !== null || w.child.signalCode !== null) return;
        const exited = new Promise<void>((r) => w.child.once('exit', () => r()));
        const timer = setTimeout(() => w.child.kill('SIGKILL'), graceMs);
        this.ask(w, { type: 'stop' }).catch(() => {});
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  /** Immediate SIGKILL of every worker (error paths). */
  kill(): void {
    for (const w of this.workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
  }
}
