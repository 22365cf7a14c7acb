import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';

/**
 * Helpers shared by the benchmark scripts (`npm run bench:*`): argument parsing, process
 * statistics from /proc, statistics over samples, and the machine description that goes with
 * every result. Benchmarks print ONE JSON document on stdout; progress goes to stderr.
 */

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one host. */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

export function log(text: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${text}\n`);
}

export type ArgSpec = Record<string, { default: string | number | boolean; help: string }>;
export type ParsedArgs<S extends ArgSpec> = { [K in keyof S]: S[K]['default'] };

/** `--name value`, `--name=value` and `--flag` / `--no-flag`; unknown flags are a usage error. */
export function parseArgs<S extends ArgSpec>(argv: string[], spec: S, usage: string): ParsedArgs<S> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(spec)) out[k] = v.default;
  const fail = (why: string): never => {
    const lines = Object.entries(spec).map(([k, v]) => `  --${k} (default ${JSON.stringify(v.default)}): ${v.help}`);
    process.stderr.write(`${why}\nusage: ${usage}\n${lines.join('\n')}\n`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') fail('');
    if (!arg.startsWith('--')) fail(`unexpected argument ${arg}`);
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    let negated = false;
    if (!(name in spec) && name.startsWith('no-') && name.slice(3) in spec) {
      negated = true;
      name = name.slice(3);
    }
    const entry = spec[name];
    if (!entry) return fail(`unknown option --${name}`);
    if (typeof entry.default === 'boolean') {
      out[name] = negated ? false : value === undefined ? true : value !== 'false' && value !== '0';
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) fail(`--${name} needs a value`);
    }
    if (typeof entry.default === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) fail(`--${name} must be a number, got ${value}`);
      out[name] = n;
    } else out[name] = value as string;
  }
  return out as ParsedArgs<S>;
}

/** Comma-separated numbers, e.g. "10,100,500". */
export function numberList(text: string): number[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(Number)
    .filter((n) => Number.isFinite(n));
}

// ---- /proc ----

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux (x86-64 and arm64)

export interface ProcStats {
  /** Peak resident set size (VmHWM), MiB. */
  peakRssMB: number;
  /** Current resident set size (VmRSS), MiB. */
  rssMB: number;
  /** User + system CPU time, seconds. */
  cpuSeconds: number;
  userSeconds: number;
  systemSeconds: number;
  threads: number;
}

function statusKb(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) : 0;
}

/** RSS and CPU time of a live process (throws when it is gone). */
export function procStats(pid: number | 'self'): ProcStats {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]) / CLK_TCK; // field 14 of stat(5)
  const stime = Number(fields[12]) / CLK_TCK; // field 15
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return {
    peakRssMB: round(statusKb(status, 'VmHWM') / 1024, 1),
    rssMB: round(statusKb(status, 'VmRSS') / 1024, 1),
    cpuSeconds: round(utime + stime, 2),
    userSeconds: round(utime, 2),
    systemSeconds: round(stime, 2),
    threads,
  };
}

export function tryProcStats(pid: number | 'self'): ProcStats | null {
  try {
    return procStats(pid);
  } catch {
    return null;
  }
}

/**
 * A benchmark's way out when it cannot finish: `abandon(why, exitCode)` (kill everything the run
 * started, print what was measured, exit) runs when the whole run exceeds `timeoutS`, or on
 * SIGINT/SIGTERM (Ctrl-C, a CI job's timeout), where Node would otherwise exit at once and leave
 * the brokers, the coordinator and the simulator running. Returns the watchdog timer, which the
 * caller clears when the run ends.
 */
export function abandonOnTimeoutOrSignal(
  timeoutS: number,
  abandon: (why: string, exitCode: number) => void,
): NodeJS.Timeout {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () =>
      abandon(`interrupted by ${signal}; everything was killed`, 128 + os.constants.signals[signal]),
    );
  }
  return setTimeout(() => abandon(`the whole run exceeded ${timeoutS} s; everything was killed`, 1), timeoutS * 1000);
}

/**
 * `--sim-nice N`: lowers the scheduling priority of the processes that stand in for other
 * machines (the simulated devices, the edge brokers) to nice N, so that on a benchmark host with
 * few cores they take what the measured process leaves instead of sharing the cores evenly with
 * it. 0 leaves them as they are. Returns each one's nice value as read back; throws a message
 * naming the range for a bad N. On Linux this sets a process's main thread, where a simulator
 * process runs its JavaScript and Mosquitto all its work; threads a process started before (V8's
 * helpers) keep their priority.
 */
export function niceOthers(pids: readonly number[], nice: number): number[] {
  if (!Number.isInteger(nice) || nice < 0 || nice > 19) {
    throw new Error(`--sim-nice must be a whole number from 0 (as now) to 19 (lowest priority), got ${nice}`);
  }
  if (nice !== 0) for (const pid of pids) os.setPriority(pid, nice);
  // Read back: what the processes run at (for the result).
  return pids.map((pid) => os.getPriority(pid));
}

/** The open-files limits of a process, from /proc/<pid>/limits. */
export function openFilesLimit(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const parts = line?.trim().split(/\s+/) ?? [];
  const num = (s: string | undefined) => (s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s));
  return { soft: num(parts[3]), hard: num(parts[4]) };
}

// ---- statistics ----

export function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Nearest-rank percentile (p in [0, 100]) of the samples; NaN for none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function median(samples: readonly number[]): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number;
}

export function spread(samples: readonly number[], digits = 2): Spread {
  return {
    median: round(median(samples), digits),
    min: round(Math.min(...samples), digits),
    max: round(Math.max(...samples), digits),
    runs: samples.length,
  };
}

// ---- machine ----

export interface Machine {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  kernel: string;
  /** 1, 5 and 15 minute load averages when the run started (other work on the machine skews results). */
  loadAverage: number[];
  date: string;
}

export function machine(): Machine {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) cpuModel = m[1].trim();
  } catch {
    // not Linux: os.cpus() it is
  }
  return {
    cores: os.availableParallelism(),
    cpuModel,
    memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
    node: process.version,
    kernel: os.release(),
    loadAverage: os.loadavg().map((l) => round(l, 2)),
    date: new Date().toISOString(),
  };
}

/**
 * The code measured: the git commit, and the files under coordinator/, agent/ and shared/ that
 * differ from it (benchmarks run from dist/, built from the working tree). Null outside git.
 */
export function revision(): { commit: string; modified: string[] } | null {
  try {
    const opts: { encoding: 'utf8'; timeout: number; stdio: ('ignore' | 'pipe')[] } = {
      encoding: 'utf8',
      timeout: 5_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    };
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], opts).trim();
    const modified = execFileSync('git', ['status', '--porcelain', '--', 'coordinator', 'agent', 'shared'], opts)
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    return { commit, modified };
  } catch {
    return null;
  }
}

/** Prints the one JSON document of a benchmark run on stdout. */
export function printResult(result: unknown): void {
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>) {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** Rejects with a message naming `what` when `p` takes longer than `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
