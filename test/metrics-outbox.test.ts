import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { encodedBytes } from '../agent/metrics/fit-budget.js';
import { combinedSpanMs, mergeOrder, mergeWindows } from '../agent/metrics/merge-windows.js';
import { MetricsOutbox } from '../agent/metrics/metrics-outbox.js';
import { WindowAggregator } from '../agent/metrics/window-aggregator.js';
import { type Metrics, MetricsSchema } from '../shared/messages.js';
import { MAX_SERIES, MESSAGE_BUDGET_BYTES } from '../shared/metrics/limits.js';
import { quantile } from '../shared/metrics/sketch.js';
import { prng } from './helpers/prng.js';

const T0 = Date.parse('2025-03-01T00:00:00Z');

/** A closed window `i` (60 s each) with `n` observations on `models` distinct series. */
function windowOf(i: number, n: number, models: string[], random: () => number, dropped = 0): Metrics {
  const agg = new WindowAggregator();
  for (let k = 0; k < n; k++)
    agg.add({
      model: models[k % models.length] as string,
      version: '1.0.0',
      latencyMs: 10 ** (random() * 4),
      confidence: random(),
      error: random() < 0.1,
      values: { v: random() * 100 },
    });
  agg.countDropped(dropped);
  return agg.close(new Date(T0 + i * 60_000), new Date(T0 + (i + 1) * 60_000), 60) as Metrics;
}

function counted(messages: Metrics[]): { observations: number; dropped: number; windows: number } {
  let observations = 0;
  let dropped = 0;
  let windows = 0;
  for (const m of messages) {
    observations += m.series.reduce((a, s) => a + s.count, 0);
    dropped += m.dropped?.observations ?? 0;
    windows += m.windowsMerged + (m.dropped?.windows ?? 0);
  }
  return { observations, dropped, windows };
}

async function all(outbox: MetricsOutbox, dir: string): Promise<Metrics[]> {
  const out: Metrics[] = [];
  for (const name of (await fs.readdir(dir)).filter((n) => n.endsWith('.json')).sort())
    out.push(MetricsSchema.parse(JSON.parse(await fs.readFile(path.join(dir, name), 'utf8')).message));
  t.equal(out.length, outbox.size);
  return out;
}

async function tmp(t: Test): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-outbox-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'metrics-outbox');
}

t.test('mergeWindows: the merge stands for both windows', async (t) => {
  const random = prng(1).next;
  const a = windowOf(0, 500, ['a', 'b'], random, 2);
  const b = windowOf(3, 700, ['b', 'c'], random, 1);
  const m = mergeWindows(a, b) as Metrics;
  t.ok(MetricsSchema.safeParse(m).success);
  t.match(m, {
    windowStart: new Date(T0).toISOString(),
    windowSeconds: 240,
    windowsMerged: 2,
    dropped: { observations: 3, windows: 0 },
  });
  t.equal(m.series.length, 3);
  const bb = m.series.find((s) => s.model === 'b');
  const ab = a.series.find((s) => s.model === 'b');
  const bbIn = b.series.find((s) => s.model === 'b');
  t.equal(bb?.count, (ab?.count ?? 0) + (bbIn?.count ?? 0));
  t.equal(bb?.errors, (ab?.errors ?? 0) + (bbIn?.errors ?? 0));
  t.same(
    bb?.confidence,
    ab?.confidence?.map((c, i) => c + (bbIn?.confidence?.[i] ?? 0)),
  );
  t.ok(quantile(bb?.latencyMs as never, 0.5) !== null);
  t.equal(combinedSpanMs(a, b), 240_000);
  t.same(
    mergeOrder([
      { startMs: 0, endMs: 60 },
      { startMs: 60, endMs: 120 },
      { startMs: 120, endMs: 150 },
    ]),
    [1, 0],
  );
  t.same(
    mergeOrder([
      { startMs: 0, endMs: 60 },
      { startMs: 60, endMs: 120 },
      { startMs: 120, endMs: 180 },
    ]),
    [0, 1],
    'ties: oldest first',
  );
  // Limits: too many series, too long a span, a confidence on one side only.
  const many = windowOf(0, 8, ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], random);
  const others = windowOf(1, 1, ['z'], random);
  t.equal(mergeWindows(many, others), null, `more than ${MAX_SERIES} series of a source`);
  t.equal(mergeWindows(a, { ...b, windowStart: new Date(T0 + 8 * 86_400_000).toISOString() }), null, 'over a week');
  const noConfidence = { ...b, series: b.series.map(({ confidence: _, values: __, ...s }) => s) };
  t.ok(MetricsSchema.safeParse(mergeWindows(a, noConfidence)).success);
  t.equal(mergeWindows(a, b, 100), null, 'a budget nothing fits');
});

t.test('persistence: close and reopen, nothing lost; stray tmp files removed; remove after ack', async (t) => {
  const dir = await tmp(t);
  const random = prng(2).next;
  const outbox = new MetricsOutbox({ dir, maxWindows: 10 });
  await outbox.init();
  t.equal(await outbox.oldest(), undefined);
  const added = [0, 1, 2].map((i) => windowOf(i, 100, ['a'], random));
  for (const m of added) await outbox.add(m);
  await fs.writeFile(path.join(dir, '.000000000009.json.abc.tmp'), 'half');
  await fs.writeFile(path.join(dir, 'README'), 'not ours');
  const reopened = new MetricsOutbox({ dir, maxWindows: 10 });
  await reopened.init();
  t.equal(reopened.size, 3);
  t.notOk(
    (await fs.readdir(dir)).some((n) => n.endsWith('.tmp')),
    'the stray tmp file is gone',
  );
  const first = await reopened.oldest();
  t.same(first?.message, MetricsSchema.parse(added[0]));
  await reopened.remove(first?.seq as number);
  await reopened.remove(12345); // unknown: nothing happens
  t.equal(reopened.size, 2);
  await reopened.add(windowOf(3, 1, ['a'], random));
  const again = new MetricsOutbox({ dir, maxWindows: 10 });
  await again.init();
  t.equal(again.size, 3, 'sequence numbers continue after a reopen');
  t.same((await again.oldest())?.message, MetricsSchema.parse(added[1]));
  t.throws(() => new MetricsOutbox({ dir, maxWindows: 1 }), /maxWindows must be an integer >= 2/);
});

