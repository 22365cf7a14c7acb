import os from 'node:os';
import si from 'systeminformation';

/**
 * Prints the device's hardware facts as one JSON line and exits. A child process of the agent
 * (agent/facts.ts): systeminformation costs ~11 MB of resident memory once imported, which a
 * long-running agent should not carry for facts it reads once. Every probe is bounded: a slow
 * or failing source leaves a fallback value from node:os.
 */
const given = Number(process.argv[2]);
const timeoutMs = process.argv[2] !== undefined && Number.isFinite(given) && given >= 0 ? given : 5_000;
const within = <T>(p: Promise<T>, fallback: T) =>
  Promise.race([p.catch(() => fallback), new Promise<T>((r) => setTimeout(() => r(fallback), timeoutMs).unref())]);
const [cpu, mem, osInfo, graphics] = await Promise.all([
  within(si.cpu(), null),
  within(si.mem(), null),
  within(si.osInfo(), null),
  within(si.graphics(), null),
]);
const facts = `${JSON.stringify({
  arch: process.arch,
  cpuCores: cpu?.cores || os.cpus().length,
  memoryMB: Math.round((mem?.total || os.totalmem()) / 1024 / 1024),
  os: osInfo ? `${osInfo.distro} ${osInfo.release}`.trim() : `${os.type()} ${os.release()}`,
  kernel: osInfo?.kernel || os.release(),
  accelerators: (graphics?.controllers ?? [])
    .map((c) => [c.vendor, c.model].filter(Boolean).join(' ').trim())
    .filter((name) => name.length > 0)
    .slice(0, 16)
    .map((name) => name.slice(0, 100)),
})}\n`;
// systeminformation may leave timers or child processes behind: once the answer is out, stop.
process.stdout.write(facts, () => process.exit(0));
