#!/usr/bin/env node
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { deviceRow } from '../../coordinator/commands/device-rows.js';
import { type CommandContext, HANDLERS } from '../../coordinator/commands/handlers.js';
import { ReportRecorder } from '../../coordinator/ingest/report-recorder.js';
import { openStore } from '../../coordinator/store/sqlite-store.js';
import { createLogger } from '../../shared/logger.js';
import { log, machine, parseArgs, printResult, revision, round, spread } from './common.js';
import { sampleReport } from './sample-report.js';

/**
 * `npm run bench:device-list -- --devices 50000`: what `device.ls` (otactl device ls, the
 * dashboard's device list) costs the coordinator's thread, on the real store and handler.
 *
 * A fresh database gets `--devices` enrolled devices, each with labels, facts and a report of one
 * model. The recorder is seeded from the store as the coordinator does at start. Then the
 * handler runs `--runs` times (`now`: the narrow read and the models kept in memory), and, for
 * comparison, the whole records read and mapped as device.ls did before 2026-12-07 (`before`).
 * Both lists must be equal (`sameRows`). Times in ms per call (median and range); the reply's
 * size as JSON.
 *
 * Then `device.find` (the dashboard's devices list: the coordinator filters, the page gets 50
 * rows), `--runs` times each: unfiltered, searched for a label value, and filtered on presence
 * (the three kinds of pass it makes). Times per call and the replies' sizes.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    devices: { default: 10_000, help: 'enrolled devices' },
    runs: { default: 5, help: 'calls of each variant' },
  },
  'npm run bench:device-list -- [options]',
);
for (const [name, value] of [
  ['devices', args.devices],
  ['runs', args.runs],
] as const) {
  if (!Number.isInteger(value) || value < 1) {
    process.stderr.write(`--${name} must be a whole number >= 1, got ${value}\n`);
    process.exit(2);
  }
}

const at = '2026-12-07T10:00:00.000Z';
const FACTS = {
  arch: 'x64',
  cpuCores: 4,
  memoryMB: 4096,
  freeDiskMB: 32000,
  os: 'bench',
  kernel: 'bench',
  accelerators: [],
};

async function main(): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-bench-device-list-'));
  const store = openStore(path.join(dir, 'coordinator.db'));
  try {
    log(`enrolling ${args.devices} devices`);
    store.transaction(() => {
      for (let i = 0; i < args.devices; i++) {
        const id = `dev-${String(i).padStart(6, '0')}`;
        store.addDevice({
          id,
          labels: { site: `site-${i % 20}`, line: `line-${i % 7}` },
          channel: 'stable',
          tokenHash: 'f'.repeat(64),
          now: at,
        });
        store.setDevicePresence(id, i % 3 !== 0, at, { facts: FACTS, agentVersion: '0.1.0' });
        store.setDeviceReport(id, sampleReport(id, 3, at), at);
      }
    });
    const recorder = new ReportRecorder({
      store,
      now: () => new Date(at),
      logger: createLogger('silent'),
      everyMs: 50,
    });
    // Seeded from the store, as the coordinator's start does (seedReports there).
    for (const d of store.eachDevice()) recorder.seed(d.id, d.lastReport?.models);
    const context = {
      store,
      lastModels: (id: string) => recorder.lastModels(id) ?? store.getDevice(id)?.lastReport?.models,
    } as unknown as CommandContext;
    const now = () => HANDLERS['device.ls']({}, context) as unknown[];
    // As device.ls was: every whole record (report, facts, token hash parsed), mapped to a row.
    const before = () => store.listDevices().map((d) => deviceRow(d, d.lastReport?.models));
    const reply = JSON.stringify(now());
    const sameRows = reply === JSON.stringify(before());
    log('timing');
    // Alternated, so neither variant gets the warmer cache.
    const samples = { now: [] as number[], before: [] as number[] };
    for (let r = 0; r < args.runs; r++) {
      for (const [name, fn] of [
        ['before', before],
        ['now', now],
      ] as const) {
        const t0 = performance.now();
        fn();
        samples[name].push(performance.now() - t0);
      }
    }
    const nowMs = spread(samples.now, 1);
    const beforeMs = spread(samples.before, 1);
    log('timing device.find');
    const finds = {
      all: {},
      text: { text: 'site-3' },
      state: { state: 'offline' },
    } as const;
    const findMs: Record<string, number[]> = { all: [], text: [], state: [] };
    const findReply: Record<string, { total: number; rows: number; replyKB: number }> = Object.create(null);
    for (let r = 0; r < args.runs; r++) {
      for (const [name, a] of Object.entries(finds)) {
        const t0 = performance.now();
        const found = HANDLERS['device.find'](a, context) as { total: number; devices: unknown[] };
        (findMs[name] as number[]).push(performance.now() - t0);
        findReply[name] = {
          total: found.total,
          rows: found.devices.length,
          replyKB: round(JSON.stringify(found).length / 1024, 1),
        };
      }
    }
    printResult({
      benchmark: 'device-list',
      command: `npm run bench:device-list -- ${process.argv.slice(2).join(' ')}`.trim(),
      machine: machine(),
      revision: revision(),
      params: { devices: args.devices, runs: args.runs },
      msPerCall: { now: nowMs, before: beforeMs },
      find: {
        msPerCall: Object.fromEntries(Object.entries(findMs).map(([k, v]) => [k, spread(v, 1)])),
        replies: findReply,
      },
      speedup: round(beforeMs.median / nowMs.median, 2),
      replyMB: round(reply.length / 1e6, 2),
      sameRows,
    });
    if (!sameRows) process.exitCode = 1;
    // As the coordinator on its way out (nothing waits to be written: no report was recorded).
    recorder.flush();
  } finally {
    store.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exitCode = 1;
});
