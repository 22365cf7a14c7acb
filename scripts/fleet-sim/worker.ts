import { mapLimit, tryProcStats, wallMs } from '../bench/common.js';
import { SimDevice } from './device.js';
import {
  type BurstResult,
  type ConnectResult,
  type FromWorker,
  type SimCounters,
  type SimOptions,
  type ToWorker,
  type TracesResult,
  zeroCounters,
} from './ipc.js';

/**
 * A fleet-simulator worker: holds its share of the simulated devices' MQTT connections and
 * answers the controller's requests over the IPC channel (scripts/fleet-sim/ipc.ts). Started
 * with child_process.fork by the controller; exits when the channel closes.
 */

if (!process.send) {
  process.stderr.write('fleet-sim worker: start me through the controller (child_process.fork)\n');
  process.exit(2);
}

let options: SimOptions | null = null;
let devices: SimDevice[] = [];
const counters: SimCounters = zeroCounters();

function reply(message: FromWorker): void {
  process.send?.(message);
}

async function handle(msg: ToWorker): Promise<unknown> {
  switch (msg.type) {
    case 'init': {
      options = msg.options;
      devices = msg.devices.map((c) => new SimDevice(c, msg.options, counters, wallMs));
      counters.devices = devices.length;
      return { devices: devices.length };
    }
    case 'connect': {
      const opts = mustInit();
      const startedAt = wallMs();
      const latenciesMs: number[] = [];
      let failed = 0;
      let firstError: string | null = null;
      await mapLimit(devices, opts.connectConcurrency, async (d) => {
        const t0 = wallMs();
        try {
          await d.connect();
          latenciesMs.push(Math.round(wallMs() - t0));
        } catch (err) {
          failed++;
          counters.connectFailures++;
          firstError ??= (err as Error).message;
        }
      });
      const result: ConnectResult = {
        connected: devices.length - failed,
        failed,
        firstError,
        startedAt,
        doneAt: wallMs(),
        latenciesMs,
      };
      return result;
    }
    case 'behaviour': {
      const opts = mustInit();
      Object.assign(opts, msg.behaviour);
      return { ok: true };
    }
    case 'burst': {
      const startedAt = wallMs();
      const acked = await Promise.all(devices.map((d) => d.burst(msg.reportsPerDevice)));
      const result: BurstResult = {
        sent: devices.length * msg.reportsPerDevice,
        acked: acked.reduce((a, b) => a + b, 0),
        models: devices.reduce((a, d) => a + d.modelCount, 0) * msg.reportsPerDevice,
        startedAt,
        doneAt: wallMs(),
      };
      return result;
    }
    case 'metrics': {
      const startedAt = wallMs();
      const counts = await Promise.all(
        devices.map((d) => d.metricsBurst(msg.summariesPerDevice, msg.fromMs, msg.observations)),
      );
      const result: BurstResult = {
        sent: counts.reduce((a, b) => a + b.sent, 0),
        acked: counts.reduce((a, b) => a + b.acked, 0),
        startedAt,
        doneAt: wallMs(),
      };
      return result;
    }
    case 'traces': {
      const out: TracesResult = {};
      const wanted = new Set(msg.rolloutIds);
      for (const d of devices) {
        for (const [rolloutId, trace] of d.traces) {
          if (!wanted.has(rolloutId)) continue;
          out[d.creds.id] ??= {};
          (out[d.creds.id] as Record<string, typeof trace>)[rolloutId] = trace;
        }
      }
      return out;
    }
    case 'counters':
      return { ...counters };
    case 'idle':
      return { idle: devices.every((d) => d.idle()), pending: devices.filter((d) => !d.idle()).length };
    case 'stop': {
      await Promise.all(devices.map((d) => d.stop()));
      return { stopped: devices.length };
    }
  }
}

function mustInit(): SimOptions {
  if (!options) throw new Error('init first');
  return options;
}

process.on('message', (raw) => {
  const msg = raw as ToWorker;
  handle(msg).then(
    (result) => {
      const stats = tryProcStats('self');
      reply({ rid: msg.rid, ok: true, result, rssMB: stats?.rssMB ?? 0, cpuSeconds: stats?.cpuSeconds ?? 0 });
      if (msg.type === 'stop') setTimeout(() => process.exit(0), 50);
    },
    (err: Error) => reply({ rid: msg.rid, ok: false, error: err.stack ?? err.message }),
  );
});
process.on('disconnect', () => process.exit(0));
