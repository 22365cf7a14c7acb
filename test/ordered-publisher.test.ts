import { Writable } from 'node:stream';
import t from 'tap';
import {
  type DeferredMessages,
  OrderedPublisher,
  type OutgoingPublish,
  WAVE_LANE_MIN,
} from '../coordinator/broker/ordered-publisher.js';
import { createLogger } from '../shared/logger.js';

// The coordinator's publish pipeline: concurrent across topics (a 9,000-device wave must not
// wait message by message), strictly ordered within a topic (a retained rollout summary must
// never be overwritten by an older one).

/** A transport whose publishes the test completes by hand, in any order. */
function manualTransport() {
  const started: { message: OutgoingPublish; settle: (err?: Error) => void }[] = [];
  const send = (message: OutgoingPublish, done: (err?: Error) => void) => {
    started.push({ message, settle: (err) => done(err) });
  };
  /** Settles what is in flight, one at a time with a turn between, until nothing starts any more: what went out, in order. */
  const drain = async (): Promise<OutgoingPublish[]> => {
    const out: OutgoingPublish[] = [];
    for (let s = started.shift(); s; s = started.shift()) {
      out.push(s.message);
      s.settle();
      await tick();
    }
    return out;
  };
  return { started, send, drain };
}

function captureLogger() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { lines, logger: createLogger('info', sink, 'ota-coordinator') };
}

const msg = (topic: string, n: number): OutgoingPublish => ({ topic, payload: Buffer.from(String(n)), retain: true });
const event = (topic: string, n: number): OutgoingPublish => ({ ...msg(topic, n), retain: false });
const tick = () => new Promise((r) => setImmediate(r));

t.test('different topics go out at once; one topic waits for its previous message', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2000);
  const wave = Array.from({ length: 1000 }, (_, i) => msg(`desired/d${i}`, i));
  const done = publisher.publish([...wave, msg('rollout/r1', 1)]);
  // Not retained (an event chain, as the audit topic): each waits, none is dropped.
  const later = publisher.publish([event('rollout/r1', 2), event('rollout/r1', 3)]);
  await tick();
  t.equal(started.length, 1001, 'every first message of a topic was handed over without waiting');
  t.same(
    started.filter((s) => s.message.topic === 'rollout/r1').map((s) => String(s.message.payload)),
    ['1'],
    'the newer summaries wait for the older one',
  );
  for (const s of started.splice(0, 1000)) s.settle();
  t.equal(
    await Promise.race([done.then(() => 'resolved'), tick().then(() => 'pending')]),
    'pending',
    'publish() resolves only when its last message settled',
  );
  const first = started.shift();
  first?.settle();
  await done;
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['2'],
    'message 2 starts only after 1 settled, and 3 only after 2',
  );
  started.shift()?.settle();
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['3'],
  );
  started.shift()?.settle();
  await later;
  t.equal(publisher.pendingTopics, 0, 'nothing left in flight');
});

for (const order of ['per-topic', 'connection'] as const) {
  t.test(`order '${order}': a retained message still waiting is superseded by a newer one of its topic`, async (t) => {
    const { started, send, drain } = manualTransport();
    const { logger } = captureLogger();
    const publisher = new OrderedPublisher(send, logger, 10, order);
    const first = publisher.publish([msg('rollout/r1', 1)]);
    await tick();
    t.same(
      started.map((s) => String(s.message.payload)),
      ['1'],
      'summary 1 in flight',
    );
    const second = publisher.publish([msg('rollout/r1', 2)]);
    const made: number[] = [];
    // A short deferred list (a single device's desired state) waiting behind its topic's previous one.
    const desiredBefore = publisher.publish([msg('desired/d1', 7)]);
    const desiredDeferred = publisher.publish([], deferredList(['desired/d1'], made));
    t.same(made, [], 'the deferred desired state waits behind the one in flight, unmade');
    const third = publisher.publish([msg('rollout/r1', 3), msg('rollout/r1', 4)]);
    const newestDesired = publisher.publish([msg('desired/d1', 8)]);
    const events = publisher.publish([event('audit', 1), event('audit', 2)]);
    t.equal(
      await Promise.race([second.then(() => 'settled'), tick().then(() => 'pending')]),
      'settled',
      'the superseded summary 2 is settled without being sent',
    );
    await desiredDeferred;
    t.same(made, [], 'the superseded deferred desired state was never made (never signed)');
    const out = (await drain()).map((m) => `${m.topic}=${m.payload}`);
    await Promise.all([first, third, desiredBefore, newestDesired, events]);
    t.same(
      out.filter((o) => o.startsWith('rollout/')),
      ['rollout/r1=1', 'rollout/r1=4'],
      'after the one in flight, only the newest summary went out',
    );
    t.same(
      out.filter((o) => o.startsWith('desired/')),
      ['desired/d1=7', 'desired/d1=8'],
      'the same for a device desired state',
    );
    t.same(
      out.filter((o) => o.startsWith('audit')),
      ['audit=1', 'audit=2'],
      'messages that are not retained are never dropped',
    );
    t.equal(publisher.pending, 0);
    t.equal(publisher.pendingTopics, 0);
  });
}

