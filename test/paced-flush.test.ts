import t from 'tap';
import { PacedFlush } from '../coordinator/paced-flush.js';

// Group commit for the coordinator's batched writes: the next turn when quiet, at most one
// flush per interval under load. Real timers; the clock passed in is the real one.

const turn = () => new Promise<void>((r) => setImmediate(r));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

t.test('quiet: a scheduled flush runs on the next turn of the event loop', async (t) => {
  const runs: number[] = [];
  const pacer = new PacedFlush(() => runs.push(Date.now()), 10_000, Date.now);
  pacer.schedule();
  pacer.schedule(); // already scheduled: one flush
  t.same(runs, [], 'not synchronously');
  await turn();
  await turn();
  t.equal(runs.length, 1, 'ran once, without waiting for the interval');
});

t.test('under load: the next flush waits until the interval since the last one has passed', async (t) => {
  const runs: number[] = [];
  const pacer = new PacedFlush(
    () => runs.push(performance.now()),
    300,
    () => performance.now(),
  );
  pacer.schedule();
  await turn();
  await turn();
  t.equal(runs.length, 1);
  pacer.schedule(); // right after a flush
  await turn();
  await turn();
  t.equal(runs.length, 1, 'not on the next turns: it waits for the interval');
  await sleep(400);
  t.equal(runs.length, 2, 'then it ran');
  t.ok(
    (runs[1] as number) - (runs[0] as number) >= 299,
    `spaced by the interval (${((runs[1] as number) - (runs[0] as number)).toFixed(1)} ms)`,
  );
});

t.test('run() flushes now and drops the scheduled one; runIfScheduled() only when one is due', async (t) => {
  let runs = 0;
  const pacer = new PacedFlush(() => runs++, 50, Date.now);
  pacer.runIfScheduled();
  t.equal(runs, 0, 'nothing scheduled: nothing run');
  pacer.schedule();
  pacer.runIfScheduled();
  t.equal(runs, 1, 'scheduled: run at once');
  await sleep(80);
  t.equal(runs, 1, 'the scheduled flush was dropped, not run a second time');
  pacer.schedule(); // within the interval: a timer
  pacer.cancel();
  await sleep(80);
  t.equal(runs, 1, 'cancelled');
  pacer.run();
  t.equal(runs, 2, 'run() always flushes');
});

t.test('urgent work runs on the next turn even within the interval', async (t) => {
  let runs = 0;
  const pacer = new PacedFlush(() => runs++, 10_000, Date.now);
  pacer.run();
  pacer.schedule(); // within the interval: would wait 10 s
  await turn();
  t.equal(runs, 1, 'waiting for the interval');
  pacer.schedule(true);
  await turn();
  await turn();
  t.equal(runs, 2, 'the urgent schedule replaced the timer with the next turn');
  pacer.cancel();
});
