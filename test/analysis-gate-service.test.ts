import { promises as fs } from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import t from 'tap';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import type { RolloutStatusResult } from '../coordinator/rollout/types.js';
import { DEFAULT_DISTRIBUTION, simulatedSeries } from '../scripts/fleet-sim/metric-distributions.js';
import { mulberry32 } from '../scripts/mulberry32.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import type { AuditEvent, RolloutSummary } from '../shared/messages.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { reportOf } from './helpers/reports.js';
import { TestSigners } from './helpers/signing.js';

// An analysis gate through a real coordinator (in process: real Aedes, SQLite, HTTP), devices as
// MQTT sessions that report their outcomes and send metric summaries. The coordinator's clock is
// the test's: moved past the bake time, the judge measures without a wait. A candidate three
// times slower fails the gate and halts the rollout with the numbers; resumed, the wave bakes
// again, and the same candidate at the previous version's speed passes and the next wave starts.

const topics = createTopics();
const N = 12;

t.test('an analysis gate halts a slow candidate, and passes it once it is as fast', async (t) => {
  const clock = { offsetMs: 0 };
  const now = () => Date.now() + clock.offsetMs;
  const { running, token, admin, dataDir } = await startInProcessCoordinator(t, undefined, {
    now: () => new Date(now()),
    experimentLookEveryMs: 25,
  });
  const signers = new TestSigners();
  await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
  for (const v of [1, 2]) {
    const file = path.join(dataDir, '..', `m${v}.onnx`);
    await fs.writeFile(file, goodModel(v));
    const envelope = signers.release('det', String(v), goodModel(v), { counter: v });
    await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file });
  }
  const ids = Array.from({ length: N }, (_, i) => `cam-${i}`);
  const clients = new Map<string, MqttClient>();
  t.teardown(() => Promise.all([...clients.values()].map((c) => c.endAsync(true))));
  let seq = 1;
  const report = (id: string, version: string, rolloutId: string | null) => {
    const r = reportOf(id, { det: { state: 'healthy', current: version } }, new Date(now()).toISOString(), seq++);
    (r.models.det as { rolloutId: string | null }).rolloutId = rolloutId;
    return (clients.get(id) as MqttClient).publishAsync(topics.reported(id), encodePayload(r), {
      qos: 1,
      retain: true,
    });
  };
  for (const id of ids) {
    const { token: deviceToken } = await admin.call<{ token: string }>('device.add', { id });
    const client = await mqtt.connectAsync(running.mqttUrl, {
      clientId: id,
      username: id,
      password: deviceToken,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    clients.set(id, client);
    await client.publishAsync(topics.status(id), encodePayload({ online: true, ts: new Date().toISOString() }), {
      qos: 1,
    });
    await report(id, '1', null);
  }
  await admin.call('group.create', { name: 'cams', devices: ids });

  const created = await admin.call<RolloutSummary>('rollout.create', {
    id: 'ro-gate',
    model: 'det',
    version: '2',
    group: 'cams',
    waves: '50:analysis,100',
    analysis: { metrics: ['latency_ms p95 <= +50%'], bakeTime: '1m', measurements: 2, minDevices: 4 },
  });
  t.match(created.waves, [{ wave: 1, analysis: true }, { wave: 2 }]);
  const status = await admin.call<RolloutStatusResult>('rollout.status', { id: 'ro-gate' });
  const wave1 = status.devices.filter((d) => d.wave === 1).map((d) => d.id);
  const rest = status.devices.filter((d) => d.wave === 2).map((d) => d.id);
  t.equal(wave1.length, N / 2);

  const until = async (what: string, ok: (s: RolloutSummary) => boolean) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const s = (await admin.call<RolloutStatusResult>('rollout.status', { id: 'ro-gate' })).summary;
      if (ok(s)) return s;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  for (const id of wave1) await report(id, '2', 'ro-gate');
  const baking = await until('the bake', (s) => s.analysis?.state === 'baking');
  t.equal(baking.status, 'waiting_approval');
  t.equal(baking.currentWave, 1);

  let seed = 1;
  const sendMetrics = async (candidateMedianMs: number) => {
    const start = now() + 1000;
    for (const id of ids) {
      const candidate = wave1.includes(id);
      const summary = {
        ts: new Date(start + 60_000).toISOString(),
        windowStart: new Date(start).toISOString(),
        windowSeconds: 60,
        windowsMerged: 1,
        series: [
          simulatedSeries('det', candidate ? '2' : '1', 60, mulberry32(seed++), {
            ...DEFAULT_DISTRIBUTION,
            medianMs: candidate ? candidateMedianMs : 10,
          }),
        ],
      };
      await (clients.get(id) as MqttClient).publishAsync(topics.metrics(id), encodePayload(summary), { qos: 1 });
    }
  };
  await sendMetrics(30);
  // Before the bake time nothing is measured (the rollout's own record says so).
  t.equal((await until('still baking', () => true)).analysis?.measurements, 0);
  clock.offsetMs += 61_000;
  const halted = await until('the halt', (s) => s.status === 'halted');
  t.match(halted.analysis, { wave: 1, state: 'failed', measurements: 1, failures: 1 });
  t.match(
    halted.haltReason,
    /^analysis of wave 1 failed: measurement 1 of 2: wave 1 on 2 \(6 devices\) vs 6 devices on 1 over 1m\d*s?: latency_ms p95 \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\], limit \+50\.0%: worse$/,
  );
  t.equal(halted.waves[1]?.devices, 6);
  t.equal(halted.waves[1]?.counts.pending, 6, 'the next wave was never assigned');

  // Resumed, the wave bakes again; now as fast as the previous version: the gate passes.
  await admin.call('rollout.resume', { id: 'ro-gate' });
  const again = await until('the second bake', (s) => s.analysis?.state === 'baking');
  t.not(again.analysis?.startedAt, baking.analysis?.startedAt, 'a new bake, from now');
  await sendMetrics(10);
  clock.offsetMs += 61_000;
  const passed = await until('the pass', (s) => s.analysis?.state === 'passed');
  t.equal(passed.status, 'running');
  t.equal(passed.currentWave, 2, 'the next wave started');
  t.equal(passed.waves[1]?.counts.assigned, 6);
  const after = await admin.call<RolloutStatusResult>('rollout.status', { id: 'ro-gate' });
  t.strictSame(
    after.devices
      .filter((d) => d.state === 'assigned')
      .map((d) => d.id)
      .sort(),
    [...rest].sort(),
    'exactly the devices of wave 2 were assigned',
  );
  const audit = await admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'ro-gate', limit: 1000 });
  t.strictSame(
    audit.map((e) => e.action).filter((a) => a.startsWith('rollout.analysis') || a === 'rollout.halted'),
    ['rollout.analysis_started', 'rollout.halted', 'rollout.analysis_started', 'rollout.analysis_passed'],
  );
  t.match(audit.find((e) => e.action === 'rollout.analysis_passed')?.details, {
    detail: /^measurement 1 of 2: .*latency_ms p95 [+-]\d+\.\d% \[.*\], limit \+50\.0%: (inconclusive|better)$/,
  });
});
