import t from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import type { RolloutSummary } from '../shared/messages.js';
import { isSafeId } from '../shared/names.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// Issue 12 item 4: an id that is also the name of an Object.prototype property (`constructor`,
// `toString`, ...) is a valid id like any other. End to end with a real coordinator process and
// real agents, every such name is used as a device id, a model name, a channel, a label key, a
// group and a rollout id: every device installs its models, reports them healthy, and takes a
// second update of the same models (a device that wedged on such a name would not).

t.setTimeout(300_000);

const NAMES = Object.getOwnPropertyNames(Object.prototype).filter(isSafeId);
// Device i runs model i (its own name) and model i+1: every agent holds two such keys at once.
const next = (i: number) => NAMES[(i + 1) % NAMES.length] as string;

t.test('the Object.prototype names that are valid ids', async (t) => {
  t.same([...NAMES].sort(), [
    'constructor',
    'hasOwnProperty',
    'isPrototypeOf',
    'propertyIsEnumerable',
    'toLocaleString',
    'toString',
    'valueOf',
  ]);
  t.notOk(isSafeId('__proto__'), '__proto__ is not a valid id (it starts with "_"), nor __defineGetter__ and the like');
});

t.test('Object.prototype names as device, model, channel, label, group and rollout ids', async (t) => {
  const f = await FleetFixture.create(t);

  // Version 1.0.0 of every model, each on the channel of its own name; channel i also carries model i+1.
  for (const [i, name] of NAMES.entries()) {
    await f.publish(name, '1.0.0', goodModel(i + 1), { channel: name, counter: 1 });
  }
  for (const [i, channel] of NAMES.entries()) {
    await f.admin.call('channel.set', { model: next(i), channel, version: '1.0.0' });
  }
  const channels = await f.admin.call<{ model: string; channel: string; releaseId: string }[]>('channel.ls');
  t.equal(channels.length, NAMES.length * 2, 'two channel rows per name');

  // Enrolled on its channel, the device gets both models at once.
  for (const name of NAMES) await f.enrol(name, { channel: name, labels: { [name]: 'on' } });
  for (const [i, name] of NAMES.entries()) {
    await f.waitForDevice(name, name, 'healthy', '1.0.0');
    await f.waitForDevice(name, next(i), 'healthy', '1.0.0');
  }
  t.pass(`${NAMES.length} devices healthy on two models each at 1.0.0`);

  // A second update of model i on device i, by a rollout named like it in a group named like it
  // (a selector on the label named like it). Its completion moves channel i of model i.
  for (const [i, name] of NAMES.entries()) {
    await f.publish(name, '2.0.0', goodModel(100 + i), { counter: 2 });
    await f.admin.call('group.create', { name, selector: { [name]: 'on' } });
    const created = await f.admin.call<RolloutSummary>('rollout.create', {
      id: name,
      model: name,
      version: '2.0.0',
      group: name,
      channel: name,
      waves: '100',
    });
    t.match(created, { id: name, model: name, status: 'running', waves: [{ devices: 1 }] }, `rollout ${name} created`);
  }
  for (const name of NAMES) {
    const done = await f.waitForRollout(name, (s) => s.status === 'completed', 'completed');
    t.equal(done.failures.count, 0, `rollout ${name} completed without failures`);
    t.match(await f.waitForDevice(name, name, 'healthy', '2.0.0'), { current: '2.0.0', previousVersion: '1.0.0' });
    t.equal(await f.link(name, name), '2.0.0');
  }

  // A second update of model i+1 on device i, by moving channel i.
  for (const [i, channel] of NAMES.entries()) {
    await f.admin.call('channel.set', { model: next(i), channel, version: '2.0.0' });
  }
  for (const [i, name] of NAMES.entries()) {
    t.match(await f.waitForDevice(name, next(i), 'healthy', '2.0.0'), { current: '2.0.0', previousVersion: '1.0.0' });
    const report = f.lastReport(name);
    t.same(Object.keys(report?.models ?? {}).sort(), [name, next(i)].sort(), `${name} reports exactly its two models`);
    t.equal(report?.rejected, null, `${name} refused no desired state`);
  }

  // What the coordinator shows of them.
  const devices =
    await f.admin.call<{ id: string; channel: string; models: Record<string, { state: string }> }[]>('device.ls');
  for (const [i, name] of NAMES.entries()) {
    const row = devices.find((d) => d.id === name);
    t.match(row, { channel: name }, `device.ls lists ${name}`);
    t.same(Object.keys(row?.models ?? {}).sort(), [name, next(i)].sort());
    const status = await f.admin.call<{ summary: RolloutSummary; devices: { id: string; state: string }[] }>(
      'rollout.status',
      { id: name },
    );
    t.match(status, { summary: { id: name, status: 'completed' }, devices: [{ id: name, state: 'healthy' }] });
  }
  const moved = await f.admin.call<{ model: string; channel: string; releaseId: string }[]>('channel.ls');
  for (const [i, name] of NAMES.entries()) {
    t.match(
      moved.filter((c) => c.channel === name).sort((a, b) => a.model.localeCompare(b.model)),
      [name, next(i)].sort().map((model) => ({ model, releaseId: `${model}@2.0.0` })),
      `channel ${name} points at 2.0.0 of both its models`,
    );
  }
});
