import { promises as fs } from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { armOf } from '../coordinator/experiments/assign.js';
import type { Comparison } from '../coordinator/experiments/compare.js';
import type { ExperimentStatusResult, ExperimentView } from '../coordinator/experiments/experiment-service.js';
import type { Distribution } from '../scripts/fleet-sim/metric-distributions.js';
import { DEFAULT_DISTRIBUTION, simulatedSeries } from '../scripts/fleet-sim/metric-distributions.js';
import { mulberry32 } from '../scripts/mulberry32.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import type { AuditEvent, RolloutSummary } from '../shared/messages.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { TestSigners } from './helpers/signing.js';

// Experiments through a real coordinator (in process: real Aedes, real SQLite files, real HTTP):
// devices enrolled and connected as MQTT sessions that send metric summaries drawn from set
// distributions, as the fleet simulator does. The coordinator's clock is the test's, moved past
// the minimum duration so that the judge takes its first planned look without a wait.

const topics = createTopics();
const DEVICES = 24;

interface Clock {
  offsetMs: number;
}

async function setup(t: Test, clock: Clock, dataDir?: string) {
  const started = await startInProcessCoordinator(t, dataDir, {
    now: () => new Date(Date.now() + clock.offsetMs),
    experimentLookEveryMs: 25,
  });
  return started;
}

async function fleet(t: Test, clock: Clock) {
  const { running, token, admin, dataDir } = await setup(t, clock);
  const signers = new TestSigners();
  await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
  for (const [version, variant] of [
    ['1', 1],
    ['2', 2],
  ] as const) {
    const bytes = goodModel(variant);
    const file = path.join(dataDir, '..', `m${variant}.onnx`);
    await fs.writeFile(file, bytes);
    const envelope = signers.release('det', version, bytes, { counter: variant });
    await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file });
  }
  const tokens = new Map<string, string>();
  const ids = Array.from({ length: DEVICES }, (_, i) => `cam-${String(i).padStart(2, '0')}`);
  // One device is named like an Object.prototype property: ids are keys of Maps only.
  ids[DEVICES - 1] = 'constructor';
  for (const id of ids) {
    const r = await admin.call<{ token: string }>('device.add', { id, labels: { role: 'cam' } });
    tokens.set(id, r.token);
  }
  await admin.call('group.create', { name: 'cams', devices: ids });
  // Every device on det 1 first (a channel move), as a fleet would be before an experiment.
  await admin.call('channel.set', { model: 'det', channel: 'stable', version: '1', yes: true });
  return { running, admin, ids, tokens, dataDir };
}

