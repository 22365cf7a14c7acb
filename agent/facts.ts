import { fork } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type DeviceFacts, DeviceFactsSchema } from '../shared/messages.js';
import { withoutNotifyEnv } from '../shared/systemd-notify.js';
import { childExecArgv } from './node-flags.js';

export type HardwareFacts = Omit<DeviceFacts, 'freeDiskMB'>;

const CHILD = fileURLToPath(new URL(`./facts-child.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));

/**
 * Device facts for the retained status message and for checking release requirements. The
 * hardware part is read by a short-lived child process (facts-child.ts, systeminformation), so
 * the agent itself never loads systeminformation (~11 MB resident); the free disk space is read
 * here. Every source is bounded: a slow, failing or missing child leaves fallback values from
 * node:os rather than delaying the agent's start.
 */
export function readDeviceFacts(stateDir: string, timeoutMs = 5_000): Promise<DeviceFacts> {
  return cachedDeviceFacts(stateDir, timeoutMs)();
}

/**
 * Facts as the agent reports them on every (re)connect: the hardware is read once (it does not
 * change while the agent runs; a fallback answer is tried again next time), the disk every time.
 */
export function cachedDeviceFacts(stateDir: string, timeoutMs = 5_000): () => Promise<DeviceFacts> {
  let hardware: HardwareFacts | null = null;
  return async () => {
    const [read, freeDiskMB] = await Promise.all([
      hardware ?? readHardwareFacts(timeoutMs),
      freeDiskMegabytes(stateDir),
    ]);
    hardware = read;
    return { ...(read ?? fallbackHardwareFacts()), freeDiskMB };
  };
}

/** Runs facts-child.js: its answer, or null when it failed, timed out or answered nonsense. */
export function readHardwareFacts(timeoutMs: number): Promise<HardwareFacts | null> {
  return new Promise((resolve) => {
    let stdout = '';
    let settled = false;
    const finish = (facts: HardwareFacts | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(facts);
    };
    // fork, not execFile: the child runs with this process's loader flags (TypeScript in tests).
    const child = fork(CHILD, [String(timeoutMs)], {
      execArgv: childExecArgv(),
      stdio: ['ignore', 'pipe', 'ignore', 'ipc'],
      env: withoutNotifyEnv(process.env),
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(null);
    }, timeoutMs + 2_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (stdout.length < 64 * 1024) stdout += d.toString('utf8');
    });
    child.on('error', () => finish(null));
    child.on('exit', (code) => {
      const parsed = code === 0 ? DeviceFactsSchema.omit({ freeDiskMB: true }).safeParse(safeJson(stdout)) : null;
      finish(parsed?.success ? parsed.data : null);
    });
  });
}

export function fallbackHardwareFacts(): HardwareFacts {
  return {
    arch: process.arch,
    cpuCores: os.cpus().length,
    memoryMB: Math.round(os.totalmem() / 1024 / 1024),
    os: `${os.type()} ${os.release()}`,
    kernel: os.release(),
    accelerators: [],
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export async function freeDiskMegabytes(dir: string): Promise<number> {
  try {
    const s = await fs.statfs(dir);
    return Math.floor((s.bavail * s.bsize) / 1024 / 1024);
  } catch {
    return 0;
  }
}
