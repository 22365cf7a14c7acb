#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DesiredPublisher } from '../../coordinator/desired/desired-publisher.js';
import { ParallelSigner } from '../../coordinator/desired/parallel-signer.js';
import { RolloutService } from '../../coordinator/rollout/rollout-service.js';
import { parseWaves } from '../../coordinator/rollout/strategy.js';
import { openStore } from '../../coordinator/store/sqlite-store.js';
import { generateKey } from '../../shared/keys.js';
import { createLogger } from '../../shared/logger.js';
import type { Reported, ReportedModels } from '../../shared/messages.js';
import { signerFor, signText } from '../../shared/signatures.js';
import { createTopics } from '../../shared/topics.js';
import { log, machine, numberList, parseArgs, printResult, revision, type Spread, spread, wallMs } from './common.js';

/**
 * `npm run bench:wave`: what the coordinator itself spends to start a large wave, with no broker
 * and no simulated devices on the machine (bench:fleet's big wave also counts the broker's
 * delivery and the devices sharing the cores). The real rollout engine (RolloutService,
 * PlanExecutor, DesiredPublisher) on a fresh SQLite store of `--devices` devices runs a rollout in
 * waves 1,10,100; the last device of the second wave reports healthy, and the time from that
 * report to the last wave's desired states handed over for publishing and signed is measured: the
 * decision, the one transaction (rows, desired entries, seqs) and the signatures (made as the
 * publisher takes the messages, desired-publisher.ts; here all at once, as with a window as large
 * as the wave).
 *
 * The rollout's creation is timed too (`createMs`: the target's presence, desired states and
 * owners read, the rows written and the first wave assigned, on this thread).
 *
 * For each `--signing-workers` count (the coordinator runs one per core beyond the first, at most
 * 3: service.ts), `--runs` times on a new store; the JSON has median, min, max.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    devices: { default: 10_000, help: 'devices enrolled; the last wave assigns 90% of them' },
    'signing-workers': { default: '0,1', help: 'signing worker threads to compare (comma-separated)' },
    runs: { default: 3, help: 'repetitions per worker count (each on a new store)' },
  },
  'npm run bench:wave -- [options]',
);

const NOW = '2026-12-06T00:00:00.000Z';
const MODEL = 'det';

interface Run {
  /** `rollout create` over every device (the first wave, 1%, assigned in it), on the coordinator's thread. */
  createMs: number;
  waveDevices: number;
  /** The report completing the previous wave -> the last wave's desired states handed over. */
  decideMs: number;
  /** Share of the wave's signatures made by the worker threads. */
  byWorkers: number;
}

async function once(devices: number, workers: number): Promise<Run> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-wave-'));
  const store = openStore(path.join(dir, 'coordinator.db'));
  const key = generateKey();
  const signing = new ParallelSigner({ seed: key.seed, workers, logger: createLogger('warn', process.stderr) });
  try {
    const ids = Array.from({ length: devices }, (_, i) => `dev-${String(i).padStart(6, '0')}`);
    store.transaction(() => {
      for (const id of ids) {
        store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h'.repeat(64), now: NOW });
        store.setDevicePresence(id, true, NOW);
      }
    });
    const manifest = JSON.stringify({ model: MODEL, version: '2.0.0', sha256: 'f'.repeat(64), size: 1_000_000 });
    store.addRelease({
      id: `${MODEL}@2.0.0`,
      model: MODEL,
      version: '2.0.0',
      counter: 2,
      sha256: 'f'.repeat(64),
      size: 1_000_000,
      envelope: { manifest, signatures: signText(manifest, [signerFor(generateKey(), { fast: true })]) },
      publishedBy: 'bench',
      publishedAt: NOW,
    });
    await signing.ready(); // the coordinator's workers start at its first large batch, long before a wave
    const topics = createTopics();
    const now = () => new Date();
    const desired = DesiredPublisher.sharing(signing, key, { store, topics, now });
    // As in the service: the models of each device's newest report are kept in memory (ReportRecorder).
    const lastModels = new Map<string, ReportedModels>();
    let handedOver: { at: number; count: number } | null = null;
    const rollouts = new RolloutService({
      store,
      desired,
      topics,
      now,
      lastModels: (id) => lastModels.get(id),
      publish: async (_messages, states) => {
        // What OrderedPublisher does as messages take their slots: the desired states are signed.
        const count = states?.length ?? 0;
        for (let i = 0; i < count; i++) states?.payload(i);
        if (count > 0) handedOver = { at: wallMs(), count };
      },
    });
    const createStarted = wallMs();
    rollouts.create(
      {
        id: 'r1',
        model: MODEL,
        version: '2.0.0',
        target: { devices: ids },
        strategy: { waves: parseWaves('1,10,100') },
      },
      'bench',
    );
    const createMs = wallMs() - createStarted;
    const report = (id: string) => {
      const r = {
        models: { [MODEL]: { state: 'healthy', version: '2.0.0', rolloutId: 'r1', error: null } },
      } as unknown as Reported;
      lastModels.set(id, r.models);
      rollouts.onReport(id, r);
    };
    const assigned = () =>
      rollouts
        .status('r1')
        .devices.filter((d) => d.state === 'assigned')
        .map((d) => d.id);
    for (const id of assigned()) report(id); // the first wave, healthy
    rollouts.flush();
    const second = assigned();
    const last = second.pop() as string;
    for (const id of second) report(id);
    rollouts.flush();
    handedOver = null;
    const before = { ...signing.totals };
    const started = wallMs();
    report(last);
    rollouts.flush();
    const done = handedOver as { at: number; count: number } | null;
    if (!done) throw new Error('the last wave was not started by the report that completed the second');
    const byWorkers = signing.totals.byWorkers - before.byWorkers;
    return {
      createMs,
      waveDevices: done.count,
      decideMs: done.at - started,
      byWorkers: byWorkers / (byWorkers + signing.totals.here - before.here),
    };
  } finally {
    await signing.close();
    store.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const result: Record<string, unknown> = {
  benchmark: 'wave',
  command: `npm run bench:wave -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: machine(),
  revision: revision(),
  params: { devices: args.devices, runs: args.runs },
};
const byWorkers: {
  signingWorkers: number;
  createMs: Spread;
  waveDevices: number;
  decideMs: Spread;
  signedByWorkers: Spread;
}[] = [];
for (const workers of numberList(args['signing-workers'])) {
  const runs: Run[] = [];
  for (let i = 0; i < args.runs; i++) {
    const run = await once(args.devices, workers);
    log(
      `workers ${workers}, run ${i + 1}: create ${Math.round(run.createMs)} ms; ${run.waveDevices} desired states in ${Math.round(run.decideMs)} ms`,
    );
    runs.push(run);
  }
  byWorkers.push({
    signingWorkers: workers,
    createMs: spread(runs.map((r) => r.createMs)),
    waveDevices: runs[0]?.waveDevices ?? 0,
    decideMs: spread(runs.map((r) => r.decideMs)),
    /** Share of the wave's signatures made by the worker threads. */
    signedByWorkers: spread(runs.map((r) => r.byWorkers)),
  });
}
result.waves = byWorkers;
printResult(result);