t.test('a failed publish is logged and does not hold back its topic', async (t) => {
  const { started, send } = manualTransport();
  const { lines, logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger);
  const all = publisher.publish([msg('audit', 1), msg('audit', 2)]);
  await tick();
  started.shift()?.settle(new Error('broker closing'));
  await tick();
  t.equal(started.length, 1, 'the next message of the topic was sent');
  started.shift()?.settle();
  await all;
  t.match(lines.join(''), /"topic":"audit".*broker closing.*publish failed/);
});

t.test('a transport that throws, or answers at once: settled on the next microtask, in order', async (t) => {
  const { lines, logger } = captureLogger();
  const events: string[] = [];
  const publisher = new OrderedPublisher(
    (m, done) => {
      events.push(`enter ${m.payload}`);
      try {
        if (m.topic.startsWith('broken')) throw new Error('client disconnecting');
        done();
        done(); // a second call is ignored
      } finally {
        events.push(`exit ${m.payload}`);
      }
    },
    logger,
    1,
  );
  await publisher.publish([msg('broken/1', 1), msg('broken/2', 2), msg('fine', 3), msg('fine', 4)]);
  t.same(
    events,
    ['enter 1', 'exit 1', 'enter 2', 'exit 2', 'enter 3', 'exit 3', 'enter 4', 'exit 4'],
    'each sent once, one slot at a time: the next one never starts inside the transport',
  );
  t.equal(lines.join('').match(/client disconnecting/g)?.length, 2, 'both failures logged');
  t.equal(publisher.pending, 0, 'the doubled callbacks freed one slot each');
});

t.test('a deferred message whose topic cannot be named fails alone', async (t) => {
  const { started, send, drain } = manualTransport();
  const { lines, logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 10_000, 'connection');
  const topics = Array.from({ length: WAVE_LANE_MIN }, (_, i) => `desired/d${i}`);
  const list = deferredList(topics);
  const bad = (i: number) => i === 10 || i === 300;
  const wave = publisher.publish([], {
    ...list,
    topic: (i) => {
      if (bad(i % WAVE_LANE_MIN)) throw new Error('device id cannot be a topic level');
      return list.topic(i);
    },
  });
  const short = publisher.publish([], {
    ...deferredList(['desired/x', 'desired/y']),
    topic: (i) => {
      if (i === 0) throw new Error('device id cannot be a topic level');
      return 'desired/y';
    },
  });
  await drain();
  await Promise.all([wave, short]);
  t.equal(lines.join('').match(/cannot be a topic level/g)?.length, 2, 'each logged');
  t.equal(publisher.pending, 0);
  t.equal(publisher.pendingTopics, 0, 'no topic left registered');
  const later = publisher.publish([msg('desired/d3', 9)]);
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['9'],
    'the topics of the wave are free again',
  );
  started.shift()?.settle();
  await later;
});

t.test('abandon (shutdown): what was not handed over is dropped and settled, what is in flight goes on', async (t) => {
  const { started, send } = manualTransport();
  const { lines, logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2, 'connection');
  const made: number[] = [];
  const wave = publisher.publish(
    [{ ...msg('audit', 1), retain: false }],
    deferredList(
      Array.from({ length: WAVE_LANE_MIN }, (_, i) => `desired/d${i}`),
      made,
    ),
  );
  const summaries = publisher.publish([msg('rollout/r1', 1), msg('rollout/r1', 2)]);
  await tick();
  t.equal(started.length, 2, 'two in flight');
  t.equal(publisher.abandon('the coordinator is stopping'), WAVE_LANE_MIN + 3 - 2);
  t.match(lines.join(''), /"messages":257.*"why":"the coordinator is stopping".*messages dropped, not published/);
  t.same(made, [0], 'the dropped ones were never made');
  for (const s of started.splice(0)) s.settle();
  await Promise.all([wave, summaries]);
  t.equal(publisher.pending, 0);
  t.equal(publisher.pendingTopics, 0, 'every topic free');
  t.equal(publisher.abandon('again'), 0, 'nothing left');
});

