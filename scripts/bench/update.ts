#!/usr/bin/env node
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.js';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { publicKeyToJson } from '../../shared/keys.js';
import {
  log,
  machine,
  median,
  numberList,
  parseArgs,
  printResult,
  revision,
  round,
  type Spread,
  sleep,
  spread,
  tryProcStats,
  wallMs,
} from './common.js';
import { CoordinatorProcess } from './coordinator.js';
import { summarizeProfile } from './profile-summary.js';
import { BenchPublisher } from './release.js';

/**
 * `npm run bench:update`: the agent's update path against the single-pass floor, for padded
 * model files of each size (default 10, 100, 500 MB; not valid ONNX: the probe and the ONNX
 * inspection are excluded), served over loopback HTTP by a server started here:
 *
 *   floor  `curl -s URL | tee FILE | openssl dgst -sha256; sync` (fetch, write, hash in one pass)
 *   agent  scripts/bench/update-child.ts in its own process: downloadArtifact (streaming sha256,
 *          fsync), the verify step (the streaming digest, as the agent does; BENCH_REHASH=1 adds
 *          the digestFile re-read of a resumed download), ModelStore.install + setLinks (fsync +
 *          swap); its peak RSS is the child's VmHWM
 *
 * Runs alternate floor and agent, `--runs` times per size; median, min and max of each, and the
 * ratio of the medians. Then the idle RSS of a real `ota-agent` process (dist/agent/main.js)
 * connected to a real coordinator. Prints ONE JSON document; progress on stderr.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    sizes: { default: '10,100,500', help: 'model sizes in MB (MiB), comma-separated' },
    runs: { default: 3, help: 'runs of each path per size' },
    'idle-s': { default: 30, help: 'seconds the real agent idles before its RSS is read (0: skip)' },
    'agent-node-flags': {
      default: AGENT_NODE_FLAGS.join(' '),
      help: "node flags of the agent (idle ota-agent and update-path child); default: the installed wrapper's (agent/node-flags.ts)",
    },
    'profile-dir': { default: '', help: 'also run the agent path once per size under --cpu-prof (profiles go here)' },
  },
  'npm run bench:update -- [options]',
);
/** Node flags of the agent under test: the idle ota-agent and the update-path child alike. */
const agentFlags = args['agent-node-flags'].split(' ').filter(Boolean);

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CHILD = here('./update-child.js');
const AGENT_MAIN = here('../../agent/main.js');
const MiB = 1024 * 1024;

interface ChildResult {
  downloadMs: number;
  verifyMs: number;
  installMs: number;
  swapMs: number;
  totalMs: number;
  baselineRssMB: number;
  peakRssMB: number;
  stepPeakRssMB: Record<string, number>;
}

