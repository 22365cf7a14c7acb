import path from 'node:path';
import t, { type Test } from 'tap';
import { DesiredPublisher, type OutgoingMessage } from '../coordinator/desired/desired-publisher.js';
import { attentionRank } from '../coordinator/rollout/attention-order.js';
import { RolloutService, type RolloutServiceDeps } from '../coordinator/rollout/rollout-service.js';
import { parseWaves } from '../coordinator/rollout/strategy.js';
import { openStore } from '../coordinator/store/sqlite-store.js';
import type { Store, TransactionOptions } from '../coordinator/store/store.js';
import { generateKey } from '../shared/keys.js';
import type { Reported } from '../shared/messages.js';
import { signerFor, signText } from '../shared/signatures.js';
import { createTopics } from '../shared/topics.js';

// The rollout shell on a real SQLite store: which decisions are written durably, and how device
// events are batched (PacedFlush). The store is the real one; a Proxy only records the options
// each top-level transaction was asked for.

const NOW = '2026-03-01T10:00:00.000Z';
const DEVICES = ['d-1', 'd-2', 'd-3', 'd-4'];

function setup(t: Test, extra: Partial<RolloutServiceDeps> = {}) {
  const real = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => real.close());
  const transactions: ('durable' | 'write-behind')[] = [];
  let depth = 0;
  const store = new Proxy(real, {
    get(target, prop, receiver) {
      if (prop !== 'transaction') {
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return <T>(fn: () => T, options?: TransactionOptions): T => {
        if (depth === 0) transactions.push(options?.durable === false ? 'write-behind' : 'durable');
        depth++;
        try {
          return target.transaction(fn, options);
        } finally {
          depth--;
        }
      };
    },
  }) as Store;
  for (const id of DEVICES) {
    store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: NOW });
    store.setDevicePresence(id, true, NOW); // offline devices would not hold a wave open
  }
  store.addRelease({
    id: 'det@2.0.0',
    model: 'det',
    version: '2.0.0',
    counter: 2,
    sha256: 'f'.repeat(64),
    size: 10,
    envelope: { manifest: '{"model":"det"}', signatures: signText('{"model":"det"}', [signerFor(generateKey())]) },
    publishedBy: 'admin',
    publishedAt: NOW,
  });
  const topics = createTopics();
  // Time is the test's: a clock it moves and timers that fire only when it moves it (PacedFlush),
  // so "not decided yet" is a fact of the schedule, not a race with a busy machine.
  let clock = Date.parse(NOW);
  const pending: { at: number; fn: () => void }[] = [];
  const timers = {
    setTimeout: (fn: () => void, ms: number) => {
      const entry = { at: clock + ms, fn };
      pending.push(entry);
      return entry;
    },
    clearTimeout: (handle: unknown) => {
      const i = pending.indexOf(handle as (typeof pending)[number]);
      if (i >= 0) pending.splice(i, 1);
    },
  };
  const advance = (ms: number) => {
    clock += ms;
    for (const due of pending.filter((p) => p.at <= clock)) {
      pending.splice(pending.indexOf(due), 1);
      due.fn();
    }
  };
  const now = () => new Date(clock);
  const published: OutgoingMessage[] = [];
  const desired = new DesiredPublisher({ store, topics, signer: signerFor(generateKey(), { fast: true }), now });
  const rollouts = new RolloutService({
    store,
    desired,
    topics,
    now,
    decideEveryMs: 200,
    timers,
    publish: async (messages) => {
      published.push(...messages);
    },
    ...extra,
  });
  return { store, rollouts, transactions, published, advance, pending };
}

const report = (state: string, rolloutId: string) =>
  ({ models: { det: { state, version: '2.0.0', rolloutId, error: null } } }) as unknown as Reported;
/** A rollout of `det` 2.0.0 over every device of the fixture. */
function createOnAll(rollouts: RolloutService, id: string, waves: string) {
  return rollouts.create(
    { id, model: 'det', version: '2.0.0', target: { devices: DEVICES }, strategy: { waves: parseWaves(waves) } },
    'admin',
  );
}

const turns = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

t.test('device-only decisions are written behind; a wave, an outcome, an operator action durably', async (t) => {
  const { rollouts, transactions, advance } = setup(t);
  createOnAll(rollouts, 'r1', '25,100');
  t.same(transactions, ['durable'], 'create (wave 1 assigned) is durable');
  const [canary] = rollouts.status('r1').devices.filter((d) => d.state === 'assigned');
  const id = canary?.id as string;

  transactions.length = 0;
  rollouts.onReport(id, report('downloading', 'r1'));
  await turns();
  t.same(transactions, [], 'create() was a flush: the next waits the interval');
  advance(200);
  t.same(transactions, ['write-behind'], 'a progress report moves a device row only: no fsync of its own');

  transactions.length = 0;
  rollouts.onReport(id, report('healthy', 'r1'));
  rollouts.flush();
  t.same(transactions, ['durable'], 'an outcome (audit row, the next wave assigned) is durable');
  t.equal(rollouts.status('r1').summary.currentWave, 2, 'wave 2 (numbered from 1) started');

  transactions.length = 0;
  rollouts.act('r1', { type: 'halt', actor: 'admin', reason: 'test' } as never);
  t.same(transactions, ['durable'], 'an operator action is durable');
});

