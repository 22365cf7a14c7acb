#!/usr/bin/env node
import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.js';
import { generateKey, publicKeyToJson } from '../../shared/keys.js';
import { MetricsSchema } from '../../shared/messages.js';
import { goodModel } from '../tiny-models.js';
import { log, machine, parseArgs, printResult, revision, round, sleep, tryProcStats, wallMs } from './common.js';

/**
 * `npm run bench:agent-metrics`: how many observations per second a real `ota-agent` process
 * (dist/agent/main.js, with the unit's node flags) takes on its metrics socket, and what it costs
 * in RSS. The agent runs offline (its broker URL points at a closed loopback port), holding one
 * model adopted from disk, with 1-second windows: every summary lands in its outbox, where the
 * observations are counted back (so "taken" means aggregated and written, not just read).
 *
 * Senders are `--connections` connections from this process, writing lines of `--batch`
 * observations at `--rate` observations per second in all (default 50,000: the goal's rate), or
 * as fast as the socket drains with `--rate 0`. Idle RSS is sampled for a few seconds before; the
 * RSS while taking observations every 100 ms. The goal (issue 14): 50,000 observations/s with
 * < 5 MB more RSS than idle, and every summary <= 8 KiB; `observationsPerCpuSecond` says how far
 * above that rate the agent's one thread would go.
 */

const AGENT_MAIN = fileURLToPath(new URL('../../agent/main.js', import.meta.url));

const args = parseArgs(
  process.argv.slice(2),
  {
    observations: { default: 500_000, help: 'observations to send in total' },
    connections: { default: 2, help: 'sender connections' },
    batch: { default: 100, help: 'observations per line (1 = one line each)' },
    rate: { default: 50_000, help: 'observations per second to send at (0: as fast as the socket takes them)' },
    'idle-s': { default: 5, help: 'seconds of idle RSS sampling before sending' },
    'node-flags': { default: AGENT_NODE_FLAGS.join(' '), help: 'node flags of the agent process' },
  },
  'npm run bench:agent-metrics -- [--observations N] [--connections N] [--batch N]',
);

function outboxTotals(dir: string): { observations: number; dropped: number; files: number; maxBytes: number } {
  let observations = 0;
  let dropped = 0;
  let maxBytes = 0;
  let files = 0;
  if (!existsSync(dir)) return { observations, dropped, files, maxBytes };
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.json')) continue;
    const text = readFileSync(path.join(dir, name), 'utf8');
    const file = JSON.parse(text) as { message: unknown };
    const message = MetricsSchema.parse(file.message);
    maxBytes = Math.max(maxBytes, Buffer.byteLength(JSON.stringify(message)));
    files++;
    for (const s of message.series) if (s.source === 'app') observations += s.count;
    dropped += message.dropped?.observations ?? 0;
  }
  return { observations, dropped, files, maxBytes };
}

/** Writes `lines` copies of `line`; with `linesPerSecond`, paced in 10 ms ticks, else as fast as it drains. */
async function send(socketPath: string, lines: number, line: string, linesPerSecond: number): Promise<void> {
  const socket = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const payload = `${line}\n`;
  const started = wallMs();
  for (let i = 0; i < lines; i++) {
    if (linesPerSecond > 0) {
      const due = started + (i / linesPerSecond) * 1000;
      const wait = due - wallMs();
      if (wait > 10) await sleep(wait);
    }
    if (!socket.write(payload)) await new Promise((r) => socket.once('drain', r));
  }
  await new Promise<void>((resolve) => socket.end(resolve));
}

