#!/usr/bin/env node
import { type BareBrokerResult, type BrokerKind, measureBareBroker } from './bare-broker-measure.js';
import {
  abandonOnTimeoutOrSignal,
  log,
  machine,
  niceOthers,
  parseArgs,
  printResult,
  revision,
  round,
} from './common.js';

/**
 * `npm run bench:bare-broker -- --devices N`: the broker alone with bench:fleet's simulated
 * devices (scripts/bench/bare-broker-measure.ts says what each phase measures), against bare
 * Aedes, bare Mosquitto, or both one after the other. Prints ONE JSON document (stdout);
 * progress on stderr. Exit 1 when a run failed (its `errors` say why, with everything measured
 * until then), 2 on a usage error.
 */

const args = parseArgs(
  process.argv.slice(2),
  {
    broker: { default: 'both', help: 'aedes, mosquitto or both' },
    devices: { default: 1000, help: 'simulated devices' },
    burst: { default: 3, help: 'reports per device in the ingest burst (as bench:fleet --burst)' },
    workers: { default: 0, help: 'simulator processes (default: one per 10,000 devices, at most 4)' },
    'connect-concurrency': { default: 50, help: 'connections being opened at once per worker' },
    'step-ms': { default: 20, help: 'mean delay between reported transitions in the prime phase' },
    'aedes-retained-index': {
      default: false,
      help: "Aedes with the coordinator's retained-message store (coordinator/broker/retained-index.ts), not the stock one",
    },
    mosquitto: { default: '/usr/sbin/mosquitto', help: 'the mosquitto binary' },
    'mosquitto-max-inflight': {
      default: -1,
      help: "Mosquitto's max_inflight_messages (-1: its default, 20; 0: no limit)",
    },
    'mosquitto-conf': {
      default: '',
      help: "more Mosquitto config lines, separated by ';' (e.g. 'set_tcp_nodelay true'); a later line wins",
    },
    edges: {
      default: 0,
      help: "with --broker mosquitto: the devices connect to this many edge Mosquittos bridged into the bare one (past one process's open-files limit, as bench:fleet --edges)",
    },
    'sim-nice': {
      default: 0,
      help: 'nice value (0-19) for the simulator processes and the edges (as bench:fleet --sim-nice)',
    },
    'phase-timeout-s': { default: 600, help: 'limit for each phase' },
    'stall-s': { default: 30, help: 'deliveries that made no progress for this long count as lost' },
    'timeout-s': { default: 3600, help: 'limit for the whole run' },
  },
  'npm run bench:bare-broker -- [options]',
);

const kinds: BrokerKind[] =
  args.broker === 'both'
    ? ['aedes', 'mosquitto']
    : args.broker === 'aedes' || args.broker === 'mosquitto'
      ? [args.broker]
      : [];
if (kinds.length === 0) {
  process.stderr.write(`--broker must be aedes, mosquitto or both, got ${args.broker}\n`);
  process.exit(2);
}
if (args.edges !== 0 && (args.broker !== 'mosquitto' || !Number.isInteger(args.edges) || args.edges < 1)) {
  process.stderr.write(
    `--edges ${args.edges}: edge brokers are Mosquittos bridged into the bare Mosquitto; use a whole number >= 1 with --broker mosquitto\n`,
  );
  process.exit(2);
}

try {
  niceOthers([], args['sim-nice']); // checks the value only
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}

const mosquittoExtra = args['mosquitto-conf']
  .split(';')
  .map((l) => l.trim())
  .filter(Boolean);

const result: Record<string, unknown> = {
  benchmark: 'bare-broker',
  command: `npm run bench:bare-broker -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: machine(),
  revision: revision(),
  params: {
    brokers: kinds,
    devices: args.devices,
    burstReportsPerDevice: args.burst,
    connectConcurrencyPerWorker: args['connect-concurrency'],
    stepMs: args['step-ms'],
    aedesPersistence: args['aedes-retained-index'] ? 'retained-index' : 'stock',
    mosquittoMaxInflight: args['mosquitto-max-inflight'] < 0 ? 'default (20)' : args['mosquitto-max-inflight'],
    mosquittoConf: mosquittoExtra,
    ...(args.edges > 0 ? { edges: args.edges } : {}),
    ...(args['sim-nice'] !== 0 ? { simNice: args['sim-nice'] } : {}),
  },
};
const errors: string[] = [];
const abort = new AbortController();

/** Mosquitto's figures over Aedes's: above 1 = Mosquitto faster (rates) or bigger (memory, CPU per message). */
function comparison(a: BareBrokerResult, m: BareBrokerResult): Record<string, number | null> {
  const ratio = (x: number | null | undefined, y: number | null | undefined) =>
    x != null && y != null && y !== 0 ? round(x / y, 2) : null;
  return {
    ingestReportsPerSec: ratio(m.ingestBurst?.reportsPerSec, a.ingestBurst?.reportsPerSec),
    ingestPubackReportsPerSec: ratio(m.ingestBurst?.pubackReportsPerSec, a.ingestBurst?.pubackReportsPerSec),
    ingestBrokerCpuPerReport: ratio(m.ingestBurst?.brokerCpuUsPerReport, a.ingestBurst?.brokerCpuUsPerReport),
    fanOutPerSecond: ratio(m.fanOut?.perSecond, a.fanOut?.perSecond),
    fanOutBrokerCpuPerMessage: ratio(m.fanOut?.brokerCpuUsPerMessage, a.fanOut?.brokerCpuUsPerMessage),
    connectPerSecond: ratio(m.connect?.perSecond, a.connect?.perSecond),
    memoryPerDevice: ratio(m.memory?.perDeviceKB, a.memory?.perDeviceKB),
    peakRss: ratio(m.memory?.peakRssMB, a.memory?.peakRssMB),
  };
}

async function run(): Promise<void> {
  const runs: Partial<Record<BrokerKind, BareBrokerResult>> = {};
  for (const kind of kinds) {
    const r = await measureBareBroker({
      kind,
      devices: args.devices,
      burst: args.burst,
      workers: args.workers,
      connectConcurrency: args['connect-concurrency'],
      stepMs: args['step-ms'],
      phaseTimeoutMs: args['phase-timeout-s'] * 1000,
      stallMs: args['stall-s'] * 1000,
      aedesRetainedIndex: args['aedes-retained-index'],
      mosquittoBin: args.mosquitto,
      mosquittoExtra,
      ...(args.edges > 0 ? { edges: args.edges } : {}),
      simNice: args['sim-nice'],
      onResult: (partial) => {
        result[kind] = partial;
      },
      ...(args['mosquitto-max-inflight'] >= 0 ? { mosquittoMaxInflight: args['mosquitto-max-inflight'] } : {}),
      signal: abort.signal,
    });
    runs[kind] = r;
    result[kind] = r;
    for (const e of r.errors) errors.push(`${kind}: ${e}`);
  }
  if (runs.aedes && runs.mosquitto) result.mosquittoOverAedes = comparison(runs.aedes, runs.mosquitto);
}

function finish(): void {
  result.errors = errors;
  printResult(result);
}

/** Kills everything this run started (by its pid), prints what was measured until now, and exits. */
function abandon(why: string, code: number): void {
  errors.push(why);
  abort.abort();
  finish();
  process.exit(code);
}

const watchdog = abandonOnTimeoutOrSignal(args['timeout-s'], abandon);

run()
  .catch((err: Error) => {
    errors.push(err.message);
    log(`error: ${err.message}`);
  })
  .finally(() => {
    clearTimeout(watchdog);
    finish();
    process.exitCode = errors.length > 0 ? 1 : 0;
  });