t.test('under load device events are decided at most once per interval, in one batch', async (t) => {
  const { rollouts, transactions, advance } = setup(t);
  createOnAll(rollouts, 'r2', '100');
  advance(300); // quiet for longer than the interval
  transactions.length = 0;
  rollouts.onReport('d-1', report('downloading', 'r2'));
  await turns();
  t.equal(transactions.length, 1, 'quiet: decided on the next turn');
  for (const id of ['d-2', 'd-3', 'd-4']) rollouts.onReport(id, report('downloading', 'r2'));
  await turns();
  t.equal(transactions.length, 1, 'within the interval: waiting');
  advance(199);
  t.equal(transactions.length, 1, 'still within the interval');
  advance(1);
  t.equal(transactions.length, 2, 'then the three reports in one transaction');
  t.same(
    rollouts
      .status('r2')
      .devices.map((d) => d.state)
      .sort(),
    ['downloading', 'downloading', 'downloading', 'downloading'],
  );
});

t.test('a failure is decided on the next turn, without waiting for the batch interval', async (t) => {
  const { rollouts, transactions, pending } = setup(t);
  createOnAll(rollouts, 'r3', '100');
  transactions.length = 0;
  // create() was a flush a moment ago: a progress report waits for the interval (200 ms here) ...
  rollouts.onReport('d-1', report('downloading', 'r3'));
  await turns();
  t.equal(transactions.length, 0, 'progress: waiting');
  t.equal(pending.length, 1, 'for the interval');
  // ... a failure does not, and takes the waiting report with it.
  rollouts.onReport('d-2', {
    models: {
      det: { state: 'rolled_back', version: '2.0.0', rolloutId: 'r3', error: { code: 'E_PROBE_FAILED', message: 'x' } },
    },
  } as unknown as Reported);
  await turns();
  t.equal(transactions.length, 1, 'decided on the next turn, one batch');
  t.equal(pending.length, 0, 'the interval timer was dropped: the failure took the waiting report');
  const status = rollouts.status('r3');
  t.equal(status.summary.status, 'halted', 'the halt rule (max failure rate 0) tripped at once');
  t.same(
    status.devices.filter((d) => d.id === 'd-1' || d.id === 'd-2').map((d) => d.state),
    ['downloading', 'rolled_back'],
  );
});

t.test("rollout.status reads presence and the newest reports from the shell's memory when it has them", async (t) => {
  const reads: string[] = [];
  const { rollouts, store } = setup(t, {
    // The shell's presence recorder: only d-1 is connected now (the store still says all four).
    isOnline: (id) => id === 'd-1',
    // The shell's newest reports: d-2 reported since its last write to the store.
    lastModels: (id) => {
      reads.push(id);
      return id === 'd-2' ? report('downloading', 'r-mem').models : store.getDevice(id)?.lastReport?.models;
    },
  });
  createOnAll(rollouts, 'r-mem', '100');
  reads.length = 0; // create read them too (the revert targets)
  const status = rollouts.status('r-mem');
  t.same(
    status.devices.map((d) => [d.id, d.online]),
    DEVICES.map((id) => [id, id === 'd-1']),
    'online: what the broker knows now, not the store',
  );
  t.match(status.devices.find((d) => d.id === 'd-2')?.now, { state: 'downloading' }, 'the report from memory');
  t.same([...reads].sort(), [...DEVICES].sort(), 'one lookup per device, through the shell');
});