t.test('at most `window` publishes in flight; the rest start as slots free up, in order', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 3);
  const all = publisher.publish(Array.from({ length: 8 }, (_, i) => msg(`desired/d${i}`, i)));
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['0', '1', '2'],
    'three in flight',
  );
  started[1]?.settle();
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['0', '1', '2', '3'],
    'one settled, the next one started',
  );
  let settled = 2;
  while (settled < 8) {
    for (const s of started) s.settle();
    await tick();
    settled = started.length;
  }
  for (const s of started) s.settle();
  await all;
  t.same(
    started.map((s) => String(s.message.payload)),
    ['0', '1', '2', '3', '4', '5', '6', '7'],
    'every message went out, in handover order',
  );
});

/** A deferred list (as a wave's desired states): payloads made when asked, recorded in `made`. */
function deferredList(topics: readonly string[], made: number[] = [], refuse = new Set<number>()): DeferredMessages {
  return {
    length: topics.length,
    retain: true,
    topic: (i) => topics[i] as string,
    payload: (i) => {
      if (refuse.has(i)) throw new Error('rolloutId: must be 1-64 letters');
      made.push(i);
      return Buffer.from(`w${i}`);
    },
  };
}

t.test('a deferred payload is made when its message takes a slot, not when handed over', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2);
  const made: number[] = [];
  const all = publisher.publish([], deferredList(['a', 'b', 'c', 'a'], made));
  t.same(made, [0, 1], 'only the two in the window were made');
  started[0]?.settle();
  await tick();
  t.same(made, [0, 1, 2], 'a freed slot made the next one in handover order');
  t.same(
    started.map((s) => String(s.message.payload)),
    ['w0', 'w1', 'w2'],
    'what went out is what was made',
  );
  for (const s of started.splice(0)) s.settle();
  await tick();
  t.same(made, [0, 1, 2, 3], "topic a's second message after its first settled");
  started.shift()?.settle();
  await all;
  t.equal(publisher.pendingTopics, 0);
});

t.test('a deferred payload that throws is a failed publish, logged; its topic goes on', async (t) => {
  const { started, send } = manualTransport();
  const { lines, logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger);
  const all = publisher.publish([msg('desired/d1', 2)], deferredList(['desired/d1'], [], new Set([0])));
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['2'],
    'the next message of the topic was sent, nothing for the failed one',
  );
  started.shift()?.settle();
  await all;
  t.match(lines.join(''), /"topic":"desired\/d1".*rolloutId: must be.*publish failed/);
});

t.test('a wave waits in its own lane: what is handed over meanwhile takes every other slot', async (t) => {
  const { started, send, drain } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 4, 'connection');
  const made: number[] = [];
  const size = WAVE_LANE_MIN + 4;
  const wave = publisher.publish(
    [{ ...msg('audit', 0), retain: false }],
    deferredList(
      Array.from({ length: size }, (_, i) => `desired/d${i}`),
      made,
    ),
  );
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['0', 'w0', 'w1', 'w2'],
    "the wave's audit event does not wait behind the wave; then the wave, the other lane being empty",
  );
  t.equal(publisher.pending, size + 1);
  // The wave's devices answer: their audit events are handed over while the wave waits.
  const answers = publisher.publish(Array.from({ length: 3 }, (_, i) => ({ ...msg('audit', 10 + i), retain: false })));
  for (const s of started.splice(0)) s.settle();
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['10', 'w3', '11', 'w4'],
    'the lanes take turns: the answers do not wait behind the whole wave',
  );
  t.same(made, [0, 1, 2, 3, 4], 'the wave made only what took a slot');
  await drain();
  await Promise.all([wave, answers]);
  t.equal(made.length, size, 'every message of the wave went out once');
  t.same(
    made,
    [...made].sort((a, b) => a - b),
    'in handover order',
  );
  t.equal(publisher.pending, 0);
  t.equal(publisher.pendingTopics, 0);
});

