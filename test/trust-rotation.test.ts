import { promises as fs } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { initialState } from '../agent/core/agent-state.js';
import { type AgentEvent, step } from '../agent/core/machine.js';
import { TrustStore } from '../agent/state/trust-store.js';
import { canonicalJson } from '../shared/canonical-json.js';
import { signDesired } from '../shared/desired.js';
import { type Envelope, signManifest } from '../shared/envelope.js';
import { isOtaError } from '../shared/errors.js';
import { type PrivateKey, publicKeyToJson, readPrivateKeyFile } from '../shared/keys.js';
import { DESIRED_TYPE } from '../shared/messages.js';
import { signerFor, signText } from '../shared/signatures.js';
import {
  applyTrustChain,
  checkTrustFresh,
  cosignTrust,
  type HeldTrust,
  signTrust,
  TRUST_TYPE,
  type TrustDocument,
  type TrustEnvelope,
  verifyTrustSelfSigned,
  verifyTrustUpdate,
} from '../shared/trust.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { MACHINE_NOW, machineContext } from './helpers/machine-context.js';
import { keys, manifestFor } from './helpers/releases.js';
import { TestSigners } from './helpers/signing.js';

// The pure trust verifier (shared/trust.ts), rule by rule (TUF 5.3.4, 5.3.5, 5.3.10).

const [a, b, c, d, coordinator] = keys(5) as [PrivateKey, PrivateKey, PrivateKey, PrivateKey, PrivateKey];
const CREATED = '2026-06-01T00:00:00.000Z';

function held(version: number, ks: PrivateKey[], threshold = 1, expiresAt: string | null = null): HeldTrust {
  return { version, keys: ks, threshold, expiresAt };
}

function doc(version: number, ks: PrivateKey[], threshold = 1, extra: Partial<TrustDocument> = {}): TrustDocument {
  return {
    type: TRUST_TYPE,
    version,
    keys: ks.map((k) => ({ keyId: k.keyId, publicKey: publicKeyToJson(k).publicKey })),
    threshold,
    createdAt: CREATED,
    ...extra,
  };
}

function sign(document: TrustDocument, signers: PrivateKey[]): TrustEnvelope {
  return signTrust(
    document,
    signers.map((k) => signerFor(k)),
  );
}

/** Signs any text, skipping the signer's checks (what someone holding a key could do). */
function signRaw(value: unknown, signers: PrivateKey[]): TrustEnvelope {
  const text = canonicalJson(value);
  return {
    document: text,
    signatures: signText(
      text,
      signers.map((k) => signerFor(k)),
    ),
  };
}

function rejects(t: Test, fn: () => unknown, code: string, message?: RegExp) {
  try {
    fn();
    t.fail(`expected ${code}, nothing was thrown`);
  } catch (err) {
    t.ok(isOtaError(err), 'an OtaError');
    t.equal((err as { code: string }).code, code, `${code}: ${(err as Error).message}`);
    if (message) t.match((err as Error).message, message);
  }
}

t.test('a rotation signed by the held key and by its own new key is accepted', async (t) => {
  const accepted = verifyTrustUpdate(sign(doc(1, [b]), [a, b]), held(0, [a]));
  t.equal(accepted.held.version, 1);
  t.same(
    accepted.held.keys.map((k) => k.keyId),
    [b.keyId],
  );
  t.equal(accepted.held.threshold, 1);
  // It survives a JSON round trip (the desired state, trust.json).
  const again = verifyTrustUpdate(JSON.parse(JSON.stringify(accepted.envelope)), held(0, [a]));
  t.same(again.document, accepted.document);
});

t.test('the threshold of the keys held now must sign: the coordinator key alone is refused', async (t) => {
  // The coordinator's key signs desired states; it is not a release key and cannot rotate trust,
  // not even with a document that names itself and that it signed.
  rejects(
    t,
    () => verifyTrustUpdate(sign(doc(1, [coordinator]), [coordinator]), held(0, [a])),
    'E_TRUST_THRESHOLD',
    /not signed by 1 of the 1 key\(s\) trusted now/,
  );
  rejects(t, () => verifyTrustUpdate(sign(doc(1, [b]), [b]), held(0, [a])), 'E_TRUST_THRESHOLD');
});

