import { Writable } from 'node:stream';
import t from 'tap';
import { OrderedPublisher, type OutgoingPublish, type QueuedPublish } from '../coordinator/broker/ordered-publisher.js';
import { createLogger } from '../shared/logger.js';

// The coordinator's publish pipeline: concurrent across topics (a 9,000-device wave must not
// wait message by message), strictly ordered within a topic (a retained rollout summary must
// never be overwritten by an older one).

/** A transport whose publishes the test completes by hand, in any order. */
function manualTransport() {
  const started: { message: OutgoingPublish; settle: (err?: Error) => void }[] = [];
  const send = (message: OutgoingPublish) =>
    new Promise<void>((resolve, reject) => {
      started.push({ message, settle: (err) => (err ? reject(err) : resolve()) });
    });
  return { started, send };
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
const tick = () => new Promise((r) => setImmediate(r));

t.test('different topics go out at once; one topic waits for its previous message', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2000);
  const wave = Array.from({ length: 1000 }, (_, i) => msg(`desired/d${i}`, i));
  const done = publisher.publish([...wave, msg('rollout/r1', 1)]);
  const later = publisher.publish([msg('rollout/r1', 2), msg('rollout/r1', 3)]);
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

t.test('a deferred payload is made when its message takes a slot, not when handed over', async (t) => {
  const { started, send } = manualTransport();
  const { logger } = captureLogger();
  const publisher = new OrderedPublisher(send, logger, 2);
  const made: number[] = [];
  const deferred = (topic: string, n: number): QueuedPublish => ({
    topic,
    retain: true,
    payload: () => {
      made.push(n);
      return Buffer.from(String(n));
    },
  });
  const all = publisher.publish([deferred('a', 0), deferred('b', 1), deferred('c', 2), deferred('a', 3)]);
  t.same(made, [0, 1], 'only the two in the window were made');
  started[0]?.settle();
  await tick();
  t.same(made, [0, 1, 2], 'a freed slot made the next one in handover order');
  t.same(
    started.map((s) => String(s.message.payload)),
    ['0', '1', '2'],
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
  const all = publisher.publish([
    {
      topic: 'desired/d1',
      retain: true,
      payload: () => {
        throw new Error('rolloutId: must be 1-64 letters');
      },
    },
    msg('desired/d1', 2),
  ]);
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
    for (const s of started.slice(settled)) s.settle();
    settled = started.length;
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
