import t from 'tap';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { openSession } from './helpers/mqtt-session.js';

// A watcher that stops reading (a frozen browser tab, a sleeping laptop) is cut once 16 MiB of
// its deliveries wait unread (coordinator/broker/watcher-delivery.ts), and never holds back the
// device it watches. Before, the broker kept writing into its socket for up to 60 s (Aedes's
// drainTimeout): this test then fails, the watcher still connected, nothing counted. A real
// coordinator, a real device session, and a watcher whose socket is paused.

const REPORTS = 600;
/** About 70 KB per report (32 models with long error messages): 600 of them are ~40 MB, far more
 * than the loopback socket buffers and the 16 MiB a watcher may leave unread. */
function bigReport(deviceId: string, n: number): string {
  const models: Record<string, unknown> = {};
  for (let i = 0; i < 32; i++) {
    models[`m${i}`] = {
      state: 'failed',
      version: '1.0.0',
      current: null,
      previousVersion: null,
      rolloutId: null,
      progress: null,
      attempt: 0,
      error: { code: 'E_DOWNLOAD', message: `report ${n} `.padEnd(2000, 'x') },
      updatedAt: new Date(Date.UTC(2026, 11, 6, 0, 0, 0, n)).toISOString(),
    };
  }
  return JSON.stringify({ deviceId, seq: 0, ts: new Date(Date.UTC(2026, 11, 6, 0, 0, 0, n)).toISOString(), models });
}

async function scrape(httpUrl: string, series: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : Number.NaN;
}

t.test('a watcher that stops reading is cut at 16 MiB behind; the device it watches is never held back', async (t) => {
  const { running, admin } = await startInProcessCoordinator(t);
  const { token: deviceToken } = await admin.call<{ token: string }>('device.add', { id: 'cam-1' });
  const { token: vToken } = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });

  const frozen = await openSession(t, running.mqttUrl, 'vera', vToken, 'vera@frozen');
  await frozen.client.subscribeAsync('ota/v1/devices/+/reported', { qos: 1 });
  // The dashboard's transport: MQTT over the coordinator's WebSocket, at QoS 0 as the page subscribes.
  const frozenWs = await openSession(t, `${running.httpUrl.replace(/^http/, 'ws')}/mqtt`, 'vera', vToken, 'vera@tab');
  await frozenWs.client.subscribeAsync('ota/v1/devices/+/reported', { qos: 0 });
  const live = await openSession(t, running.mqttUrl, 'vera', vToken, 'vera@live');
  await live.client.subscribeAsync('ota/v1/devices/+/reported', { qos: 1 });
  // From here the frozen watcher reads nothing: its socket's buffers fill, then the broker's.
  for (const w of [frozen, frozenWs]) (w.client.stream as unknown as { pause(): void }).pause();

  const device = await openSession(t, running.mqttUrl, 'cam-1', deviceToken, 'cam-1');
  // Every publish waits for its PUBACK, as the agent's outbox does: a stalled delivery to the
  // frozen watcher would stop this loop (the test then fails at tap's timeout, with the count).
  let acknowledged = 0;
  t.teardown(() => t.comment(`${acknowledged} of ${REPORTS} device publishes acknowledged`));
  for (let n = 1; n <= REPORTS; n++) {
    await device.client.publishAsync('ota/v1/devices/cam-1/reported', bigReport('cam-1', n), { qos: 1, retain: true });
    acknowledged = n;
  }
  t.equal(acknowledged, REPORTS, 'every report of the device acknowledged while the watcher read nothing');

  // The frozen watcher was cut once too far behind, and counted; the reading one got everything.
  t.equal(await scrape(running.httpUrl, 'ota_mqtt_slow_watchers_cut_total'), 2, 'both frozen watchers cut');
  // A paused socket does not see the close until it reads again.
  for (const w of [frozen, frozenWs]) (w.client.stream as unknown as { resume(): void }).resume();
  await frozen.closed;
  await frozenWs.closed;
  t.pass('the frozen watchers (TCP and WebSocket) were disconnected');
  await new Promise<void>((resolve) => {
    const check = () => {
      if (live.received.length >= REPORTS) resolve();
      else live.client.once('message', check);
    };
    check();
  });
  t.equal(live.received.length, REPORTS, 'the watcher that reads received every report, in order');
  t.ok(
    live.received.every((m, i) => JSON.parse(m.payload.toString()).ts === JSON.parse(bigReport('cam-1', i + 1)).ts),
    'in order',
  );
  t.notOk(live.client.disconnected, 'the reading watcher stays connected');
  // The coordinator took every report (authoritative: its store's last report is the last sent).
  const shown = await admin.call<{ lastReport: { ts: string } | null }>('device.show', { id: 'cam-1' });
  t.equal(shown.lastReport?.ts, JSON.parse(bigReport('cam-1', REPORTS)).ts);
});