t.test('one key of a 2-of-3 set is not enough; two are', async (t) => {
  const twoOfThree = held(1, [b, c, d], 2);
  rejects(
    t,
    () => verifyTrustUpdate(sign(doc(2, [b, c, d], 2), [b]), twoOfThree),
    'E_TRUST_THRESHOLD',
    /1 valid signature\(s\) from trusted keys, 2 required/,
  );
  // The same key twice still counts once.
  const twice = sign(doc(2, [b, c, d], 2), [b]);
  const doubled = { ...twice, signatures: [...twice.signatures, ...twice.signatures] };
  rejects(t, () => verifyTrustUpdate(doubled, twoOfThree), 'E_TRUST_THRESHOLD');
  t.equal(verifyTrustUpdate(sign(doc(2, [b, c, d], 2), [b, d]), twoOfThree).held.version, 2);
});

t.test('the new keys must sign too (TUF 5.3.4), by their own threshold', async (t) => {
  rejects(t, () => verifyTrustUpdate(sign(doc(1, [b]), [a]), held(0, [a])), 'E_TRUST_THRESHOLD', /its own 1 new key/);
  rejects(
    t,
    () => verifyTrustUpdate(sign(doc(1, [b, c, d], 2), [a, b]), held(0, [a])),
    'E_TRUST_THRESHOLD',
    /its own 3 new key/,
  );
  // A key in both sets counts for both.
  t.equal(verifyTrustUpdate(sign(doc(1, [a, b], 1), [a]), held(0, [a])).held.version, 1);
});

t.test('the version only goes up: a replay or an older document is refused', async (t) => {
  const v2 = sign(doc(2, [a]), [a]);
  rejects(t, () => verifyTrustUpdate(v2, held(2, [a])), 'E_TRUST_VERSION', /not above the version held, 2/);
  rejects(t, () => verifyTrustUpdate(v2, held(3, [a])), 'E_TRUST_VERSION');
  t.equal(verifyTrustUpdate(v2, held(1, [a])).held.version, 2, 'above: accepted (not necessarily N+1)');
});

t.test('unknown fields, bad keys, a key twice and an impossible threshold are E_TRUST_DOCUMENT', async (t) => {
  const base = doc(1, [b]);
  rejects(t, () => verifyTrustUpdate(signRaw({ ...base, extra: 1 }, [a, b]), held(0, [a])), 'E_TRUST_DOCUMENT');
  rejects(
    t,
    () => verifyTrustUpdate(signRaw({ ...base, type: 'ota.model/v1' }, [a, b]), held(0, [a])),
    'E_TRUST_DOCUMENT',
  );
  const wrongId = { ...base, keys: [{ keyId: c.keyId, publicKey: publicKeyToJson(b).publicKey }] };
  rejects(t, () => verifyTrustUpdate(signRaw(wrongId, [a, b]), held(0, [a])), 'E_TRUST_DOCUMENT', /does not match/);
  const twice = { ...base, keys: [...base.keys, ...base.keys] };
  rejects(t, () => verifyTrustUpdate(signRaw(twice, [a, b]), held(0, [a])), 'E_TRUST_DOCUMENT', /twice/);
  rejects(
    t,
    () => verifyTrustUpdate(signRaw({ ...base, threshold: 2 }, [a, b]), held(0, [a])),
    'E_TRUST_DOCUMENT',
    /threshold 2 is more than its 1 key/,
  );
  rejects(
    t,
    () => verifyTrustUpdate(signRaw({ ...base, expiresAt: '2026-05-01T00:00:00.000Z' }, [a, b]), held(0, [a])),
    'E_TRUST_DOCUMENT',
  );
  rejects(t, () => verifyTrustUpdate({ document: 'x', signatures: [] }, held(0, [a])), 'E_TRUST_DOCUMENT');
  rejects(
    t,
    () => verifyTrustUpdate({ ...sign(base, [a, b]), extra: true }, held(0, [a])),
    'E_TRUST_DOCUMENT',
    /envelope/,
  );
  // The signer refuses to sign one in the first place.
  rejects(t, () => sign({ ...base, threshold: 2 }, [a]), 'E_TRUST_DOCUMENT');
});