/** Writes `bytes` of random data (incompressible, like weights) and returns its sha256. */
async function padded(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await fs.open(file, 'w');
  const chunk = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(chunk.length, bytes - done);
      randomFillSync(chunk, 0, n);
      const part = chunk.subarray(0, n);
      hash.update(part);
      await handle.write(part);
      done += n;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

function serve(files: Map<string, string>): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const file = files.get(req.url ?? '');
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    void fs.stat(file).then((st) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
      createReadStream(file, { highWaterMark: MiB }).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function run(
  cmd: string,
  argv: string[],
  timeoutMs = 600_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function floorRun(url: string, out: string, sha256: string): Promise<number> {
  await run('sync', []);
  const t0 = wallMs();
  const r = await run('sh', ['-c', 'curl -s "$1" | tee "$2" | openssl dgst -sha256 && sync', 'floor', url, out]);
  const ms = wallMs() - t0;
  if (r.code !== 0 || !r.stdout.includes(sha256))
    throw new Error(`floor run failed (${r.code}): ${r.stdout}${r.stderr}`);
  await fs.rm(out, { force: true });
  return ms;
}

async function agentRun(
  url: string,
  size: number,
  sha256: string,
  stateDir: string,
  nodeFlags: string[] = [],
): Promise<ChildResult> {
  await fs.rm(stateDir, { recursive: true, force: true });
  await run('sync', []);
  const r = await run(process.execPath, [...nodeFlags, CHILD, JSON.stringify({ url, size, sha256, stateDir })]);
  if (r.code !== 0) throw new Error(`agent path failed (${r.code}): ${r.stderr}`);
  await fs.rm(stateDir, { recursive: true, force: true });
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as ChildResult;
}

interface SizeResult {
  sizeMB: number;
  floorMs: Spread;
  agentMs: Spread;
  /** Median agent time / median floor time. */
  ratio: number;
  /** Median download step alone / median floor time (the rest is verify, install and swap). */
  downloadRatio: number;
  agentBreakdownMs: { download: Spread; verify: Spread; install: Spread; swap: Spread };
  agentPeakRssMB: Spread;
  /** Peak RSS (sampled every 5 ms) during each step: download, verify, install + swap. */
  agentStepPeakRssMB: Record<string, Spread>;
  /** RSS of the child after its imports, before the download: the peak minus this is the update path's own. */
  agentBaselineRssMB: Spread;
  /** Self-time top of one extra, profiled run (with --profile-dir). */
  profile?: { file: string; busyMs: number; self: { fn: string; ms: number; share: number }[] };
  floorMBps: number;
  agentMBps: number;
}

async function updatePath(dir: string): Promise<SizeResult[]> {
  const sizes = numberList(args.sizes);
  const files = new Map<string, string>();
  const digests = new Map<number, string>();
  for (const mb of sizes) {
    const file = path.join(dir, `model-${mb}.bin`);
    log(`writing a ${mb} MB padded model`);
    digests.set(mb, await padded(file, Math.round(mb * MiB)));
    files.set(`/artifacts/${mb}`, file);
  }
  const server = await serve(files);
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const results: SizeResult[] = [];
  try {
    for (const mb of sizes) {
      const sha = digests.get(mb) as string;
      const url = `${base}/artifacts/${mb}`;
      const floor: number[] = [];
      const agent: ChildResult[] = [];
      for (let r = 0; r < Math.max(1, args.runs); r++) {
        floor.push(await floorRun(url, path.join(dir, 'floor.out'), sha));
        agent.push(await agentRun(url, Math.round(mb * MiB), sha, path.join(dir, 'agent-state'), agentFlags));
        log(
          `${mb} MB run ${r + 1}: floor ${Math.round(floor.at(-1) as number)} ms, agent ${Math.round((agent.at(-1) as ChildResult).totalMs)} ms`,
        );
      }
      const agentMs = spread(
        agent.map((a) => a.totalMs),
        1,
      );
      const floorMs = spread(floor, 1);
      results.push({
        sizeMB: mb,
        floorMs,
        agentMs,
        ratio: round(agentMs.median / floorMs.median, 3),
        downloadRatio: round(median(agent.map((a) => a.downloadMs)) / floorMs.median, 3),
        agentBreakdownMs: {
          download: spread(
            agent.map((a) => a.downloadMs),
            1,
          ),
          verify: spread(
            agent.map((a) => a.verifyMs),
            1,
          ),
          install: spread(
            agent.map((a) => a.installMs),
            1,
          ),
          swap: spread(
            agent.map((a) => a.swapMs),
            1,
          ),
        },
        agentPeakRssMB: spread(
          agent.map((a) => a.peakRssMB),
          1,
        ),
        agentStepPeakRssMB: Object.fromEntries(
          ['download', 'verify', 'install'].map((k) => [
            k,
            spread(
              agent.map((a) => a.stepPeakRssMB[k] ?? 0),
              1,
            ),
          ]),
        ),
        agentBaselineRssMB: spread(
          agent.map((a) => a.baselineRssMB),
          1,
        ),
        floorMBps: round(mb / (floorMs.median / 1000), 0),
        agentMBps: round(mb / (agentMs.median / 1000), 0),
      });
      if (args['profile-dir']) {
        const dirOut = path.resolve(args['profile-dir'], `agent-${mb}MB`);
        await fs.mkdir(dirOut, { recursive: true });
        await agentRun(url, Math.round(mb * MiB), sha, path.join(dir, 'agent-state'), [
          '--cpu-prof',
          '--cpu-prof-dir',
          dirOut,
        ]);
        const file = path.join(
          dirOut,
          (await fs.readdir(dirOut))
            .filter((f) => f.endsWith('.cpuprofile'))
            .sort()
            .at(-1) ?? '',
        );
        const summary = summarizeProfile(file, 10);
        (results.at(-1) as SizeResult).profile = {
          file,
          busyMs: summary.totalMs - summary.idleMs,
          self: summary.self,
        };
      }
    }
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    for (const file of files.values()) await fs.rm(file, { force: true });
  }
  return results;
}

/** A real ota-agent, enrolled on a real coordinator, connected and idle: its RSS. */
async function idleAgent(dir: string): Promise<Record<string, unknown>> {
  const coordinator = await CoordinatorProcess.start({ dataDir: path.join(dir, 'coordinator') });
  let agent: ReturnType<typeof spawn> | null = null;
  try {
    const token = coordinator.admin();
    const admin = await CommandClient.connect({ url: coordinator.mqttUrl, user: token.user, token: token.token });
    const publisher = new BenchPublisher(admin, { url: coordinator.httpUrl, ...token }, dir);
    await admin.call('key.add', { key: publicKeyToJson(publisher.key), name: 'bench release key' });
    const enrolled = await admin.call<{ agentConfig: Record<string, unknown> }>('device.add', { id: 'idle-agent' });
    await admin.close();
    const configFile = path.join(dir, 'agent.json');
    await fs.writeFile(
      configFile,
      JSON.stringify({ ...enrolled.agentConfig, stateDir: path.join(dir, 'agent-state'), logLevel: 'info' }),
      { mode: 0o600 }, // it holds the token: the agent refuses one others can read
    );
    if (!existsSync(AGENT_MAIN)) throw new Error(`${AGENT_MAIN} is missing: run npm run build`);
    const flags = agentFlags;
    const child = spawn(process.execPath, [...flags, AGENT_MAIN, '--config', configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agent = child;
    let logs = '';
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      logs += d.toString();
    });
    const deadline = Date.now() + 30_000;
    while (!/"msg":"ready"/.test(logs) || !/connected to the broker/.test(logs)) {
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`ota-agent not connected:\n${logs.slice(-2000)}`);
      await sleep(100);
    }
    const connectedAt = wallMs();
    const samples: number[] = [];
    let last = tryProcStats(child.pid as number);
    for (let s = 0; s < Math.max(1, args['idle-s']); s++) {
      await sleep(1000);
      last = tryProcStats(child.pid as number);
      if (last) samples.push(last.rssMB);
    }
    return {
      nodeFlags: flags,
      idleSeconds: round((wallMs() - connectedAt) / 1000, 1),
      /** RSS at the end of the idle period (V8 shrinks the heap a few seconds after start). */
      rssMB: last?.rssMB ?? null,
      minRssMB: samples.length > 0 ? Math.min(...samples) : null,
      rssSamplesMB: samples,
      peakRssMB: last?.peakRssMB ?? null,
      cpuSeconds: last?.cpuSeconds ?? null,
      threads: last?.threads ?? null,
    };
  } finally {
    agent?.kill('SIGTERM');
    await coordinator.stop();
    if (agent && agent.exitCode === null) {
      await Promise.race([new Promise((r) => agent?.once('exit', r)), sleep(5000)]);
      agent.kill('SIGKILL');
    }
  }
}

async function main(): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-update-'));
  try {
    const t0 = wallMs();
    const sizes = await updatePath(dir);
    const idle = args['idle-s'] > 0 ? await idleAgent(dir) : null;
    const goals = [
      ...sizes
        .filter((s) => s.sizeMB >= 100)
        .map((s) => ({
          goal: `agent update path within 1.1x of the floor, ${s.sizeMB} MB`,
          target: '<= 1.1',
          value: s.ratio,
          met: s.ratio <= 1.1,
        })),
      {
        goal: 'agent peak RSS during an update (largest size)',
        target: '< 100 MB',
        value: sizes.length > 0 ? Math.max(...sizes.map((s) => s.agentPeakRssMB.max)) : null,
        met: sizes.length > 0 ? Math.max(...sizes.map((s) => s.agentPeakRssMB.max)) < 100 : null,
      },
      {
        goal: 'idle RSS of a connected ota-agent',
        target: '< 70 MB',
        value: (idle?.rssMB as number | null | undefined) ?? null,
        met: typeof idle?.rssMB === 'number' ? idle.rssMB < 70 : null,
      },
    ];
    printResult({
      benchmark: 'update',
      command: `npm run bench:update -- ${process.argv.slice(2).join(' ')}`.trim(),
      machine: machine(),
      revision: revision(),
      params: {
        sizesMB: numberList(args.sizes),
        runs: args.runs,
        server: 'node:http on 127.0.0.1, fs.createReadStream (1 MiB chunks)',
        floor: 'curl -s URL | tee FILE | openssl dgst -sha256 && sync',
        agent:
          process.env.BENCH_REHASH === '1'
            ? 'downloadArtifact + digestFile re-read + ModelStore.install + setLinks in a child process (probe and ONNX inspection excluded)'
            : 'downloadArtifact (its streaming digest is what is verified) + ModelStore.install + setLinks in a child process (probe and ONNX inspection excluded)',
        stateDir: 'temp dir on the same filesystem as the floor output',
      },
      sizes,
      idleAgent: idle,
      goals,
      ms: Math.round(wallMs() - t0),
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench:update: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
