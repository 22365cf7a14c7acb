import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import { AgentFixture } from './helpers/agent-fixture.js';
import { paddedGoodModel } from './helpers/models.js';

// Broker restart and network drops: no report lost (the persisted outbox), no duplicate apply.

const applyCount = (logs: { msg: string }[]) => logs.filter((l) => /-> applying$/.test(l.msg)).length;

t.test('broker restart mid-update: reports made offline arrive in order, one apply', async (t) => {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent('net-1');
  await f.observer.waitFor('online', () => f.observer.statuses.get('net-1')?.find((s) => s.online));
  const big = paddedGoodModel(3 * 1024 * 1024);
  const desired = f.signers.desired('net-1', { det: { envelope: f.release('det', '1.0.0', big, { counter: 1 }) } });
  f.artifacts.throttle = { bytes: 128 * 1024, everyMs: 20 }; // about half a second of download
  await f.observer.publishDesired('net-1', desired);
  await f.observer.waitForState('net-1', 'det', 'downloading');

  await f.broker.stop(); // the broker goes away while the agent downloads, verifies, applies, probes
  await agent.waitForLog((l) => /-> healthy$/.test(l.msg), 30_000);
  const stateFile = JSON.parse(await fs.readFile(path.join(f.stateDir('net-1'), 'state.json'), 'utf8'));
  t.ok(stateFile.outbox.length >= 4, `reports kept on disk while offline (${stateFile.outbox.length})`);

  // The observer (standing in for the coordinator) must be subscribed again before the agent
  // flushes its outbox, so the agent is held off until then.
  f.broker.held.add('net-1');
  const before = f.broker.subscribes.length;
  await f.broker.restart();
  // Subscribed again, as the restarted broker saw it (not a pause that a busy machine overruns).
  await f.observer.waitFor(
    'observer subscribed again',
    () => f.broker.subscribes.slice(before).some((id) => id.startsWith('observer-')) || undefined,
  );
  // A restarted coordinator republishes the retained desired state: the same text, nothing new.
  await f.observer.publishDesired('net-1', desired);
  f.broker.held.delete('net-1');
  await f.observer.waitFor(
    'healthy reported',
    () => f.observer.last('net-1')?.models.det?.state === 'healthy' || undefined,
  );
  t.same(
    f.observer.states('net-1', 'det'),
    ['downloading', 'verifying', 'applying', 'probing', 'healthy'],
    'no report lost',
  );
  await f.observer.waitFor('outbox drained', async () => {
    const s = JSON.parse(await fs.readFile(path.join(f.stateDir('net-1'), 'state.json'), 'utf8'));
    return s.outbox.length === 0 || undefined;
  });
  t.equal(applyCount(agent.logs), 1, 'applied once');
  const sha = (JSON.parse(JSON.parse(desired.desired).models.det.envelope.manifest) as { sha256: string }).sha256;
  t.equal(f.artifacts.requests.filter((r) => r.path.endsWith(sha)).length, 1, 'downloaded once');
});

t.test('network drop: a desired state published meanwhile is applied once after reconnect', async (t) => {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent('net-2');
  await f.observer.waitFor('online', () => f.observer.statuses.get('net-2')?.find((s) => s.online));
  t.ok(f.broker.dropClient('net-2'), 'connection cut');
  await f.assign('net-2', {
    det: { envelope: f.release('det', '1.0.0', goodModel(1), { counter: 1 }), rolloutId: 'r1' },
  });
  await f.observer.waitForState('net-2', 'det', 'healthy', 30_000);
  // A second drop after the update: the retained desired state is delivered again on reconnect.
  const connects = f.broker.connects.filter((c) => c === 'net-2').length;
  t.ok(f.broker.dropClient('net-2'));
  await f.observer.waitFor(
    'reconnected',
    () => f.broker.connects.filter((c) => c === 'net-2').length > connects || undefined,
  );
  await new Promise((r) => setTimeout(r, 500));
  t.equal(applyCount(agent.logs), 1, 'no duplicate apply');
  t.equal(f.observer.last('net-2')?.rejected, null, 'the retained copy is not mistaken for a replay');
});

t.test('a report in flight when the connection drops is sent again after the reconnect', async (t) => {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent('net-3');
  await f.observer.waitFor('online', () => f.observer.statuses.get('net-3')?.find((s) => s.online));
  // The broker takes the agent's next publish and never acknowledges it, then the link drops:
  // the PUBLISH was in flight at the disconnect, as when a coordinator is killed mid-rollout.
  f.broker.unacknowledged.add('net-3');
  await f.assign('net-3', {
    det: { envelope: f.release('det', '1.0.0', goodModel(1), { counter: 1 }), rolloutId: 'r1' },
  });
  await f.observer.waitFor('a report swallowed', () => f.broker.swallowed.length > 0 || undefined);
  f.broker.unacknowledged.delete('net-3');
  t.ok(f.broker.dropClient('net-3'), 'connection cut with the report unacknowledged');
  await f.observer.waitForState('net-3', 'det', 'healthy', 30_000);
  t.same(
    f.observer.states('net-3', 'det'),
    ['downloading', 'verifying', 'applying', 'probing', 'healthy'],
    'the unacknowledged report and every later one arrived, in order',
  );
  t.equal(applyCount(agent.logs), 1, 'applied once');
  await f.observer.waitFor('outbox drained', async () => {
    const s = JSON.parse(await fs.readFile(path.join(f.stateDir('net-3'), 'state.json'), 'utf8'));
    return s.outbox.length === 0 || undefined;
  });
});