t.test('tampered text or signature keeps its signature code', async (t) => {
  const good = sign(doc(1, [b]), [a, b]);
  const tampered = { ...good, document: good.document.replace('"threshold":1', '"threshold":1 ') };
  rejects(t, () => verifyTrustUpdate(tampered, held(0, [a])), 'E_SIGNATURE');
});

t.test(
  'expiry: an expired held trust verifies no release (TUF 5.3.10); an intermediate one still rotates (TUF 5.3.6)',
  async (t) => {
    const expiring = sign(doc(1, [b], 1, { expiresAt: '2026-07-01T00:00:00.000Z' }), [a, b]);
    const v1 = verifyTrustUpdate(expiring, held(0, [a]));
    t.doesNotThrow(() => checkTrustFresh(v1.held, new Date('2026-06-30T00:00:00Z')), 'before its expiry');
    rejects(t, () => checkTrustFresh(v1.held, new Date('2026-07-01T00:00:00Z')), 'E_TRUST_EXPIRED', /expired at/);
    // Expired or not, it verifies its successor.
    const v2 = verifyTrustUpdate(sign(doc(2, [c]), [b, c]), v1.held);
    t.equal(v2.held.version, 2);
    t.doesNotThrow(() => checkTrustFresh(v2.held, new Date('2030-01-01T00:00:00Z')), 'no expiry: never expires');
  },
);

t.test('a chain is walked in order from the held version, and stops at the first refusal', async (t) => {
  const v1 = sign(doc(1, [b]), [a, b]);
  const v2 = sign(doc(2, [b, c, d], 2), [b, c]);
  const v3 = sign(doc(3, [c, d], 2), [c, d]);
  const all = applyTrustChain([v1, v2, v3], held(0, [a]));
  t.same(
    all.accepted.map((x) => x.held.version),
    [1, 2, 3],
  );
  t.equal(all.held.version, 3);
  t.equal(all.rejected, null);

  // A device at version 2 skips what it has.
  const from2 = applyTrustChain([v1, v2, v3], all.accepted[1]?.held as HeldTrust);
  t.same(
    from2.accepted.map((x) => x.held.version),
    [3],
  );

  // A forged v2 (one key of the 2-of-3 it names; and the coordinator's key) stops the walk there.
  const forged = sign(doc(2, [coordinator]), [coordinator]);
  const stopped = applyTrustChain([v1, forged, v3], held(0, [a]));
  t.same(
    stopped.accepted.map((x) => x.held.version),
    [1],
  );
  t.equal(stopped.held.version, 1, 'the trust stays at the last accepted document');
  t.equal(stopped.rejected?.version, 2);
  t.equal(stopped.rejected?.error.code, 'E_TRUST_THRESHOLD');

  const nothing = applyTrustChain([forged], held(0, [a]));
  t.equal(nothing.accepted.length, 0);
  t.equal(nothing.held.version, 0, 'unchanged');
});

t.test('co-signing adds signatures by other holders; a stored copy verifies against its own keys', async (t) => {
  const partial = sign(doc(2, [b, c, d], 2), [b]);
  rejects(t, () => verifyTrustUpdate(partial, held(1, [b])), 'E_TRUST_THRESHOLD', /its own 3 new key/);
  const full = cosignTrust(partial, [signerFor(c), signerFor(b)]);
  t.equal(full.signatures.length, 2, 'b is not added twice');
  t.equal(verifyTrustUpdate(full, held(1, [b])).held.version, 2);
  t.equal(verifyTrustSelfSigned(full).held.version, 2);
  rejects(t, () => verifyTrustSelfSigned(partial), 'E_TRUST_THRESHOLD');
});

// ---- the coordinator and otactl (a real coordinator in process, otactl as a process) ----

