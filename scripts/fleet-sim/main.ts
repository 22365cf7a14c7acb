#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { log, openFilesLimit, parseArgs, printResult, sleep, wallMs } from '../bench/common.js';
import { FleetSim, fleetSimWorkers } from './controller.js';
import { deviceIds, enrolDevices } from './enrol.js';
import type { SimCredentials } from './ipc.js';

/**
 * The fleet simulator on its own, against a running coordinator:
 *
 *   node dist/scripts/fleet-sim/main.js --url mqtt://127.0.0.1:1883 --token-file .ota-data/admin.token \
 *        --enrol 1000 --duration-s 600
 *   node dist/scripts/fleet-sim/main.js --url mqtt://127.0.0.1:1883 --devices-file creds.json
 *
 * With --enrol N it enrols N devices through `device.add` (admin token file needed); with
 * --devices-file it uses the credentials in that JSON file ([{id, token}]). The devices then
 * follow the protocol (scripts/fleet-sim/device.ts) for --duration-s seconds, or until SIGINT /
 * SIGTERM, and it prints the counters as JSON. Progress goes to stderr.
 */
const args = parseArgs(
  process.argv.slice(2),
  {
    url: { default: 'mqtt://127.0.0.1:1883', help: "the coordinator's MQTT URL" },
    'token-file': { default: '', help: 'admin token file (for --enrol)' },
    enrol: { default: 0, help: 'enrol this many new devices through device.add' },
    prefix: { default: 'sim', help: 'device id prefix for --enrol' },
    label: { default: 'fleet=sim', help: 'label k=v given to enrolled devices' },
    'devices-file': { default: '', help: 'JSON file [{id, token}] of enrolled devices' },
    workers: { default: 0, help: 'worker processes (default: one per 10,000 devices, at most 4)' },
    'step-ms': { default: 200, help: 'mean delay between reported transitions' },
    jitter: { default: 0.5, help: 'delay jitter, fraction of step-ms' },
    'fail-probability': { default: 0, help: 'probability that an assignment fails its probe' },
    'fail-devices': { default: '', help: 'comma-separated device ids whose assignments fail' },
    'fail-versions': { default: '', help: 'comma-separated versions that fail everywhere' },
    'duration-s': { default: 60, help: 'run this long, then disconnect and print counters' },
  },
  'fleet-sim [options]',
);

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

async function main(): Promise<void> {
  let devices: SimCredentials[] = [];
  if (args['devices-file']) {
    devices = JSON.parse(readFileSync(args['devices-file'], 'utf8')) as SimCredentials[];
  }
  if (args.enrol > 0) {
    if (!args['token-file']) throw new Error('--enrol needs --token-file (the admin token file)');
    const token = JSON.parse(readFileSync(args['token-file'], 'utf8')) as { user: string; token: string };
    const admin = await CommandClient.connect({ url: args.url, user: token.user, token: token.token });
    const [k, v] = args.label.split('=');
    const enrolled = await enrolDevices(admin, deviceIds(args.prefix, args.enrol), {
      labels: k && v ? { [k]: v } : {},
      onProgress: (n) => log(`enrolled ${n}`),
    });
    await admin.close();
    log(`enrolled ${enrolled.devices.length} devices in ${enrolled.ms} ms`);
    devices.push(...enrolled.devices);
  }
  if (devices.length === 0) throw new Error('no devices: give --enrol N or --devices-file');
  const workers = fleetSimWorkers(devices.length, args.workers, openFilesLimit('self').hard);
  const sim = await FleetSim.start(
    {
      url: args.url,
      keepaliveS: 30,
      connectConcurrency: 100,
      connectTimeoutMs: 60_000,
      stepMs: args['step-ms'],
      jitter: args.jitter,
      fail: {
        probability: args['fail-probability'],
        devices: list(args['fail-devices']),
        versions: list(args['fail-versions']),
      },
    },
    devices,
    workers,
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const counters = await sim.counters().catch(() => null);
    await sim.stop();
    printResult({ counters, workers: sim.usage(), fdLimits: sim.fdLimits() });
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
  const t0 = wallMs();
  const connected = await sim.connect();
  log(`${connected.connected} connected (${connected.failed} failed) in ${Math.round(wallMs() - t0)} ms`);
  const deadline = Date.now() + args['duration-s'] * 1000;
  while (!stopping && Date.now() < deadline) await sleep(250);
  await stop();
}

main().catch((err: Error) => {
  process.stderr.write(`fleet-sim: ${err.message}\n`);
  process.exitCode = 1;
});