t.test("a topic's order holds across the lanes", async (t) => {
  const { send, drain } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2, 'connection');
  const topics = Array.from({ length: WAVE_LANE_MIN }, (_, i) => `desired/d${i}`);
  // d5 already has a message in flight when the wave is handed over; d9's newer state comes after.
  const before = publisher.publish([msg('desired/d5', 1)]);
  await tick();
  const made: number[] = [];
  const wave = publisher.publish([], deferredList(topics, made));
  const newer = publisher.publish([msg('desired/d9', 2)]);
  t.equal(publisher.pendingTopics, WAVE_LANE_MIN, 'every topic of the wave is registered when it is handed over');
  const out = (await drain()).map((m) => `${m.topic}=${m.payload}`);
  await Promise.all([before, wave, newer]);
  const d5 = out.filter((o) => o.startsWith('desired/d5='));
  const d9 = out.filter((o) => o.startsWith('desired/d9='));
  t.same(d5, ['desired/d5=1', 'desired/d5=w5'], "the wave's message for d5 went out after the one in flight before it");
  t.same(d9, ['desired/d9=w9', 'desired/d9=2'], "d9's newer state went out after the wave's, not before");
  t.equal(out.length, WAVE_LANE_MIN + 2, 'nothing twice, nothing lost');
  t.equal(publisher.pending, 0);
  t.equal(publisher.pendingTopics, 0);
});

t.test("order 'per-topic' (the embedded broker): a wave is queued with the rest, in handover order", async (t) => {
  const { send, drain } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 1);
  const all = publisher.publish(
    [msg('audit', 1)],
    deferredList(Array.from({ length: WAVE_LANE_MIN }, (_, i) => `desired/w${i}`)),
  );
  const out = (await drain()).map((m) => String(m.payload));
  await all;
  t.equal(out.length, WAVE_LANE_MIN + 1);
  t.same(out.slice(0, 2), ['w0', 'w1'], 'the wave first');
  t.equal(out.at(-1), '1', 'its audit event after the whole wave');
});

t.test('a short deferred list is queued with the rest, not in the wave lane', async (t) => {
  const { started, send, drain } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 1, 'connection');
  const wave = publisher.publish([], deferredList(Array.from({ length: WAVE_LANE_MIN }, (_, i) => `desired/w${i}`)));
  const one = publisher.publish([], deferredList(['desired/single']));
  const out: string[] = [];
  for (let i = 0; i < 4; i++) {
    const s = started.shift();
    if (s) {
      out.push(String(s.message.payload));
      s.settle();
    }
    await tick();
  }
  t.same(out, ['w0', 'w0', 'w1', 'w2'], "a single device's state goes out second, not after the wave's 256");
  t.equal(started.length, 1);
  t.equal((await drain()).length, WAVE_LANE_MIN - 3, 'the rest of the wave');
  await Promise.all([wave, one]);
});

t.test(
  "order 'connection': a topic's messages go out at once, in handover order (the connection keeps it)",
  async (t) => {
    const { started, send } = manualTransport();
    const { logger } = captureLogger();
    const publisher = new OrderedPublisher(send, logger, 3, 'connection');
    const audit = Array.from({ length: 5 }, (_, i) => ({ ...msg('audit', i), retain: false }));
    const all = publisher.publish(audit);
    await tick();
    t.same(
      started.map((s) => String(s.message.payload)),
      ['0', '1', '2'],
      'three of one topic in flight at once: none waits for the one before',
    );
    t.equal(publisher.pending, 5);
    started[2]?.settle();
    await tick();
    t.same(
      started.map((s) => String(s.message.payload)),
      ['0', '1', '2', '3'],
      'a freed slot takes the next in handover order',
    );
    for (const s of started) s.settle();
    await tick();
    for (const s of started) s.settle();
    await all;
    t.same(
      started.map((s) => String(s.message.payload)),
      ['0', '1', '2', '3', '4'],
    );
    t.equal(publisher.pending, 0);
    t.equal(publisher.pendingTopics, 0);
  },
);

t.test("order 'connection': a retained topic still waits for its previous message", async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 10, 'connection');
  const all = publisher.publish([msg('rollout/r1', 1), msg('rollout/r1', 2), { ...msg('audit', 3), retain: false }]);
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['1', '3'],
    'the retained summary 2 waits for 1; the audit event does not',
  );
  started.shift()?.settle();
  await tick();
  t.same(
    started.map((s) => String(s.message.payload)),
    ['3', '2'],
  );
  for (const s of started) s.settle();
  await all;
  t.equal(publisher.pending, 0);
});

t.test('more than 1,024 messages taken: the queue drops what it handed out and keeps the order', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 600);
  const all = publisher.publish(Array.from({ length: 3000 }, (_, i) => msg(`desired/d${i}`, i)));
  let settled = 0;
  while (settled < started.length) {
    const now = started.slice(settled);
    settled += now.length;
    for (const s of now) s.settle(); // each settle starts the next message at once
    await tick();
  }
  await all;
  t.equal(started.length, 3000);
  t.ok(
    started.every((s, i) => String(s.message.payload) === String(i)),
    'every message went out once, in handover order, across the compactions',
  );
  t.equal(publisher.pending, 0);
});
