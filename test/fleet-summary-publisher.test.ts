import t from 'tap';
import type { OutgoingPublish } from '../coordinator/broker/ordered-publisher.js';
import { FLEET_SUMMARY_EVERY_MS, FleetSummaryPublisher } from '../coordinator/fleet/fleet-summary-publisher.js';
import { FleetTally } from '../coordinator/fleet/fleet-tally.js';
import type { PacedTimers } from '../coordinator/paced-flush.js';
import { type FleetSummary, FleetSummarySchema } from '../shared/messages.js';
import { decodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';

// The pacing of the retained fleet summary (coordinator/fleet/fleet-summary-publisher.ts), with
// the clock and PacedFlush's timers in the test's hands: a timer fires only when the test fires
// it, so what was not published is read from the list of what was, not from a wait.

const topics = createTopics();

function setup(everyMs?: number) {
  let nowMs = Date.parse('2026-12-06T10:00:00.000Z');
  const timers: { fn: () => void; ms: number; cleared: boolean }[] = [];
  const fake: PacedTimers = {
    setTimeout: (fn, ms) => {
      const timer = { fn, ms, cleared: false };
      timers.push(timer);
      return timer;
    },
    clearTimeout: (handle) => {
      (handle as { cleared: boolean }).cleared = true;
    },
  };
  const sent: OutgoingPublish[] = [];
  const tally = new FleetTally();
  const publisher = new FleetSummaryPublisher({
    tally,
    topics,
    publish: async (messages) => {
      sent.push(...messages);
    },
    now: () => new Date(nowMs),
    everyMs,
    timers: fake,
  });
  return {
    tally,
    publisher,
    sent,
    timers,
    advance: (ms: number) => {
      nowMs += ms;
    },
    summaries: () => sent.map((m) => decodePayload(FleetSummarySchema, m.payload, m.topic)),
    /** Lets the turn PacedFlush schedules a quiet flush on (setImmediate) run. */
    nextTurn: () => new Promise<void>((resolve) => setImmediate(resolve)),
  };
}

t.test('publishNow: the retained summary on ota/v1/fleet, changed or not', async (t) => {
  const s = setup();
  await s.publisher.publishNow();
  await s.publisher.publishNow();
  t.equal(s.sent.length, 2, 'both published: at start a page must get one even when nothing moves');
  t.same(
    s.sent.map((m) => [m.topic, m.retain]),
    [
      ['ota/v1/fleet', true],
      ['ota/v1/fleet', true],
    ],
  );
  t.same(s.summaries()[0], {
    devices: 0,
    online: 0,
    models: [],
    updatedAt: '2026-12-06T10:00:00.000Z',
  } satisfies FleetSummary);
});

t.test('a change is published on the next turn when quiet, then at most once per everyMs', async (t) => {
  const s = setup();
  s.tally.enrolled('d1');
  s.publisher.changed();
  t.equal(s.sent.length, 0, 'not synchronously');
  await s.nextTurn();
  t.equal(s.sent.length, 1, 'quiet: on the next turn');

  s.advance(10);
  s.tally.enrolled('d2');
  s.publisher.changed();
  s.tally.presence('d2', true);
  s.publisher.changed();
  await s.nextTurn();
  t.equal(s.sent.length, 1, '10 ms after a publish: it waits');
  t.equal(s.timers.length, 1, 'one timer for both changes');
  t.equal(s.timers[0]?.ms, FLEET_SUMMARY_EVERY_MS - 10, 'until 1 s after the last publish');
  s.advance(990);
  s.timers[0]?.fn();
  await s.nextTurn();
  t.equal(s.sent.length, 2, 'one publish for both changes');
  t.same(
    s.summaries().map((x) => [x.devices, x.online, x.updatedAt]),
    [
      [1, 0, '2026-12-06T10:00:00.000Z'],
      [2, 1, '2026-12-06T10:00:01.000Z'],
    ],
  );
});

t.test('nothing is published when nothing changed', async (t) => {
  const s = setup(50);
  await s.publisher.publishNow();
  s.advance(100);
  // A caller that reports a change the tally did not see (a presence repeated, say) sends nothing.
  s.tally.presence('nobody', true);
  s.publisher.changed();
  await s.nextTurn();
  t.equal(s.sent.length, 1, 'only the one of publishNow');
  s.advance(50);
  s.tally.enrolled('d');
  s.publisher.changed();
  await s.nextTurn();
  t.equal(s.sent.length, 2, 'a real change goes out');
});

t.test('stop drops a scheduled publish', async (t) => {
  const s = setup(500);
  s.tally.enrolled('d');
  s.publisher.changed();
  await s.nextTurn();
  t.equal(s.sent.length, 1);
  s.tally.enrolled('e');
  s.publisher.changed();
  t.equal(s.timers.length, 1);
  t.equal(s.timers[0]?.ms, 500, 'everyMs from the options');
  s.publisher.stop();
  t.equal(s.timers[0]?.cleared, true, 'the timer is cleared');
  await s.nextTurn();
  t.equal(s.sent.length, 1, 'nothing more was published');
  // The broker closing: its devices' disconnects still change the counts.
  s.tally.enrolled('f');
  s.publisher.changed();
  t.equal(s.timers.length, 1, 'no publish scheduled after stop');
  await s.nextTurn();
  t.equal(s.sent.length, 1, 'and none sent');
});
