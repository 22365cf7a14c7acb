import { mock } from 'node:test';
import t, { type Test } from 'tap';
import { PacedFlush } from '../coordinator/paced-flush.js';

// Group commit for the coordinator's batched writes: the next turn when quiet, at most one
// flush per interval under load. Time is the subject here, so the scheduler is a stand-in:
// node:test's mock timers (setTimeout, setImmediate) driven by tick(), and the clock passed to
// PacedFlush advances with them. Nothing depends on how busy the machine is.

/** Mock timers for one test; `tick(ms)` advances them and the clock together. */
function fakeTime(t: Test) {
  let now = 1_000_000;
  mock.timers.enable({ apis: ['setTimeout', 'setImmediate'] });
  t.teardown(() => mock.timers.reset());
  return {
    clock: () => now,
    /** Runs what is due within `ms` (0: the next turn's immediates). */
    tick(ms = 0) {
      now += ms;
      mock.timers.tick(ms);
    },
  };
}

t.test('quiet: a scheduled flush runs on the next turn of the event loop', async (t) => {
  const time = fakeTime(t);
  let runs = 0;
  const pacer = new PacedFlush(() => runs++, 10_000, time.clock);
  pacer.schedule();
  pacer.schedule(); // already scheduled: one flush
  t.equal(runs, 0, 'not synchronously');
  time.tick();
  t.equal(runs, 1, 'ran once on the next turn, without waiting for the interval');
});

t.test('under load: the next flush waits until the interval since the last one has passed', async (t) => {
  const time = fakeTime(t);
  const runs: number[] = [];
  const pacer = new PacedFlush(() => runs.push(time.clock()), 300, time.clock);
  pacer.schedule();
  time.tick();
  t.equal(runs.length, 1);
  time.tick(10);
  pacer.schedule(); // 10 ms after a flush
  time.tick();
  t.equal(runs.length, 1, 'not on the next turn: it waits for the interval');
  time.tick(289);
  t.equal(runs.length, 1, '1 ms before the interval has passed: still waiting');
  time.tick(1);
  t.equal(runs.length, 2, 'then it ran');
  t.equal((runs[1] as number) - (runs[0] as number), 300, 'spaced by exactly the interval');
});

t.test('run() flushes now and drops the scheduled one; runIfScheduled() only when one is due', async (t) => {
  const time = fakeTime(t);
  let runs = 0;
  const pacer = new PacedFlush(() => runs++, 50, time.clock);
  pacer.runIfScheduled();
  t.equal(runs, 0, 'nothing scheduled: nothing run');
  pacer.schedule();
  pacer.runIfScheduled();
  t.equal(runs, 1, 'scheduled: run at once');
  time.tick(80);
  t.equal(runs, 1, 'the scheduled flush was dropped, not run a second time');
  pacer.run();
  time.tick(10);
  pacer.schedule(); // within the interval: a timer
  pacer.cancel();
  time.tick(100);
  t.equal(runs, 2, 'cancelled');
  pacer.run();
  t.equal(runs, 3, 'run() always flushes');
});

t.test('urgent work runs on the next turn even within the interval', async (t) => {
  const time = fakeTime(t);
  let runs = 0;
  const pacer = new PacedFlush(() => runs++, 10_000, time.clock);
  pacer.run();
  pacer.schedule(); // within the interval: would wait 10 s
  time.tick();
  t.equal(runs, 1, 'waiting for the interval');
  pacer.schedule(true);
  time.tick();
  t.equal(runs, 2, 'the urgent schedule replaced the timer with the next turn');
  time.tick(10_000);
  t.equal(runs, 2, 'and the 10 s timer is gone');
});
