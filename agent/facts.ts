import { promises as fs } from 'node:fs';
import os from 'node:os';
import si from 'systeminformation';
import type { DeviceFacts } from '../shared/messages.js';

/**
 * Device facts for the retained status message and for checking release requirements, read with
 * systeminformation. Every probe is bounded: a slow or failing source leaves a fallback value
 * (from node:os) rather than delaying the agent's start.
 */
export async function readDeviceFacts(stateDir: string, timeoutMs = 5_000): Promise<DeviceFacts> {
  const within = <T>(p: Promise<T>, fallback: T) =>
    Promise.race([p.catch(() => fallback), new Promise<T>((r) => setTimeout(() => r(fallback), timeoutMs).unref())]);
  const [cpu, mem, osInfo, graphics, freeDiskMB] = await Promise.all([
    within(si.cpu(), null),
    within(si.mem(), null),
    within(si.osInfo(), null),
    within(si.graphics(), null),
    freeDiskMegabytes(stateDir),
  ]);
  return {
    arch: process.arch,
    cpuCores: cpu?.cores || os.cpus().length,
    memoryMB: Math.round((mem?.total || os.totalmem()) / 1024 / 1024),
    freeDiskMB,
    os: osInfo ? `${osInfo.distro} ${osInfo.release}`.trim() : `${os.type()} ${os.release()}`,
    kernel: osInfo?.kernel || os.release(),
    accelerators: (graphics?.controllers ?? [])
      .map((c) => [c.vendor, c.model].filter(Boolean).join(' ').trim())
      .filter((name) => name.length > 0)
      .slice(0, 16)
      .map((name) => name.slice(0, 100)),
  };
}

export async function freeDiskMegabytes(dir: string): Promise<number> {
  try {
    const s = await fs.statfs(dir);
    return Math.floor((s.bavail * s.bsize) / 1024 / 1024);
  } catch {
    return 0;
  }
}