t.test('a corrupt file is moved aside and counted as a dropped window', async (t) => {
  const dir = await tmp(t);
  const random = prng(3).next;
  const outbox = new MetricsOutbox({ dir, maxWindows: 10 });
  await outbox.init();
  for (let i = 0; i < 3; i++) await outbox.add(windowOf(i, 10, ['a'], random));
  await fs.writeFile(path.join(dir, '000000000002.json'), '{"firstSeq":2,"message":{"ts":"nope"}');
  for (let i = 0; i < 7; i++) await fs.writeFile(path.join(dir, `000000000000.json.${i}.corrupt`), 'old');
  const reopened = new MetricsOutbox({ dir, maxWindows: 10 });
  await reopened.init();
  t.equal(reopened.size, 2);
  const names = await fs.readdir(dir);
  t.ok(names.includes('000000000002.json.corrupt'), 'moved aside for a person to look at');
  t.equal(names.filter((n) => n.endsWith('.corrupt')).length, 5, 'only the newest corrupt files are kept');
  await reopened.add(windowOf(3, 10, ['a'], random));
  const messages = await all(reopened, dir);
  t.equal(messages.at(-1)?.dropped?.windows, 1, 'the next message written counts it');
});

t.test('a merge interrupted after writing the merged file: the covered file is removed on init', async (t) => {
  const dir = await tmp(t);
  const random = prng(4).next;
  const outbox = new MetricsOutbox({ dir, maxWindows: 10 });
  await outbox.init();
  const a = windowOf(0, 10, ['a'], random);
  const b = windowOf(1, 20, ['a'], random);
  await outbox.add(a);
  await outbox.add(b);
  // What shrink() writes before removing file 1: the merge under seq 2, covering 1..2.
  await fs.writeFile(path.join(dir, '000000000002.json'), JSON.stringify({ firstSeq: 1, message: mergeWindows(a, b) }));
  const reopened = new MetricsOutbox({ dir, maxWindows: 10 });
  await reopened.init();
  t.equal(reopened.size, 1);
  t.equal(counted(await all(reopened, dir)).observations, 30, 'window 0 is not there twice');
});

t.test('property: bounded, nothing lost uncounted, every message valid (seeded)', async (t) => {
  for (const seed of [11, 12, 13, 14]) {
    const dir = await tmp(t);
    const random = prng(seed);
    const maxWindows = 2 + Math.floor(random.next() * 5);
    const outbox = new MetricsOutbox({ dir, maxWindows });
    await outbox.init();
    const pool = ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9', 'm10', 'm11'];
    let observations = 0;
    let droppedIn = 0;
    let windows = 0;
    let sent = { observations: 0, dropped: 0, windows: 0 };
    let t0 = 0;
    for (let step = 0; step < 60; step++) {
      // Gaps in time (an agent that was off), 1-8 series from a pool of 12: some merges exceed the cap.
      t0 += 1 + Math.floor(random.next() * 3);
      const models = pool.filter(() => random.next() < 0.4).slice(0, MAX_SERIES);
      if (models.length === 0) models.push('m0');
      const n = 1 + Math.floor(random.next() * 200);
      const d = random.bool() ? Math.floor(random.next() * 5) : 0;
      await outbox.add(windowOf(t0, n, models, random.next, d));
      observations += n;
      droppedIn += d;
      windows++;
      t.ok(outbox.size <= maxWindows, `seed ${seed}: ${outbox.size} <= ${maxWindows}`);
      if (random.next() < 0.15) {
        // The sender: take the oldest, maybe add while it is in flight, then acknowledge it.
        const first = await outbox.oldest();
        if (first) {
          if (random.bool()) {
            t0 += 1;
            await outbox.add(windowOf(t0, 5, ['m0'], random.next));
            observations += 5;
            windows++;
          }
          const c = counted([first.message]);
          sent = {
            observations: sent.observations + c.observations,
            dropped: sent.dropped + c.dropped,
            windows: sent.windows + c.windows,
          };
          await outbox.remove(first.seq);
        }
      }
    }
    const messages = await all(outbox, dir);
    for (const m of messages) {
      t.ok(MetricsSchema.safeParse(m).success, `seed ${seed}: schema`);
      t.ok(encodedBytes(m) <= MESSAGE_BUDGET_BYTES, `seed ${seed}: budget`);
    }
    for (let i = 1; i < messages.length; i++)
      t.ok(
        Date.parse((messages[i] as Metrics).windowStart) >= Date.parse((messages[i - 1] as Metrics).windowStart),
        'in time order',
      );
    const c = counted(messages);
    t.equal(
      c.observations + c.dropped + sent.observations + sent.dropped,
      observations + droppedIn,
      `seed ${seed}: observations kept or counted`,
    );
    t.equal(c.windows + sent.windows, windows, `seed ${seed}: windows kept, merged or counted`);
    const reopened = new MetricsOutbox({ dir, maxWindows });
    await reopened.init();
    t.same(await all(reopened, dir), messages, `seed ${seed}: the same after a reopen`);
  }
});