async function connect(url: string, id: string, token: string): Promise<MqttClient> {
  return mqtt.connectAsync(url, {
    clientId: id,
    username: id,
    password: token,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
}

/** One summary of `observations` inferences of `version`, its window starting at `windowStartMs`. */
async function sendSummary(
  client: MqttClient,
  id: string,
  version: string,
  windowStartMs: number,
  dist: Distribution,
  seed: number,
) {
  const random = mulberry32(seed);
  const summary = {
    ts: new Date(windowStartMs + 60_000).toISOString(),
    windowStart: new Date(windowStartMs).toISOString(),
    windowSeconds: 60,
    windowsMerged: 1,
    series: [simulatedSeries('det', version, 50, random, dist)],
    dropped: { observations: 0, windows: 0 },
  };
  await client.publishAsync(topics.metrics(id), encodePayload(summary), { qos: 1 });
}

async function desiredOf(admin: CommandClient, id: string) {
  const d = await admin.call<{
    desired: { model: string; releaseId: string; source: string; rolloutId: string | null }[];
  }>('device.show', { id });
  return d.desired.find((e) => e.model === 'det');
}

/** An experiment of det 1 against 2 on `group`, with one guardrail. */
function createOn(admin: CommandClient, group: string, id?: string) {
  return admin.call('experiment.create', {
    ...(id === undefined ? {} : { id }),
    model: 'det',
    control: '1',
    candidate: '2',
    group,
    metrics: ['latency_ms p95 <= +10%'],
  });
}

async function refused(t: Test, p: Promise<unknown>, code: string, message: RegExp) {
  const err = await p.then(
    () => null,
    (e: unknown) => e as { code: string; message: string },
  );
  t.equal(err?.code, code, `refused with ${code}`);
  t.match(err?.message, message);
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test(
  'an experiment splits a group, owns it, and a guardrail breach halts it and reverts the candidate arm',
  async (t) => {
    const clock: Clock = { offsetMs: 0 };
    const { admin, ids, tokens, running } = await fleet(t, clock);

    const created = await admin.call<ExperimentView>('experiment.create', {
      id: 'exp-1',
      model: 'det',
      control: '1',
      candidate: '2',
      group: 'cams',
      split: 50,
      metrics: ['latency_ms p95 <= +10%', 'error_rate <= +1pp'],
      minDurationMs: 60_000,
      minDevices: 5,
    });
    t.equal(created.status, 'running');
    t.equal(created.arms.control + created.arms.candidate, DEVICES);
    const arm = new Map(ids.map((id) => [id, armOf('exp-1', id, 50)]));
    t.equal(
      created.arms.candidate,
      [...arm.values()].filter((a) => a === 'candidate').length,
      'the split is the hash split',
    );

    // Assignment is stored and each arm's devices have their arm's release through the signed path.
    const status = await admin.call<ExperimentStatusResult>('experiment.status', { id: 'exp-1' });
    t.strictSame(
      status.devices.map((d) => [d.id, d.arm]).sort(),
      [...arm].sort(),
      'status lists every device in its hashed arm',
    );
    for (const id of ids) {
      const desired = await desiredOf(admin, id);
      if (arm.get(id) === 'candidate') {
        t.match(desired, { releaseId: 'det@2', source: 'experiment', rolloutId: 'exp-1' }, `${id} candidate`);
      } else {
        t.match(desired, { releaseId: 'det@1' }, `${id} control keeps det@1`);
      }
    }

    // It owns its devices: a rollout, another experiment and a channel move all leave them alone.
    await refused(
      t,
      admin.call('rollout.create', { model: 'det', version: '2', group: 'cams', waves: '100' }),
      'E_CONFLICT',
      /24 device\(s\) are already in an active rollout or running experiment of det: .*\(in experiment exp-1\)/,
    );
    await refused(
      t,
      createOn(admin, 'cams'),
      'E_CONFLICT',
      /24 device\(s\) of group cams are owned by an active rollout or running experiment of det: .*\(in experiment exp-1\)/,
    );
    const moved = await admin.call<{ retargeted: string[]; skippedInRollout: string[] }>('channel.set', {
      model: 'det',
      channel: 'stable',
      version: '2',
      yes: true,
    });
    t.equal(moved.retargeted.length, 0, 'a channel move re-targets none of them');
    t.equal(moved.skippedInRollout.length, DEVICES);
    await admin.call('channel.set', { model: 'det', channel: 'stable', version: '1', yes: true });

    // Every device reports: the candidate three times slower. One window before the start (not
    // the experiment's), one after.
    const start = Date.parse(created.startedAt);
    const clients: MqttClient[] = [];
    t.teardown(() => Promise.all(clients.map((c) => c.endAsync(true))));
    let seed = 1;
    for (const id of ids) {
      const client = await connect(running.mqttUrl, id, tokens.get(id) as string);
      clients.push(client);
      const candidate = arm.get(id) === 'candidate';
      const dist = { ...DEFAULT_DISTRIBUTION, medianMs: candidate ? 30 : 10 };
      await sendSummary(client, id, candidate ? '2' : '1', start - 60_000, DEFAULT_DISTRIBUTION, seed++);
      await sendSummary(client, id, candidate ? '2' : '1', start + 1000, dist, seed++);
    }
    const before = await admin.call<Comparison>('experiment.compare', { id: 'exp-1' });
    t.equal(before.control.reporting + before.candidate.reporting, DEVICES, 'every device reports');
    t.equal(
      before.control.samples + before.candidate.samples,
      DEVICES * 50,
      'the window before the start is not counted',
    );
    t.equal(before.metrics[0]?.verdict, 'worse', 'p95 is worse than +10%');
    t.notOk(before.ready, 'but no decision before the minimum duration');
    t.match(before.notReady[0], /^running for \d+s of the minimum 1m/);
    t.notOk(before.srm.flagged);
    const unchanged = await admin.call<ExperimentView[]>('experiment.ls');
    t.equal(unchanged[0]?.status, 'running', 'still running');
    // An operator cannot promote a candidate whose guardrail is worse, unless forced.
    await refused(
      t,
      admin.call('experiment.promote', { id: 'exp-1', waves: '100' }),
      'E_EXPERIMENT_STATE',
      /experiment exp-1 was not promoted: latency_ms p95 is worse than its threshold \(see `otactl experiment compare exp-1`\); promote anyway with --force/,
    );

    // Past the minimum duration: the judge's first planned look halts it.
    clock.offsetMs = 61_000;
    const halted = await until(
      () => admin.call<ExperimentStatusResult>('experiment.status', { id: 'exp-1' }),
      (s) => s.status !== 'running',
      'the halt',
    );
    t.equal(halted.status, 'halted');
    t.equal(halted.lastLook?.outcome, 'halt');
    t.match(
      halted.endReason,
      /^guardrail breached: latency_ms p95 \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\], limit \+10\.0%: worse$/,
    );
    for (const id of ids) {
      const desired = await desiredOf(admin, id);
      t.match(desired, { releaseId: 'det@1' }, `${id} on the control release`);
      if (arm.get(id) === 'candidate') t.equal(desired?.source, 'revert', `${id} sent back`);
    }
    const audit = await admin.call<AuditEvent[]>('audit.ls', { limit: 1000 });
    const haltRow = audit.find((e) => e.action === 'experiment.halted');
    t.match(haltRow, {
      actor: 'coordinator',
      subject: 'experiment:exp-1',
      details: { revertedDevices: created.arms.candidate, evidence: /^after 24 reporting devices .*latency_ms p95 \+/ },
    });
    // Its audit rows: created and halted, nothing else (an ended experiment is never looked at
    // again: planLook's rule, test/experiment-simulation.test.ts). Time moves on for what follows.
    clock.offsetMs = 10 * 60_000;
    const after = await admin.call<AuditEvent[]>('audit.ls', { limit: 1000 });
    t.equal(
      after.filter((e) => e.subject === 'experiment:exp-1' && e.action.startsWith('experiment.')).length,
      2,
      'created, halted',
    );
    // Read after the end, it is the comparison the halt was decided on: its look, not today's.
    const ended = await admin.call<Comparison>('experiment.compare', { id: 'exp-1' });
    t.equal(ended.at, halted.endedAt);
    t.equal(ended.look.index, 1);
    t.equal(ended.metrics[0]?.verdict, 'worse');
    await refused(
      t,
      admin.call('experiment.promote', { id: 'exp-1', waves: '100', force: true }),
      'E_EXPERIMENT_STATE',
      /experiment exp-1 is halted .*: it cannot be promoted any more/,
    );

    // Its devices are free again: a rollout may take them all.
    const r = await admin.call<RolloutSummary>('rollout.create', {
      model: 'det',
      version: '2',
      group: 'cams',
      waves: '100',
    });
    t.equal(
      r.waves.reduce((n, w) => n + w.devices, 0),
      DEVICES,
      'the rollout takes every device of the group',
    );
    await refused(
      t,
      admin.call('experiment.stop', { id: 'exp-1' }),
      'E_EXPERIMENT_STATE',
      /experiment exp-1 is halted \(guardrail breached: .*\): it cannot be stopped any more/,
    );
  },
);

t.test(
  'promote hands the candidate to a rollout with the evidence; stop --revert; restarts keep everything',
  async (t) => {
    const clock: Clock = { offsetMs: 0 };
    const { admin, ids, tokens, running, dataDir } = await fleet(t, clock);
    const metrics = ['latency_ms p95 <= +25%', 'confidence mean >= -0.05'];
    await admin.call('experiment.create', {
      id: 'exp-a',
      model: 'det',
      control: '1',
      candidate: '2',
      group: 'cams',
      metrics,
      minDurationMs: 60_000,
      minDevices: 5,
    });
    const arm = new Map(ids.map((id) => [id, armOf('exp-a', id, 50)]));
    const view = (await admin.call<ExperimentView[]>('experiment.ls'))[0] as ExperimentView;
    const start = Date.parse(view.startedAt);
    const clients: MqttClient[] = [];
    t.teardown(() => Promise.all(clients.map((c) => c.endAsync(true))));
    let seed = 100;
    for (const id of ids) {
      const client = await connect(running.mqttUrl, id, tokens.get(id) as string);
      clients.push(client);
      await sendSummary(
        client,
        id,
        arm.get(id) === 'candidate' ? '2' : '1',
        start + 1000,
        DEFAULT_DISTRIBUTION,
        seed++,
      );
    }
    const compared = await admin.call<Comparison>('experiment.compare', { id: 'exp-a' });
    t.equal(compared.control.samples + compared.candidate.samples, DEVICES * 50);

    // A viewer may read, not change.
    const viewer = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });
    const vera = await CommandClient.connect({ url: running.mqttUrl, user: 'vera', token: viewer.token });
    t.teardown(() => vera.close());
    t.equal((await vera.call<Comparison>('experiment.compare', { id: 'exp-a' })).experiment, 'exp-a');
    await refused(
      t,
      vera.call('experiment.stop', { id: 'exp-a' }),
      // The broker refuses a viewer's publish to an operator's command: the ACL closes the connection.
      'E_CONNECT',
      /experiment.stop: the coordinator closed the connection before answering \(a command your role may not run is refused this way\)/,
    );
    t.equal(
      (await admin.call<ExperimentView>('experiment.status', { id: 'exp-a' })).status,
      'running',
      'still running',
    );

    // The coordinator restarts on the same data: the experiment, its arms and what its devices
    // sent are kept, and the same comparison comes back.
    await Promise.all(clients.map((c) => c.endAsync(true)));
    clients.length = 0;
    await vera.close();
    await admin.close();
    await running.stop();
    const second = await setup(t, clock, dataDir);
    const admin2 = second.admin;
    const recompared = await admin2.call<Comparison>('experiment.compare', { id: 'exp-a' });
    t.strictSame(
      recompared.metrics.map((m) => [m.metric, m.control, m.candidate, m.difference]),
      compared.metrics.map((m) => [m.metric, m.control, m.candidate, m.difference]),
      'the comparison after a restart is the one before',
    );
    t.strictSame(
      (await admin2.call<ExperimentStatusResult>('experiment.status', { id: 'exp-a' })).devices.map((d) => d.arm),
      (await admin2.call<ExperimentStatusResult>('experiment.status', { id: 'exp-a' })).devices.map((d) =>
        armOf('exp-a', d.id, 50),
      ),
    );

    // Promote: a rollout over the group, the experiment ended in the same transaction.
    await refused(
      t,
      admin2.call('rollout.create', { id: 'exp-a', model: 'det', version: '2', group: 'cams', waves: '100' }),
      'E_CONFLICT',
      /the id exp-a is taken by an experiment: pick another rollout id/,
    );
    await refused(
      t,
      admin2.call('experiment.promote', { id: 'exp-a', waves: '100', moveChannel: true }),
      'E_USAGE',
      /give --waves \(a rollout over the group\) or --move-channel \(the channel now\), not both/,
    );
    const promoted = await admin2.call<ExperimentView & { evidence: string; result: RolloutSummary }>(
      'experiment.promote',
      {
        id: 'exp-a',
        waves: '50,100',
      },
    );
    t.equal(promoted.status, 'promoted');
    t.match(promoted.promotedTo, { rolloutId: /^ro-/ });
    t.equal(promoted.result.id, (promoted.promotedTo as { rolloutId: string }).rolloutId);
    t.match(
      promoted.evidence,
      /^after 24 reporting devices \(control \d+, candidate \d+\) for \d+s: latency_ms p95 [+-]\d+\.\d% \[/,
    );
    const audit = await admin2.call<AuditEvent[]>('audit.ls', { limit: 1000 });
    const row = audit.find((e) => e.action === 'experiment.promoted');
    t.match(row?.details, { promotedTo: { rolloutId: promoted.result.id }, evidence: promoted.evidence });
    const rolloutRow = audit.find((e) => e.action === 'rollout.created' && e.details.rolloutId === promoted.result.id);
    t.ok(row && rolloutRow, 'the promotion and the rollout are both in the audit');
    t.equal(row?.seq, (rolloutRow?.seq ?? 0) - 1, 'one commit: the handover, then the rollout it created');
    t.equal(row?.ts, rolloutRow?.ts);
    t.equal(
      promoted.result.waves.reduce((n, w) => n + w.devices, 0),
      DEVICES,
      'the rollout covers the whole group',
    );
    await refused(
      t,
      admin2.call('experiment.promote', { id: 'exp-a', waves: '100' }),
      'E_EXPERIMENT_STATE',
      /is promoted/,
    );

    // stop --revert: the candidate arm goes back to the control.
    await admin2.call('experiment.create', {
      id: 'exp-b',
      model: 'det',
      control: '1',
      candidate: '2',
      group: 'cams',
      metrics,
    });
    const armB = new Map(ids.map((id) => [id, armOf('exp-b', id, 50)]));
    const stopped = await admin2.call<ExperimentView>('experiment.stop', { id: 'exp-b', revert: true });
    t.equal(stopped.status, 'stopped');
    t.match(stopped.endReason, /stopped by admin, candidate arm reverted to the control/);
    for (const id of ids) {
      if (armB.get(id) !== 'candidate') continue;
      t.match(await desiredOf(admin2, id), { releaseId: 'det@1', source: 'revert' }, `${id} reverted`);
    }

    // More experiments than the coordinator keeps read: each still answers with its own numbers.
    for (const id of ['exp-c', 'exp-d', 'exp-e']) {
      await admin2.call('experiment.create', {
        id,
        model: 'det',
        control: '1',
        candidate: '2',
        group: 'cams',
        metrics,
      });
      await admin2.call('experiment.stop', { id });
    }
    for (const id of ['exp-a', 'exp-b', 'exp-c', 'exp-d', 'exp-e', 'exp-a']) {
      const c = await admin2.call<Comparison>('experiment.compare', { id });
      t.equal(c.experiment, id);
      t.equal(c.control.samples + c.candidate.samples, id === 'exp-a' ? DEVICES * 50 : 0, `${id}: its own rows`);
    }
  },
);

t.test('a channel move, a rollout and an experiment see who owns each device of their target', async (t) => {
  // The owners are read for the whole target at once (coordinator/store/target-reads.ts): each
  // device must still count for its own owner only, `constructor` included.
  const clock: Clock = { offsetMs: 0 };
  const { admin, ids } = await fleet(t, clock);
  const inRollout = ids.slice(0, 3);
  const inExperiment = ['constructor', ...ids.slice(3, 5)];
  const free = ids.filter((id) => !inRollout.includes(id) && !inExperiment.includes(id));
  await admin.call('group.create', { name: 'some', devices: inExperiment });
  await admin.call('rollout.create', {
    id: 'ro-1',
    model: 'det',
    version: '2',
    devices: inRollout,
    waves: '50,100:manual',
  });
  await createOn(admin, 'some', 'exp-o');

  const moved = await admin.call<{ retargeted: string[]; skippedInRollout: string[] }>('channel.set', {
    model: 'det',
    channel: 'stable',
    version: '2',
    yes: true,
  });
  t.strictSame([...moved.skippedInRollout].sort(), [...inRollout, ...inExperiment].sort(), 'owned: left alone');
  t.strictSame([...moved.retargeted].sort(), [...free].sort(), 'the rest re-targeted');

  await refused(
    t,
    admin.call('rollout.create', {
      model: 'det',
      version: '1',
      devices: [ids[1], 'constructor', ...free],
      waves: '100',
    }),
    'E_CONFLICT',
    new RegExp(
      `^2 device\\(s\\) are already in an active rollout or running experiment of det: ${ids[1]} \\(in ro-1\\), constructor \\(in experiment exp-o\\);`,
    ),
  );
  await refused(
    t,
    createOn(admin, 'cams'),
    'E_CONFLICT',
    /^6 device\(s\) of group cams are owned by an active rollout or running experiment of det: /,
  );
  // A rollout over the free devices keeps what their desired state named before it (det@2, by
  // the channel move; none of them has reported) as the release an abort sends them back to.
  // Its devices are offline: its first wave ends at once, its gate holds the rest pending.
  await admin.call('rollout.create', { id: 'ro-2', model: 'det', version: '1', devices: free, waves: '50,100:manual' });
  const sent: string[] = [];
  for (const id of free) if ((await desiredOf(admin, id))?.rolloutId === 'ro-2') sent.push(id);
  t.ok(sent.length > 0 && sent.length < free.length, `the first wave sent det@1 to ${sent.length} of ${free.length}`);
  await admin.call('rollout.abort', { id: 'ro-2', policy: 'revert' });
  for (const id of sent)
    t.match(await desiredOf(admin, id), { releaseId: 'det@2', source: 'revert' }, `${id} back on det@2`);
});
