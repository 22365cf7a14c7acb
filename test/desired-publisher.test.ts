import path from 'node:path';
import t, { type Test } from 'tap';
import { DesiredPublisher } from '../coordinator/desired/desired-publisher.js';
import { signEach } from '../coordinator/desired/sign-job.js';
import { openStore, type SqliteStore } from '../coordinator/store/sqlite-store.js';
import { decodeDesiredMessage, verifyDesired } from '../shared/desired.js';
import { generateKey } from '../shared/keys.js';
import { MAX_MODELS } from '../shared/messages.js';
import { signerFor, signText } from '../shared/signatures.js';
import { createTopics } from '../shared/topics.js';

// DesiredPublisher.prepare takes each device's seq inside the caller's transaction and leaves the
// signing to the moment the publisher takes a message (memory bounded by the publish window, not
// the wave): these tests take the payloads by hand, as OrderedPublisher does.

const key = generateKey();
const now = () => new Date('2026-12-07T00:00:00.000Z');

function setup(t: Test, ids: string[]) {
  const store = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => store.close());
  store.transaction(() => {
    for (const id of ids)
      store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: now().toISOString() });
  });
  const signer = signerFor(key, { fast: true });
  /** Sizes of the batches signed, in order. */
  const signed: number[] = [];
  const publisher = new DesiredPublisher({
    store,
    topics: createTopics(),
    signer,
    now,
    signMany: (texts) => {
      signed.push(texts.length);
      return signEach(texts, (m) => signer.sign(m));
    },
  });
  return { store, publisher, signed };
}

/** A release of `model` in the store, signed by a key of its own (what desired states carry). */
function addRelease(store: SqliteStore, model: string, version: string): void {
  const manifest = `{"model":"${model}"}`;
  store.addRelease({
    id: `${model}@${version}`,
    model,
    version,
    counter: 1,
    sha256: 'f'.repeat(64),
    size: 10,
    envelope: { manifest, signatures: signText(manifest, [signerFor(generateKey())]) },
    publishedBy: 'admin',
    publishedAt: now().toISOString(),
  });
}

t.test('a wave is signed 1,024 states at a time, when its first message is taken', async (t) => {
  const ids = Array.from({ length: 2100 }, (_, i) => `cam-${i}`);
  const { store, publisher, signed } = setup(t, ids);
  const messages = store.transaction(() => publisher.prepare(ids));
  t.equal(messages.length, 2100);
  t.same(signed, [], 'nothing signed while preparing, inside the transaction');
  t.equal(store.nextDesiredSeq('cam-0'), 2, 'the seq was taken (and committed) by prepare');

  const first = messages.payload(0);
  t.same(signed, [1024], 'taking the first message signed its batch only');
  for (let i = 1; i < 1024; i++) messages.payload(i);
  t.same(signed, [1024], 'the rest of the batch was already signed');
  const last = messages.payload(2099);
  t.same(signed, [1024, 52], 'the last batch signed when its message was taken, the middle one not yet');
  // Out of order, as a message handed over behind its topic's previous one is taken.
  for (let i = 2098; i >= 1024; i--) messages.payload(i);
  t.same(signed, [1024, 52, 1024], 'each batch signed once');

  const policy = { keys: [key], threshold: 1 };
  for (const [payload, id] of [
    [first, 'cam-0'],
    [last, 'cam-2099'],
  ] as const) {
    const state = verifyDesired(decodeDesiredMessage(payload), policy, { deviceId: id, lastSeq: 0 });
    t.equal(state.seq, 1, `${id}: verifies for its own device, seq 1`);
  }
  t.equal(messages.topic(2099), createTopics().desired('cam-2099'));
  t.same(messages.device(2099), { deviceId: 'cam-2099', seq: 1 });
  t.throws(() => messages.payload(0), /already taken/, 'a payload is handed out once');
  t.throws(() => messages.payload(1500), /already taken/, 'also from a batch not taken in full before');
  t.throws(() => messages.payload(2100), /desired state 2100 of 2100: no such message/);
  t.throws(() => messages.topic(-1), /no such message/);
});

t.test('a stored state the schema refuses fails its own message only', async (t) => {
  const ids = ['cam-1', 'cam-2', 'cam-3'];
  const { store, publisher, signed } = setup(t, ids);
  const at = now().toISOString();
  addRelease(store, 'det', '2.0.0');
  // A rollout id the command layer never makes (ids: no "/"), as a damaged row would hold.
  for (const [deviceId, rolloutId] of [
    ['cam-1', 'r1'],
    ['cam-2', 'r/1'],
    ['cam-3', null],
  ] as const) {
    store.setDesired({ deviceId, model: 'det', releaseId: 'det@2.0.0', rolloutId, source: 'rollout', updatedAt: at });
  }
  const messages = store.transaction(() => publisher.prepare(ids));
  t.equal(messages.length, 3);
  t.throws(() => messages.payload(1), /rolloutId/, 'the refused state throws why, naming the field');
  t.same(signed, [2], 'the two valid states were signed all the same');
  const policy = { keys: [key], threshold: 1 };
  for (const [i, id, rolloutId] of [
    [0, 'cam-1', 'r1'],
    [2, 'cam-3', null],
  ] as const) {
    const state = verifyDesired(decodeDesiredMessage(messages.payload(i)), policy, {
      deviceId: id,
      lastSeq: 0,
    });
    t.equal(state.models.det?.rolloutId, rolloutId, `${id}: signed, with its stored rollout`);
  }
});

t.test("a device past the schema's 32 models: the plan rolls back with a clear error, nothing issued", async (t) => {
  const { store, publisher, signed } = setup(t, ['cam-1']);
  const at = now().toISOString();
  for (let i = 0; i <= MAX_MODELS; i++) addRelease(store, `m${i}`, '1.0.0');
  const assign = (n: number) =>
    store.transaction(() => {
      for (let i = 0; i < n; i++) {
        store.setDesired({
          deviceId: 'cam-1',
          model: `m${i}`,
          releaseId: `m${i}@1.0.0`,
          rolloutId: null,
          source: 'channel',
          updatedAt: at,
        });
      }
      return publisher.prepare(['cam-1']);
    });
  t.throws(() => assign(MAX_MODELS + 1), { code: 'E_CONFLICT', message: /33 models, more than the 32/ });
  t.same(store.listDesiredFor('cam-1'), [], 'rolled back: no model assigned');
  t.equal(store.nextDesiredSeq('cam-1'), 1, 'no seq used up');
  const messages = assign(MAX_MODELS);
  t.equal(messages.length, 1, 'at the limit it is issued');
  t.ok(messages.payload(0).length > 0);
  t.same(signed, [1]);
});

t.test('a batch whose signing fails fails each of its messages, signing once', async (t) => {
  const store = openStore(path.join(t.testdir(), 'ota.db'));
  t.teardown(() => store.close());
  const ids = ['cam-1', 'cam-2', 'cam-3'];
  for (const id of ids)
    store.addDevice({ id, labels: {}, channel: 'stable', tokenHash: 'h', now: now().toISOString() });
  let calls = 0;
  const publisher = new DesiredPublisher({
    store,
    topics: createTopics(),
    signer: signerFor(key, { fast: true }),
    now,
    signMany: () => {
      calls++;
      throw new Error('signing worker gone');
    },
  });
  const messages = store.transaction(() => publisher.prepare(ids));
  for (let i = 0; i < messages.length; i++) t.throws(() => messages.payload(i), /signing worker gone/);
  t.equal(calls, 1, 'the batch was signed (and failed) once, not once per message');
});
