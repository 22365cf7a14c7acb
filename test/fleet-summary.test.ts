import { promises as fs } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { createLogger } from '../shared/logger.js';
import { type FleetSummary, FleetSummarySchema } from '../shared/messages.js';
import { decodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { openSession, type Session } from './helpers/mqtt-session.js';
import { type ModelSpec, reportOf } from './helpers/reports.js';

// The retained fleet summary on ota/v1/fleet against a real coordinator in this process (real
// Aedes, SQLite, HTTP) and real MQTT sessions: an operator watching it, devices enrolled with
// device.add that connect, publish their status and reports, drop their connection (their will)
// and are removed with device.rm, and a restart that publishes the counts from the store again.

const topics = createTopics();
const silent = createLogger('silent', process.stdout, 'ota-coordinator');
/** Small, so a change shows up quickly; the pacing itself is fleet-summary-publisher.test.ts's. */
const EVERY_MS = 20;
const TS = '2026-12-06T10:00:00.000Z';

async function coordinator(t: Test, dataDir: string) {
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {});
  const running = await startCoordinator(config, { logger: silent, fleetSummaryEveryMs: EVERY_MS });
  let stopped: Promise<void> | null = null;
  const stop = () => {
    stopped ??= running.stop();
    return stopped;
  };
  t.teardown(stop);
  const token = JSON.parse(await fs.readFile(running.adminTokenFile, 'utf8')) as AdminTokenFile;
  const admin = await CommandClient.connect({ url: running.mqttUrl, user: token.user, token: token.token });
  t.teardown(() => admin.close());
  return { running, token, admin, stop };
}

type Running = Awaited<ReturnType<typeof coordinator>>;

/** An operator session subscribed to the fleet summary; `retained` says how each one arrived. */
async function watcher(t: Test, c: Running, clientId: string) {
  const session = await openSession(t, c.running.mqttUrl, c.token.user, c.token.token, clientId);
  const retained: boolean[] = [];
  session.client.on('message', (topic, _payload, packet) => {
    if (topic === topics.fleet()) retained.push(packet.retain);
  });
  const granted = await session.client.subscribeAsync(topics.fleet(), { qos: 1 });
  if (granted[0]?.qos !== 1) throw new Error(`fleet summary not granted: ${JSON.stringify(granted)}`);
  return { session, retained };
}

function summaries(s: Session): FleetSummary[] {
  return s.received
    .filter((m) => m.topic === topics.fleet())
    .map((m) => decodePayload(FleetSummarySchema, m.payload, m.topic));
}

