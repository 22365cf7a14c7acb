import { promises as fs } from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import t from 'tap';
import { type AgentState, AgentStateSchema, initialState } from '../agent/core/agent-state.js';
import { type AgentEvent, buildReport, type Effect, step } from '../agent/core/machine.js';
import { StateStore } from '../agent/state/state-store.js';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { decide } from '../coordinator/rollout/decide.js';
import { LiveDeviceIndex } from '../coordinator/rollout/device-index.js';
import { planRolloutCreate } from '../coordinator/rollout/plan-create.js';
import { parseWaves } from '../coordinator/rollout/strategy.js';
import { summarize } from '../coordinator/rollout/summary.js';
import type { Rollout, RolloutDevice, RolloutStatusResult } from '../coordinator/rollout/types.js';
import { parseDesired, SimDevice } from '../scripts/fleet-sim/device.js';
import { type SimCounters, type SimOptions, zeroCounters } from '../scripts/fleet-sim/ipc.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import type { Envelope } from '../shared/envelope.js';
import { idRecord, ownEntry } from '../shared/id-record.js';
import { publicKeyToJson } from '../shared/keys.js';
import { DesiredStateSchema, MetricsSchema, type Reported, ReportedSchema } from '../shared/messages.js';
import { VALUE_NAME_PATTERN } from '../shared/metrics/limits.js';
import { assertSafeName, isSafeId } from '../shared/names.js';
import { judgeOutputs } from '../shared/probe-check.js';
import { ProbeSpecSchema, probeModelMismatches } from '../shared/probe-spec.js';
import { createTopics } from '../shared/topics.js';
import { TINY_IO } from './helpers/agent-fixture.js';
import { type CliResult, otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { machineContext } from './helpers/machine-context.js';
import { TestSigners } from './helpers/signing.js';

// Issue 12 item 4: ids that are names of Object.prototype properties. Every record keyed by an id
// must see only its own entries: in a plain `{}`, `record.constructor` is Object and
// `record.toString` a function, so a model the record does not hold looked present. The pure
// functions and schemas here, then the coordinator's lookups in reports read back from SQLite
// and otactl's rendering; test/prototype-ids-e2e.test.ts runs the whole path with real agents.

/** Polls the coordinator's state until `done` (bounded: it stops a hung test, it measures nothing). */
async function until(what: string, done: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 30_000; !(await done()); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const NAMES = Object.getOwnPropertyNames(Object.prototype).filter(isSafeId);
const other = (name: string) => NAMES[(NAMES.indexOf(name) + 1) % NAMES.length] as string;
const signers = new TestSigners();

t.test('which Object.prototype names are ids; __proto__ is not one', async (t) => {
  t.same([...NAMES].sort(), [
    'constructor',
    'hasOwnProperty',
    'isPrototypeOf',
    'propertyIsEnumerable',
    'toLocaleString',
    'toString',
    'valueOf',
  ]);
  for (const name of Object.getOwnPropertyNames(Object.prototype).filter((n) => !isSafeId(n))) {
    t.match(name, /^__/, `${name} fails the id rule (it starts with "_")`);
    t.throws(() => assertSafeName('model name', name), { code: 'E_NAME' });
  }
});

t.test('idRecord and ownEntry see own entries only', async (t) => {
  for (const name of NAMES) {
    const rec = idRecord({ [other(name)]: 1 });
    t.equal(rec[name], undefined, `idRecord()[${name}]`);
    t.notOk(name in rec);
    t.equal(ownEntry({ [other(name)]: 1 }, name), undefined, `ownEntry(plain, ${name})`);
    t.equal(ownEntry({ [name]: 2 }, name), 2);
  }
  t.equal(ownEntry(null, 'constructor'), undefined);
});

t.test('wire and state schemas parse records keyed by model without a prototype', async (t) => {
  const ts = '2026-11-26T12:00:00.000Z';
  const reportedModel = {
    state: 'healthy',
    version: '1.0',
    current: '1.0',
    previousVersion: null,
    rolloutId: null,
    progress: null,
    attempt: 0,
    error: null,
    updatedAt: ts,
  };
  for (const name of NAMES) {
    const held = other(name);
    const envelope = signers.release(held, '1.0', goodModel(1));
    const desired = DesiredStateSchema.parse(
      JSON.parse(
        JSON.stringify({
          type: 'ota.desired/v1',
          deviceId: name,
          seq: 1,
          issuedAt: ts,
          models: { [held]: { envelope, rolloutId: name } },
        }),
      ),
    );
    const reported = ReportedSchema.parse(
      JSON.parse(JSON.stringify({ deviceId: name, seq: 1, ts, models: { [held]: reportedModel } })),
    );
    const sketch = { level: 0, count: 0, sum: 0, min: 0, max: 0, zeros: 0 };
    const metrics = MetricsSchema.parse({
      ts,
      windowStart: ts,
      windowSeconds: 60,
      series: [
        {
          model: held,
          version: '1.0',
          source: 'app',
          count: 0,
          errors: 0,
          latencyMs: sketch,
          values: VALUE_NAME_PATTERN.test(held) ? { [held]: sketch } : {},
        },
      ],
    });
    const state = AgentStateSchema.parse(
      JSON.parse(JSON.stringify({ ...initialState(), floors: { [held]: 1 }, models: {}, desired })),
    );
    for (const [what, rec] of [
      ['desired', desired.models],
      ['reported', reported.models],
      ['metrics values', metrics.series[0]?.values],
      ['agent state floors', state.floors],
      ['agent state models', state.models],
      ['agent state desired', state.desired?.models],
    ] as const) {
      t.equal(rec?.[name], undefined, `${what}: no ${name} entry`);
      t.notOk(rec && name in rec, `${what}: ${name} in it is false`);
    }
    t.ok(desired.models[held], 'the entry it holds is there');
  }
  // A `__proto__` key in JSON is an own property: zod leaves it out, nothing gets a prototype.
  const parsed = ReportedSchema.parse(JSON.parse(`{"deviceId":"d","seq":0,"ts":"${ts}","models":{"__proto__":{}}}`));
  t.same(Object.keys(parsed.models), []);
  t.equal(Object.getPrototypeOf(parsed.models), null);
});

t.test('the agent state store loads state.json into records without a prototype', async (t) => {
  const dir = t.testdir();
  const store = new StateStore(dir);
  await store.save({ ...initialState(), floors: { det: 3 } });
  const { state } = await store.load();
  for (const name of NAMES) {
    t.equal(state.models[name], undefined, `models.${name}`);
    t.equal(state.floors[name], undefined, `floors.${name}`);
  }
});

// ---- the agent's pure core ----

const ctxFor = (deviceId: string) => ({ ...machineContext(signers), deviceId });

function run(deviceId: string, state: AgentState, ...events: AgentEvent[]) {
  let effects: Effect[] = [];
  for (const event of events) {
    const r = step(state, event, ctxFor(deviceId));
    state = r.state;
    effects = effects.concat(r.effects);
  }
  return { state, effects };
}

const sha = (e: Envelope) => (JSON.parse(e.manifest) as { sha256: string }).sha256;

/** Every effect of an update answered with success, until the model is healthy. */
function install(deviceId: string, state: AgentState, model: string, envelope: Envelope, size: number): AgentState {
  const generation = state.models[model]?.generation as number;
  return run(
    deviceId,
    state,
    { type: 'download_ok', model, generation },
    { type: 'hashed', model, generation, size, sha256: sha(envelope) },
    { type: 'applied', model, generation },
    { type: 'probe_passed', model, generation },
  ).state;
}

t.test('agent core: a model, device and rollout named like Object.prototype properties updates twice', async (t) => {
  for (const name of NAMES) {
    const second = other(name);
    const v1 = goodModel(1);
    const v2 = goodModel(2);
    const a1 = signers.release(name, '1.0', v1, { counter: 1 });
    const b1 = signers.release(second, '1.0', v1, { counter: 1 });
    const a2 = signers.release(name, '2.0', v2, { counter: 2 });
    const b2 = signers.release(second, '2.0', v2, { counter: 2 });

    // Both models at once, from an empty state: each starts downloading.
    let r = run(name, initialState(), {
      type: 'desired_message',
      message: signers.desired(name, { [name]: { envelope: a1, rolloutId: name }, [second]: { envelope: b1 } }),
    });
    t.equal(r.state.rejected, null, `${name}: desired state accepted`);
    t.equal(r.state.models[name]?.phase, 'downloading', `${name}: downloading`);
    t.equal(r.state.models[second]?.phase, 'downloading', `${second} next to it: downloading`);
    t.same(
      r.effects
        .filter((e) => e.type === 'download')
        .map((e) => (e as { model: string }).model)
        .sort(),
      [name, second].sort(),
    );
    let state = install(name, install(name, r.state, name, a1, v1.length), second, b1, v1.length);
    t.equal(state.models[name]?.phase, 'healthy');
    t.equal(state.models[second]?.phase, 'healthy');
    t.equal(state.floors[name], 0, 'the verified floor is recorded under its own name');

    // The second update of both.
    r = run(name, state, {
      type: 'desired_message',
      message: signers.desired(name, { [name]: { envelope: a2, rolloutId: name }, [second]: { envelope: b2 } }),
    });
    t.equal(r.state.models[name]?.phase, 'downloading', `${name}: the second update starts`);
    state = install(name, install(name, r.state, name, a2, v2.length), second, b2, v2.length);
    t.same(state.models[name]?.links, { current: '2.0', previous: '1.0' });
    t.same(state.models[second]?.links, { current: '2.0', previous: '1.0' });

    const report: Reported = buildReport(state, name, '2026-11-26T12:00:00.000Z');
    t.same(Object.keys(report.models).sort(), [name, second].sort(), 'the report holds exactly the two models');
    t.match(report.models[name], { state: 'healthy', version: '2.0', rolloutId: name });
    t.equal(ReportedSchema.safeParse(JSON.parse(JSON.stringify(report))).success, true);

    // A restart with the links of another model only: each record keeps its own.
    const restarted = run(name, state, { type: 'started', links: { unrelated: { current: null, previous: null } } });
    t.same(restarted.state.models[name]?.links, { current: '2.0', previous: '1.0' });
  }
});

t.test('agent core: a rollback whose model left the desired state finishes as rolled_back', async (t) => {
  for (const name of NAMES) {
    const v1 = goodModel(1);
    const v2 = goodModel(2);
    const a1 = signers.release(name, '1.0', v1, { counter: 1 });
    const a2 = signers.release(name, '2.0', v2, { counter: 2 });
    const det = signers.release('det', '1.0', v1, { counter: 1 });
    let state = run(name, initialState(), {
      type: 'desired_message',
      message: signers.desired(name, { [name]: { envelope: a1 } }),
    }).state;
    state = install(name, state, name, a1, v1.length);
    state = run(name, state, {
      type: 'desired_message',
      message: signers.desired(name, { [name]: { envelope: a2, rolloutId: 'r2' } }),
    }).state;
    const generation = state.models[name]?.generation as number;
    state = run(
      name,
      state,
      { type: 'download_ok', model: name, generation },
      { type: 'hashed', model: name, generation, size: v2.length, sha256: sha(a2) },
      { type: 'applied', model: name, generation },
      { type: 'probe_failed', model: name, generation, error: { code: 'E_PROBE_FAILED', message: 'differs' } },
      // While it rolls back, the desired state drops the model (another one only).
      { type: 'desired_message', message: signers.desired(name, { det: { envelope: det } }) },
      { type: 'rolled_back', model: name, generation },
    ).state;
    t.match(
      state.models[name],
      { phase: 'rolled_back', links: { current: '1.0' }, error: { code: 'E_PROBE_FAILED' } },
      `${name}: rolled back, not failed by a phantom assignment`,
    );
  }
});

t.test('the probe judges tensors named like Object.prototype properties by their own entries', async (t) => {
  for (const name of NAMES) {
    const golden = { [name]: { dims: [1, 2], data: [1, 2] } };
    t.match(judgeOutputs({ y: { dims: [1, 2], data: [1, 2] } }, { golden, tolerance: { abs: 0.001, rel: 0 } }), {
      ok: false,
      code: 'E_PROBE_FAILED',
      message: `the model produced no output named ${name}`,
    });
    t.same(judgeOutputs({ [name]: { dims: [1, 2], data: [1, 2] } }, { golden, tolerance: { abs: 0.001, rel: 0 } }), {
      ok: true,
    });
    const spec = ProbeSpecSchema.parse({ inputs: { x: { type: 'float32', dims: [1, 4], data: [1, 2, 3, 4] } } });
    t.match(
      probeModelMismatches(
        spec,
        [
          { name: 'x', dims: [1, 4] },
          { name, dims: [1] },
        ],
        [],
      ),
      [`the model input ${name} has no value in the probe inputs`],
    );
  }
});

t.test('fleet-sim reads a desired state into a record without a prototype', async (t) => {
  for (const name of NAMES) {
    const envelope = signers.release(other(name), '1.0', goodModel(1));
    const message = signers.desired(name, { [other(name)]: { envelope } });
    const parsed = parseDesired(Buffer.from(JSON.stringify(message)));
    t.equal(parsed.models[name], undefined, name);
    t.match(parsed.models[other(name)], { version: '1.0' });
  }
});

// ---- the coordinator's pure rollout engine ----

t.test('rollout engine: rollout, model, channel and devices named like Object.prototype properties', async (t) => {
  for (const name of NAMES) {
    const now = '2026-11-26T12:00:00.000Z';
    const created = planRolloutCreate(
      {
        id: name,
        model: name,
        version: '2.0',
        strategy: { waves: parseWaves('50,100'), maxFailureRate: 0.5 },
        channel: name,
      },
      {
        releaseExists: true,
        eligibility: { eligible: true },
        rolloutExists: false,
        deviceIds: NAMES,
        online: () => true,
        busyIn: () => [],
        desiredBefore: (deviceId) => (deviceId === name ? null : `${name}@1.0`),
        inputs: {},
      },
      'alice',
      now,
    );
    let rollout: Rollout = { ...created.rollout, ...created.plan.rolloutPatch?.patch };
    const index = new LiveDeviceIndex(created.devices, rollout.strategy.waves.length);
    index.apply(created.plan.rolloutDevices?.devices ?? []);
    const apply = (decision: ReturnType<typeof decide>) => {
      rollout = { ...rollout, ...decision.patch };
      index.apply(decision.devices);
      return decision;
    };
    for (let wave = 0; wave < 2; wave++) {
      for (const d of index.values().filter((x) => x.state === 'assigned')) {
        apply(
          decide(
            rollout,
            index,
            { type: 'report', deviceId: d.deviceId, state: 'healthy', version: '2.0', error: null },
            now,
          ),
        );
      }
    }
    t.equal(rollout.status, 'completed', `${name}: completed`);
    const summary = summarize(rollout, index, now);
    t.match(summary, { id: name, model: name, status: 'completed', failures: { count: 0 } });
    t.equal(
      summary.waves.reduce((n, w) => n + (w.counts.healthy ?? 0), 0),
      NAMES.length,
      'every device counted healthy once',
    );
    const rows = new Map(index.values().map((d: RolloutDevice) => [d.deviceId, d]));
    t.equal(rows.get(name)?.previousReleaseId, null, 'each device keeps its own revert target');
    t.equal(rows.get(other(name))?.previousReleaseId, `${name}@1.0`);
  }
});

// ---- the coordinator's lookups in reports read back from SQLite, and otactl's rendering ----

t.test('coordinator: reports read back from SQLite are looked up by own key', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const topics = createTopics();
  const first = await startInProcessCoordinator(t, dataDir);
  await first.admin.call('key.add', { key: publicKeyToJson(signers.releaseKey), name: 'test release key' });
  const publish = async (c: typeof first, model: string, version: string, channel: string | null) => {
    const bytes = goodModel(version === '1.0' ? 1 : 2);
    const file = path.join(dir, `${model}-${version}.onnx`);
    await fs.writeFile(file, bytes);
    const envelope = signers.release(model, version, bytes, {
      ...TINY_IO,
      probe: ProbeSpecSchema.parse(goodProbe()),
      counter: version === '1.0' ? 1 : 2,
    });
    await uploadRelease({ url: c.running.httpUrl, user: c.token.user, token: c.token.token, envelope, file, channel });
  };

  // Device i follows channel i, which carries model i+1 at 1.0; the device reports another model only.
  const ts = new Date().toISOString();
  const tokens = new Map<string, string>();
  const connect = (url: string, name: string) =>
    mqtt.connectAsync(url, {
      clientId: name,
      username: name,
      password: tokens.get(name),
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
  for (const name of NAMES) {
    await publish(first, other(name), '1.0', name);
    const { token } = await first.admin.call<{ token: string }>('device.add', { id: name, channel: name });
    tokens.set(name, token);
    const client = await connect(first.running.mqttUrl, name);
    const report: Reported = {
      deviceId: name,
      seq: 1,
      ts,
      models: {
        det: {
          state: 'healthy',
          version: '1.0',
          current: '1.0',
          previousVersion: null,
          rolloutId: null,
          progress: null,
          attempt: 0,
          error: null,
          updatedAt: ts,
        },
      },
      rejected: null,
    };
    await client.publishAsync(topics.reported(name), JSON.stringify(report), { qos: 1, retain: true });
    await client.endAsync();
  }
  for (const name of NAMES) {
    await until(`${name}'s report recorded`, async () => {
      const shown = await first.admin.call<{ lastReport: Reported | null }>('device.show', { id: name });
      return shown.lastReport?.models.det?.state === 'healthy';
    });
  }

  // A restart: the coordinator knows the reports from SQLite only (plain JSON objects).
  await first.running.stop();
  const second = await startInProcessCoordinator(t, dataDir);
  const online: MqttClient[] = [];
  for (const name of NAMES) {
    const model = other(name);
    // Online (a status, no report): an online assigned device keeps the rollout's wave open.
    const client = await connect(second.running.mqttUrl, name);
    online.push(client);
    await client.publishAsync(topics.status(name), JSON.stringify({ online: true, ts }), { qos: 1, retain: true });
    await until(`${name} online`, async () => {
      const rows = await second.admin.call<{ id: string; online: boolean }[]>('device.ls');
      return rows.find((d) => d.id === name)?.online === true;
    });
    await publish(second, model, '2.0', null);
    await second.admin.call('rollout.create', { id: name, model, version: '2.0', devices: [name], waves: '100' });
    const status = await second.admin.call<RolloutStatusResult>('rollout.status', { id: name });
    t.match(status.devices, [{ id: name, state: 'assigned', now: null }], `${name} reports nothing of ${model} yet`);
    // Never reported the model: an abort with revert sends it back to its desired state before.
    await second.admin.call('rollout.abort', { id: name, policy: 'revert' });
    const after = await second.admin.call<RolloutStatusResult>('rollout.status', { id: name });
    t.match(after.devices, [{ id: name, revertedTo: { version: '1.0' } }], `${name} reverted to ${model}@1.0`);
    const device = await second.admin.call<{ desired: { model: string; releaseId: string }[] }>('device.show', {
      id: name,
    });
    t.match(device.desired, [{ model, releaseId: `${model}@1.0` }]);
  }

  // otactl shows a desired model the device does not report as not reported (one process per device, at once).
  const env = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: dataDir };
  const shown = await Promise.all(NAMES.map((name) => otactl(['device', 'show', name], { env })));
  for (const [i, name] of NAMES.entries()) {
    const cli = shown[i] as CliResult;
    const model = other(name);
    t.equal(cli.code, 0, cli.stderr);
    const row = cli.stdout.split('\n').find((line) => line.startsWith(`${model} `));
    t.match(
      row,
      new RegExp(`^${model}\\s+${model}@1\\.0\\s+\\S+\\s+-\\s+-\\s+-\\s+-\\s+-\\s*$`),
      `${name}: ${model} desired, not reported`,
      {
        stdout: cli.stdout,
      },
    );
    t.notMatch(cli.stdout, /undefined|function/, { stdout: cli.stdout });
  }

  // fleet-sim's simulated devices take the same desired states (each back on its model at 1.0).
  for (const client of online) await client.endAsync(true);
  const counters: SimCounters = zeroCounters();
  const options: SimOptions = {
    url: second.running.mqttUrl,
    keepaliveS: 30,
    connectConcurrency: 1,
    connectTimeoutMs: 10_000,
    stepMs: 1,
    jitter: 0,
    fail: { probability: 0, devices: [], versions: [] },
  };
  const sims = NAMES.map(
    (name) => new SimDevice({ id: name, token: tokens.get(name) as string }, options, counters, Date.now),
  );
  t.teardown(() => Promise.all(sims.map((s) => s.stop())));
  await Promise.all(sims.map((s) => s.connect()));
  for (const name of NAMES) {
    const model = other(name);
    await until(`sim ${name} healthy on ${model} 1.0`, async () => {
      const device = await second.admin.call<{ lastReport: Reported | null }>('device.show', { id: name });
      const m = device.lastReport?.models[model];
      return m?.state === 'healthy' && m.version === '1.0';
    });
  }
  t.equal(counters.desiredInvalid, 0);
  t.equal(counters.firstError, null);
});