async function main(): Promise<void> {
  if (!existsSync(AGENT_MAIN)) throw new Error(`${AGENT_MAIN} is missing: run npm run build`);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-metrics-'));
  const stateDir = path.join(dir, 'state');
  // One model on disk, adopted by the agent at start (models/<name>/current -> <version>).
  const versionDir = path.join(stateDir, 'models', 'det', '1.0.0');
  await fs.mkdir(versionDir, { recursive: true });
  await fs.writeFile(path.join(versionDir, 'model.onnx'), goodModel(1));
  await fs.symlink('1.0.0', path.join(stateDir, 'models', 'det', 'current'));
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const key = generateKey();
  const configFile = path.join(dir, 'agent.json');
  const socketPath = path.join(dir, 'metrics.sock');
  await fs.writeFile(
    configFile,
    JSON.stringify({
      deviceId: 'bench-1',
      broker: { url: `mqtt://127.0.0.1:${port}` },
      artifactsUrl: `http://127.0.0.1:${port}`,
      token: 'unused',
      coordinatorKey: publicKeyToJson(key),
      trustedKeys: [publicKeyToJson(key)],
      stateDir,
      logLevel: 'warn',
      metrics: { socket: socketPath, windowSeconds: 1, maxPendingWindows: 100_000 },
    }),
    { mode: 0o600 },
  );
  const flags = String(args['node-flags']).split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...flags, AGENT_MAIN, '--config', configFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  try {
    const ready = Date.now() + 30_000;
    while (!existsSync(socketPath)) {
      if (Date.now() > ready || child.exitCode !== null) throw new Error(`no metrics socket:\n${stderr.slice(-2000)}`);
      await sleep(50);
    }
    log(`agent up; idle for ${args['idle-s']} s`);
    const idle: number[] = [];
    for (let s = 0; s < Number(args['idle-s']) * 10; s++) {
      await sleep(100);
      const st = tryProcStats(child.pid as number);
      if (st) idle.push(st.rssMB);
    }
    const idleRss = idle.slice(-10).reduce((a, b) => a + b, 0) / Math.min(10, idle.length);
    const batch = Number(args.batch);
    const connections = Number(args.connections);
    const total = Number(args.observations);
    const linesPerConnection = Math.ceil(total / batch / connections);
    const sent = linesPerConnection * connections * batch;
    const one = (i: number) => ({
      model: 'det',
      version: '1.0.0',
      latencyMs: 5 + (i % 97) * 0.31,
      confidence: (i % 10) / 10 + 0.05,
    });
    const line = JSON.stringify(batch === 1 ? one(0) : Array.from({ length: batch }, (_, i) => one(i)));
    const outbox = path.join(stateDir, 'metrics-outbox');
    const rss: number[] = [];
    const sampler = setInterval(() => {
      const st = tryProcStats(child.pid as number);
      if (st) rss.push(st.rssMB);
    }, 100);
    const cpuBefore = tryProcStats(child.pid as number)?.cpuSeconds ?? 0;
    const started = wallMs();
    const rate = Number(args.rate);
    const linesPerSecond = rate > 0 ? rate / batch / connections : 0;
    await Promise.all(
      Array.from({ length: connections }, () => send(socketPath, linesPerConnection, line, linesPerSecond)),
    );
    const written = wallMs();
    // Taken = counted in closed windows in the outbox; wait for the last window to close.
    let totals = outboxTotals(outbox);
    const deadline = Date.now() + 30_000;
    while (totals.observations + totals.dropped < sent && Date.now() < deadline) {
      await sleep(200);
      totals = outboxTotals(outbox);
    }
    const counted = wallMs();
    clearInterval(sampler);
    const cpuAfter = tryProcStats(child.pid as number)?.cpuSeconds ?? 0;
    const seconds = (written - started) / 1000;
    const peak = Math.max(...rss);
    const result = {
      benchmark: 'agent-metrics',
      machine: machine(),
      revision: revision(),
      nodeFlags: flags,
      sent,
      connections,
      batch,
      rate: rate > 0 ? rate : 'as fast as the socket takes them',
      taken: totals.observations,
      dropped: totals.dropped,
      summaries: totals.files,
      sendSeconds: round(seconds, 2),
      /** Sent / the time to write them: the agent kept up when `taken` equals `sent`. */
      observationsPerSecond: Math.round(sent / seconds),
      /** Observations per second of the agent's CPU time (its capacity on one core). */
      observationsPerCpuSecond: Math.round(sent / Math.max(0.01, cpuAfter - cpuBefore)),
      countedAfterMs: Math.round(counted - written),
      agentCpuSeconds: round(cpuAfter - cpuBefore, 2),
      idleRssMB: round(idleRss, 1),
      peakRssMB: round(peak, 1),
      extraRssMB: round(peak - idleRss, 1),
      largestSummaryBytes: totals.maxBytes,
      goals: [
        {
          goal: 'observations per second taken on the socket',
          target: '>= 50000',
          value: Math.round(sent / seconds),
          met: Math.round(sent / seconds) >= 50_000,
        },
        {
          goal: 'extra RSS while taking them',
          target: '< 5 MB',
          value: round(peak - idleRss, 1),
          met: peak - idleRss < 5,
        },
        {
          goal: 'largest summary message',
          target: '<= 8192 bytes',
          value: totals.maxBytes,
          met: totals.maxBytes <= 8192,
        },
        {
          goal: 'observations counted back from the outbox',
          target: `${sent}`,
          value: totals.observations,
          met: totals.observations === sent,
        },
      ],
    };
    printResult(result);
  } finally {
    child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:agent-metrics: ${(err as Error).message}\n`);
  process.exit(1);
});