/** The newest summary once it satisfies `pred` (10 s bound on a hung test, not a measurement). */
async function summaryWhere(
  t: Test,
  s: Session,
  what: string,
  pred: (x: FleetSummary) => boolean,
): Promise<FleetSummary> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const last = summaries(s).at(-1);
    if (last && pred(last)) {
      t.pass(`fleet summary: ${what}`);
      return last;
    }
    if (Date.now() > deadline) throw new Error(`no fleet summary with ${what}; the last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The counts, without the time. */
function counts(s: FleetSummary) {
  const { updatedAt: _, ...rest } = s;
  return rest;
}

const same = (want: ReturnType<typeof counts>) => (s: FleetSummary) =>
  JSON.stringify(counts(s)) === JSON.stringify(want);

/** A device session as the agent opens it: its status retained, and as its will the same saying offline. */
async function device(t: Test, c: Running, id: string, token: string): Promise<Session> {
  const offline = JSON.stringify({ online: false, ts: TS });
  const session = await openSession(t, c.running.mqttUrl, id, token, id, {
    will: { topic: topics.status(id), payload: Buffer.from(offline), qos: 1, retain: true },
  });
  await session.client.publishAsync(topics.status(id), JSON.stringify({ online: true, ts: TS }), {
    qos: 1,
    retain: true,
  });
  return session;
}

function report(s: Session, id: string, models: Record<string, ModelSpec>) {
  const payload = JSON.stringify(reportOf(id, models, TS, 0));
  return s.client.publishAsync(topics.reported(id), payload, { qos: 1, retain: true });
}

t.test('the fleet summary follows enrolment, presence, reports and removal, and survives a restart', async (t) => {
  const dataDir = path.join(t.testdir(), 'data');
  let c = await coordinator(t, dataDir);
  const w = await watcher(t, c, `${c.token.user}@fleet-1`);
  const empty = await summaryWhere(t, w.session, 'an empty fleet', same({ devices: 0, online: 0, models: [] }));
  t.ok(FleetSummarySchema.safeParse(empty).success);
  t.equal(w.retained[0], true, 'the first one is the retained summary published at start');

  const tokens = new Map<string, string>();
  for (const id of ['cam-1', 'cam-2', 'constructor']) {
    tokens.set(id, (await c.admin.call<{ token: string }>('device.add', { id })).token);
  }
  await summaryWhere(t, w.session, 'three devices enrolled', same({ devices: 3, online: 0, models: [] }));

  const cam1 = await device(t, c, 'cam-1', tokens.get('cam-1') as string);
  const cam2 = await device(t, c, 'cam-2', tokens.get('cam-2') as string);
  await summaryWhere(t, w.session, 'two online', same({ devices: 3, online: 2, models: [] }));

  await report(cam1, 'cam-1', { det: { state: 'healthy', current: '1.0' } });
  await report(cam2, 'cam-2', {
    det: { state: 'downloading', current: '1.0' },
    constructor: { state: 'idle' as const, current: null },
  });
  const both = {
    devices: 3,
    online: 2,
    models: [
      {
        model: 'constructor',
        devices: 1,
        running: [{ version: null, devices: 1 }],
        states: [{ state: 'idle' as const, devices: 1 }],
      },
      {
        model: 'det',
        devices: 2,
        running: [{ version: '1.0', devices: 2 }],
        states: [
          { state: 'downloading' as const, devices: 1 },
          { state: 'healthy' as const, devices: 1 },
        ],
      },
    ],
  };
  await summaryWhere(t, w.session, 'two reports', same(both));

  // cam-2 finishes: 2.0 healthy, and no longer reports the model `constructor`.
  await report(cam2, 'cam-2', { det: { state: 'healthy', current: '2.0' } });
  const finished = {
    devices: 3,
    online: 2,
    models: [
      {
        model: 'det',
        devices: 2,
        running: [
          { version: '1.0', devices: 1 },
          { version: '2.0', devices: 1 },
        ],
        states: [{ state: 'healthy' as const, devices: 2 }],
      },
    ],
  };
  await summaryWhere(t, w.session, 'cam-2 on 2.0', same(finished));

  // cam-2's connection drops without a DISCONNECT: the broker publishes its will.
  cam2.client.stream.destroy();
  await cam2.closed;
  await summaryWhere(t, w.session, 'cam-2 offline', same({ ...finished, online: 1 }));

  // cam-1, online, is removed: it leaves every count, `online` included.
  await c.admin.call('device.rm', { id: 'cam-1' });
  const afterRm = {
    devices: 2,
    online: 0,
    models: [
      {
        model: 'det',
        devices: 1,
        running: [{ version: '2.0', devices: 1 }],
        states: [{ state: 'healthy' as const, devices: 1 }],
      },
    ],
  };
  await summaryWhere(t, w.session, 'cam-1 removed', same(afterRm));
  await cam1.closed; // its session was ended by the removal

  // The device named `constructor` reports and stays connected until the coordinator stops.
  const ctor = await device(t, c, 'constructor', tokens.get('constructor') as string);
  await report(ctor, 'constructor', { constructor: { state: 'healthy' as const, current: '3.0' } });
  const beforeRestart = {
    devices: 2,
    online: 1,
    models: [
      {
        model: 'constructor',
        devices: 1,
        running: [{ version: '3.0', devices: 1 }],
        states: [{ state: 'healthy' as const, devices: 1 }],
      },
      ...afterRm.models,
    ],
  };
  await summaryWhere(t, w.session, 'constructor reported', same(beforeRestart));

  // A restart: the broker starts empty; the summary is published again from the store, nobody online.
  await c.stop();
  await ctor.closed;
  c = await coordinator(t, dataDir);
  const w2 = await watcher(t, c, `${c.token.user}@fleet-2`);
  const restarted = await summaryWhere(t, w2.session, 'the stored counts', () => true);
  t.same(counts(restarted), { ...beforeRestart, online: 0 }, 'the stored counts, online 0');
  t.equal(w2.retained[0], true, 'retained, although nothing moved since the start');

  await device(t, c, 'constructor', tokens.get('constructor') as string);
  await summaryWhere(t, w2.session, 'constructor back online', same({ ...beforeRestart, online: 1 }));
});