t.test('otactl key rotate / trust sign / trust publish / trust show against a real coordinator', async (t) => {
  const { admin, dataDir } = await startInProcessCoordinator(t);
  const work = path.join(dataDir, '..', 'work');
  await fs.mkdir(work);
  const at = (f: string) => path.join(work, f);
  const clean = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '' };
  const run = (args: string[]) => otactl(args, { cwd: work, env: { ...clean, OTA_DATA: dataDir } });
  const expect = async (args: string[], code: number, pattern?: RegExp) => {
    const r = await run(args);
    t.equal(r.code, code, `otactl ${args.join(' ')} exits ${code}`, { stderr: r.stderr });
    if (pattern) t.match(r.stderr, pattern);
    return r;
  };
  for (const k of ['a', 'b', 'c', 'd']) await expect(['keygen', '--out', at(`${k}.key`)], 0);
  await expect(['key', 'add', at('a.key.pub')], 0);

  // Offline: a version is needed; a threshold above the keys is refused.
  await expect(
    ['key', 'rotate', '--keys', at('b.key.pub'), '--sign-with', at('a.key'), '--out', at('t1.json')],
    2,
    /--version N/,
  );
  await expect(
    [
      'key',
      'rotate',
      '--keys',
      at('b.key.pub'),
      '--threshold',
      '2',
      '--sign-with',
      at('a.key'),
      '--version',
      '1',
      '--out',
      at('t1.json'),
    ],
    2,
    /--threshold 2 is more than the 1 key/,
  );
  // Signed by A alone: written, not publishable until B signs too (TUF 5.3.4).
  await expect(
    ['key', 'rotate', '--keys', at('b.key.pub'), '--sign-with', at('a.key'), '--version', '1', '--out', at('t1.json')],
    0,
    /not publishable yet/,
  );
  await expect(['trust', 'publish', at('t1.json')], 1, /E_TRUST_THRESHOLD: .*its own 1 new key/);
  await expect(['trust', 'sign', at('t1.json'), '--sign-with', at('b.key')], 0, /trust publish/);
  // Not the next version: refused, naming the one to publish.
  await expect(
    [
      'key',
      'rotate',
      '--keys',
      at('b.key.pub'),
      '--sign-with',
      at('a.key'),
      '--sign-with',
      at('b.key'),
      '--version',
      '2',
      '--out',
      at('t2.json'),
    ],
    0,
  );
  await expect(['trust', 'publish', at('t2.json')], 1, /E_TRUST_VERSION: .*publish version 1/);

  await expect(
    [
      'key',
      'rotate',
      '--keys',
      at('b.key.pub'),
      '--sign-with',
      at('a.key'),
      '--version',
      '1',
      '--out',
      at('x.json'),
      '--expires-in',
      '1d',
      '--expires-at',
      '2030-01-01T00:00:00Z',
    ],
    2,
    /not both/,
  );
  await expect(
    ['key', 'rotate', '--keys', at('b.key.pub'), '--sign-with', at('a.key'), '--version', '1'],
    2,
    /nothing to do/,
  );
  const before = await expect(['trust', 'show'], 0);
  t.match(before.stdout, /trust version +0 \(the keys added with `otactl key add`/);
  const published = await expect(['trust', 'publish', at('t1.json'), '--json'], 0);
  t.match(JSON.parse(published.stdout), { version: 1, threshold: 1, publishedBy: 'admin' });
  await expect(['trust', 'publish', at('t1.json')], 1, /E_TRUST_VERSION/);
  const shown = JSON.parse((await expect(['trust', 'show', '--json'], 0)).stdout);
  t.match((await expect(['trust', 'show'], 0)).stdout, /trust version +1\n.*\nthreshold +1\n/s);
  const b = JSON.parse(await fs.readFile(at('b.key.pub'), 'utf8')) as { keyId: string };
  t.match(shown, { version: 1, keys: [{ id: b.keyId, counted: true }], threshold: 1 });

  const a = JSON.parse(await fs.readFile(at('a.key.pub'), 'utf8')) as { keyId: string };
  t.match(
    await admin.call('key.ls'),
    [
      { id: a.keyId, revoked: false, status: 'not in trust version 1' },
      { id: b.keyId, revoked: false, status: 'trusted', name: 'trust v1' },
    ],
    'key ls says which keys count now',
  );
  // The coordinator now counts B alone: key add is refused, enrolment writes B and version 1.
  await expect(['key', 'add', at('c.key.pub')], 1, /E_CONFLICT: .*otactl key rotate/);
  await expect(['device', 'add', 'cam-1', '--agent-config', at('cam-1.json')], 0);
  const config = JSON.parse(await fs.readFile(at('cam-1.json'), 'utf8'));
  t.match(config, { trustedKeys: [{ keyId: b.keyId }], threshold: 1, trustVersion: 1 });
  t.equal(config.trustedKeys.length, 1);

  // --publish asks the coordinator for the next version.
  const two = await expect(
    [
      'key',
      'rotate',
      '--keys',
      `${at('b.key.pub')},${at('c.key.pub')},${at('d.key.pub')}`,
      '--threshold',
      '2',
      '--sign-with',
      at('b.key'),
      '--sign-with',
      at('c.key'),
      '--publish',
      '--json',
    ],
    0,
  );
  t.match(JSON.parse(two.stdout), { version: 2, published: { version: 2, threshold: 2 } });

  // An expired document is not published (no device could use it).
  const [bk, ck] = await Promise.all([readPrivateKeyFile(at('b.key')), readPrivateKeyFile(at('c.key'))]);
  const expired = sign(
    doc(3, [bk, ck], 1, { createdAt: '2020-01-01T00:00:00.000Z', expiresAt: '2020-02-01T00:00:00.000Z' }),
    [bk, ck],
  );
  await t.rejects(admin.call('trust.publish', { envelope: expired }), { code: 'E_TRUST_EXPIRED' });
  await t.rejects(admin.call('trust.publish', { envelope: { document: 1 } }), { code: 'E_TRUST_DOCUMENT' });
  const audit = await admin.call<{ action: string; details: { version?: number } }[]>('audit.ls', {});
  t.same(
    audit.filter((e) => e.action === 'trust.published').map((e) => e.details.version),
    [1, 2],
    'each publication is audited',
  );
});