t.test('rollout.status lists a page of the devices: the same order on every call, the total beside it', async (t) => {
  const { rollouts, store } = setup(t);
  createOnAll(rollouts, 'r-paged', '50,100');
  // This id's split puts d-3 and d-4 in the first wave: not the target's order.
  const all = rollouts.status('r-paged');
  t.equal(all.devicesTotal, DEVICES.length);
  t.equal(all.devices.length, DEVICES.length, 'no page: every device');
  const ids = all.devices.map((d) => d.id);
  const pages: string[] = [];
  for (let offset = 0; offset < DEVICES.length; offset += 3) {
    const page = rollouts.status('r-paged', { offset, limit: 3 });
    t.equal(page.devicesTotal, DEVICES.length, 'the total with every page');
    pages.push(...page.devices.map((d) => d.id));
  }
  t.same(pages, ids, 'pages of 3 cover every device once, in the order of the whole list');
  t.same(
    ids,
    store.rolloutDevices('r-paged').map((d) => d.deviceId),
    "the store's order (wave, then id): the same once it is read back after a restart or its end",
  );
  t.same(
    rollouts.status('r-paged', { offset: 1 }).devices.map((d) => d.id),
    ids.slice(1),
    'an offset alone: the rest',
  );
  t.same(rollouts.status('r-paged', { offset: 10 }).devices, [], 'past the end: none');
  t.equal(rollouts.status('r-paged', { offset: 10 }).summary.id, 'r-paged', 'with the summary still');

  // Filtered by wave and state before the page is taken; the total counts what matched.
  const byWave = (w: number) => all.devices.filter((d) => d.wave === w).map((d) => d.id);
  t.ok(byWave(1).length > 0 && byWave(2).length > 0, 'both waves have devices');
  const second = rollouts.status('r-paged', { wave: 2 });
  t.same(
    second.devices.map((d) => d.id),
    byWave(2),
    'wave 2 only, in order',
  );
  t.equal(second.devicesTotal, byWave(2).length);
  const paged = rollouts.status('r-paged', { wave: 2, offset: 1, limit: 1 });
  t.same(
    paged.devices.map((d) => d.id),
    byWave(2).slice(1, 2),
    'a page of the filtered list',
  );
  t.equal(paged.devicesTotal, byWave(2).length, 'the total of the filter, not of the page');
  const states = [...new Set(all.devices.map((d) => d.state))];
  for (const state of states) {
    const inState = rollouts.status('r-paged', { state });
    t.same(
      inState.devices.map((d) => d.id),
      all.devices.filter((d) => d.state === state).map((d) => d.id),
      `state ${state}`,
    );
  }
  const firstAssigned = all.devices.filter((d) => d.wave === 1 && d.state === states[0]).length;
  t.equal(rollouts.status('r-paged', { wave: 1, state: states[0] }).devicesTotal, firstAssigned, 'both filters');
  t.match(rollouts.status('r-paged', { wave: 9 }), { devices: [], devicesTotal: 0 }, 'a wave it does not have: none');
  // order 'attention': the ranking of attention-order.ts, then id; paged after.
  const ranked = rollouts.status('r-paged', { order: 'attention' }).devices;
  t.same(
    ranked.map((d) => d.id),
    [...all.devices]
      .sort((a, b) => attentionRank(a.state) - attentionRank(b.state) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((d) => d.id),
  );
  t.same(
    rollouts.status('r-paged', { order: 'attention', offset: 1, limit: 2 }).devices.map((d) => d.id),
    ranked.slice(1, 3).map((d) => d.id),
  );
  t.same([attentionRank('failed'), attentionRank('rolled_back'), attentionRank('downloading')], [0, 0, 1]);
  t.same([attentionRank('assigned'), attentionRank('healthy')], [1, 2]);
});

t.test("a finished rollout's late reports are decided on its rows in memory while they keep coming", async (t) => {
  const { rollouts, store, advance } = setup(t);
  // Reads of a rollout's rows back from the store, counted on the real store.
  const reads: string[] = [];
  const rolloutDevices = store.rolloutDevices.bind(store);
  store.rolloutDevices = (id: string) => {
    reads.push(id);
    return rolloutDevices(id);
  };
  createOnAll(rollouts, 'r-late', '100');
  rollouts.onReport('d-1', report('healthy', 'r-late'));
  rollouts.flush();
  rollouts.act('r-late', { type: 'abort', actor: 'admin', policy: 'keep' } as never);
  t.equal(rollouts.status('r-late').summary.status, 'aborted');
  t.equal(rollouts.lingeringRollout, 'r-late', 'aborted with three devices at work: kept');
  reads.length = 0; // status read the finished rollout back (an operator's read, not a round)

  // Its devices still at work report after the abort, over two rounds.
  rollouts.onReport('d-2', report('healthy', 'r-late'));
  advance(200);
  await turns();
  rollouts.onReport('d-3', report('rolled_back', 'r-late'));
  advance(200);
  await turns();
  t.same(reads, [], 'decided on the rows kept in memory since the abort: none read back');
  const late = store.rolloutDevices('r-late').filter((d) => d.deviceId === 'd-2' || d.deviceId === 'd-3');
  t.same(
    late.map((d) => d.state),
    ['healthy', 'rolled_back'],
    'both late outcomes written',
  );
  reads.length = 0;

  // The next rollout's creation lets it go; a later late report reads it back once.
  createOnAll(rollouts, 'r-after', '100');
  rollouts.onReport('d-1', report('downloading', 'r-after'));
  advance(200);
  await turns();
  t.same(reads, [], 'the other rollout is live');
  rollouts.onReport('d-4', report('healthy', 'r-late'));
  advance(200);
  await turns();
  t.same(reads, ['r-late'], 'read back once');
  t.equal(store.rolloutDevices('r-late').find((d) => d.deviceId === 'd-4')?.state, 'healthy');
  t.equal(rollouts.lingeringRollout, null, 'its last device at work reported: nothing left to keep it for');

  // A rollout that ends with every device done is not kept after its end.
  rollouts.act('r-after', { type: 'abort', actor: 'admin', policy: 'keep' } as never);
  t.equal(rollouts.lingeringRollout, 'r-after', 'aborted with devices at work');
  createOnAll(rollouts, 'r-done', '100');
  t.equal(rollouts.lingeringRollout, null, 'a new rollout lets it go');
  for (const id of DEVICES) rollouts.onReport(id, report('healthy', 'r-done'));
  rollouts.flush();
  t.equal(rollouts.status('r-done').summary.status, 'completed');
  t.equal(rollouts.lingeringRollout, null, 'completed, every device done: not kept');
});