t.test('trust.json: written atomically, read back checked against its own keys, a damaged one refused', async (t) => {
  const dir = t.testdir();
  const store = new TrustStore(dir);
  t.equal(await store.load(), null, "none yet: the config's keys");
  const envelope = sign(doc(1, [b]), [a, b]);
  await store.save(envelope);
  t.equal((await store.load())?.held.version, 1);
  await fs.writeFile(store.file, JSON.stringify({ ...envelope, signatures: sign(doc(1, [b]), [a]).signatures }));
  await t.rejects(store.load(), {
    code: 'E_CONFIG',
    message: /trust\.json is damaged .*not signed by 1 of its own keys/,
  });
  await fs.writeFile(store.file, '{');
  await t.rejects(store.load(), { code: 'E_CONFIG', message: /is damaged/ });
  await fs.rm(store.file);
  await fs.mkdir(store.file);
  await t.rejects(store.load(), { code: 'E_CONFIG', message: /cannot read it/ });
});

// ---- the agent's pure core (agent/core/machine.ts): trust from the desired state ----

t.test(
  'agent core: a rotation applies before the models it comes with; a refusal is reported; an expired trust refuses releases',
  async (t) => {
    const signers = new TestSigners();
    const ctx = machineContext(signers);
    const keyA = signers.releaseKey;
    let seq = 0;
    const message = (trust: TrustEnvelope[], envelope: Envelope): AgentEvent => ({
      type: 'desired_message',
      message: signDesired(
        {
          type: DESIRED_TYPE,
          deviceId: 'cam-1',
          seq: ++seq,
          issuedAt: MACHINE_NOW.toISOString(),
          models: { det: { envelope, rolloutId: null } },
          ...(trust.length > 0 ? { trust } : {}),
        },
        signerFor(signers.coordinatorKey, { fast: true }),
      ),
    });
    const release = (version: string, counter: number, by: PrivateKey[]) =>
      signManifest(
        manifestFor(new TextEncoder().encode(version), { model: 'det', version, counter }),
        by.map((k) => signerFor(k)),
      );
    const v1 = sign(doc(1, [b]), [keyA, b]);

    // Rotation A -> B and a release signed by B, in one desired state: installed with B.
    const first = step(initialState(), message([v1], release('2.0', 2, [b])), ctx);
    t.equal(first.state.trust?.version, 1);
    t.equal(first.state.models.det?.phase, 'downloading', 'the B-signed release is accepted');
    t.match(first.state.outbox.at(-1)?.trust, { version: 1, rejected: null });

    // A forged v2 (the coordinator's key) and a release signed by A alone: both refused.
    const forged = sign(doc(2, [signers.coordinatorKey]), [signers.coordinatorKey]);
    const second = step(first.state, message([v1, forged], release('3.0', 3, [keyA])), ctx);
    t.equal(second.state.trust?.version, 1, 'the trust is unchanged');
    t.match(second.state.trustRejected, { version: 2, error: { code: 'E_TRUST_THRESHOLD' } });
    t.match(second.state.models.det, { phase: 'failed', error: { code: 'E_UNKNOWN_KEY' } });
    t.match(second.state.outbox.at(-1)?.trust, { version: 1, rejected: { version: 2 } });

    // A legitimate v2 that has expired by now: accepted (TUF 5.3.6), then no release is (5.3.10).
    const expiring = sign(
      doc(2, [b], 1, { createdAt: '2026-10-01T00:00:00.000Z', expiresAt: '2026-11-01T00:00:00.000Z' }),
      [b],
    );
    const third = step(second.state, message([v1, expiring], release('4.0', 4, [b])), ctx);
    t.equal(third.state.trust?.version, 2);
    t.equal(third.state.trustRejected, null);
    t.match(third.state.models.det, {
      phase: 'failed',
      error: { code: 'E_TRUST_EXPIRED', message: /expired at 2026-11-01/ },
    });

    // A model running an A-signed release, healthy, stays healthy when the rotation to B arrives
    // with the same assignment: it is not verified again (only what is assigned next needs B).
    let running = step(initialState(), message([], release('1.0', 1, [keyA])), ctx).state;
    const target = running.models.det?.target;
    const gen = running.models.det?.generation as number;
    for (const event of [
      { type: 'download_ok', model: 'det', generation: gen },
      { type: 'hashed', model: 'det', generation: gen, size: target?.size, sha256: target?.sha256 },
      { type: 'applied', model: 'det', generation: gen },
      { type: 'probe_passed', model: 'det', generation: gen },
    ] as AgentEvent[]) {
      running = step(running, event, ctx).state;
    }
    t.equal(running.models.det?.phase, 'healthy', 'A-signed 1.0 installed');
    const rotated = step(running, message([v1], target?.envelope as Envelope), ctx).state;
    t.equal(rotated.trust?.version, 1, 'the rotation is taken');
    t.match(rotated.models.det, { phase: 'healthy', error: null }, 'the running release is not failed by it');
    const next = step(rotated, message([v1], release('5.0', 5, [keyA])), ctx).state;
    t.match(next.models.det, { phase: 'failed', error: { code: 'E_UNKNOWN_KEY' } }, 'a new A-signed one is refused');

    // A config written after the rotation (trustVersion 1, key B) skips the documents up to it.
    const provisioned = { ...ctx, releaseTrust: { keys: [b], threshold: 1 }, releaseTrustVersion: 1 };
    const fresh = step(initialState(), message([v1], release('2.0', 2, [b])), provisioned);
    t.equal(fresh.state.trust, null, 'nothing above version 1 to accept');
    t.equal(fresh.state.trustRejected, null);
    t.match(fresh.state.outbox.at(-1)?.trust, { version: 1 });
    t.equal(fresh.state.models.det?.phase, 'downloading');
  },
);
