import t, { type Test } from 'tap';
import { cosignEnvelope, type Envelope, signManifest, verifyArtifact, verifyEnvelope } from '../shared/envelope.js';
import { isOtaError } from '../shared/errors.js';
import { signerFor, signText } from '../shared/signatures.js';
import { keys, manifestFor } from './helpers/releases.js';

const bytes = new TextEncoder().encode('model bytes');
const NOW = new Date('2026-06-01T00:00:00Z');
const [k1, k2, k3] = keys(3) as [ReturnType<typeof keys>[0], ReturnType<typeof keys>[0], ReturnType<typeof keys>[0]];
const trustOne = { keys: [k1], threshold: 1 };

function sign(overrides = {}, signers = [k1]): Envelope {
  return signManifest(
    manifestFor(bytes, overrides),
    signers.map((k) => signerFor(k)),
  );
}

/** Signs arbitrary text with k1, bypassing the signer's own checks (what an attacker holding a key could do). */
function signRaw(text: string): Envelope {
  return { manifest: text, signatures: signText(text, [signerFor(k1)]) };
}

/** Asserts `fn` throws an OtaError with `code`. */
function rejects(t: Test, fn: () => unknown, code: string, message?: RegExp) {
  try {
    fn();
    t.fail(`expected ${code}, nothing was thrown`);
  } catch (err) {
    t.ok(isOtaError(err), 'an OtaError');
    t.equal((err as { code: string }).code, code, `code ${code}: ${(err as Error).message}`);
    if (message) t.match((err as Error).message, message);
  }
}

t.test('sign then verify round trip, over the exact text', async (t) => {
  const envelope = sign();
  const { manifest, keyIds } = verifyEnvelope(envelope, trustOne, { now: NOW });
  t.equal(manifest.model, 'detector');
  t.same(keyIds, [k1.keyId]);
  t.doesNotThrow(() => verifyArtifact(manifest, { size: bytes.length, sha256: manifest.sha256 }));
  // The envelope survives a JSON round trip (it is what travels over MQTT and sits on disk).
  t.same(verifyEnvelope(JSON.parse(JSON.stringify(envelope)), trustOne, { now: NOW }).manifest, manifest);
});

t.test('a flipped bit anywhere in the manifest text is E_SIGNATURE', async (t) => {
  const envelope = sign();
  for (const index of [0, 10, Math.floor(envelope.manifest.length / 2), envelope.manifest.length - 2]) {
    const chars = [...envelope.manifest];
    chars[index] = String.fromCharCode((chars[index] as string).charCodeAt(0) ^ 1);
    rejects(t, () => verifyEnvelope({ ...envelope, manifest: chars.join('') }, trustOne, { now: NOW }), 'E_SIGNATURE');
  }
  // Re-serialising (whitespace only) also breaks it: the bytes are what is signed.
  const pretty = JSON.stringify(JSON.parse(envelope.manifest), null, 1);
  rejects(t, () => verifyEnvelope({ ...envelope, manifest: pretty }, trustOne, { now: NOW }), 'E_SIGNATURE');
});

t.test('a flipped bit in the signature is E_SIGNATURE', async (t) => {
  const envelope = sign();
  for (const byte of [0, 31, 40]) {
    const sig = Buffer.from(envelope.signatures[0]?.sig as string, 'base64');
    sig[byte] = (sig[byte] as number) ^ 0x01;
    const tampered = { ...envelope, signatures: [{ keyId: k1.keyId, sig: sig.toString('base64') }] };
    rejects(t, () => verifyEnvelope(tampered, trustOne, { now: NOW }), 'E_SIGNATURE');
  }
});

t.test('an S+L malleated signature is E_SIGNATURE_MALLEATED', async (t) => {
  const envelope = sign();
  const sig = Buffer.from(envelope.signatures[0]?.sig as string, 'base64');
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  let s = 0n;
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i] as number);
  let v = s + L;
  for (let i = 32; i < 64; i++) {
    sig[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  const tampered = { ...envelope, signatures: [{ keyId: k1.keyId, sig: sig.toString('base64') }] };
  rejects(t, () => verifyEnvelope(tampered, trustOne, { now: NOW }), 'E_SIGNATURE_MALLEATED');
});

t.test('a signature from an unknown key is E_UNKNOWN_KEY', async (t) => {
  rejects(t, () => verifyEnvelope(sign({}, [k2]), trustOne, { now: NOW }), 'E_UNKNOWN_KEY', new RegExp(k2.keyId));
  // A trusted key id on a signature made by another key is a bad signature, not an unknown key.
  const forged = sign({}, [k2]);
  const relabelled = { ...forged, signatures: [{ keyId: k1.keyId, sig: forged.signatures[0]?.sig as string }] };
  rejects(t, () => verifyEnvelope(relabelled, trustOne, { now: NOW }), 'E_SIGNATURE');
});

t.test('threshold: distinct trusted keys, each counted once', async (t) => {
  const trustTwo = { keys: [k1, k2, k3], threshold: 2 };
  rejects(
    t,
    () => verifyEnvelope(sign({}, [k1]), trustTwo, { now: NOW }),
    'E_THRESHOLD',
    /1 valid signature.*2 required/,
  );
  // The same key twice still counts once.
  const doubled = sign({}, [k1]);
  const twice = { ...doubled, signatures: [doubled.signatures[0], doubled.signatures[0]] as Envelope['signatures'] };
  rejects(t, () => verifyEnvelope(twice, trustTwo, { now: NOW }), 'E_THRESHOLD');
  t.same(verifyEnvelope(sign({}, [k1, k3]), trustTwo, { now: NOW }).keyIds.sort(), [k1.keyId, k3.keyId].sort());
  // Co-signing an existing envelope reaches the threshold; re-signing with a key already present adds nothing.
  const cosigned = cosignEnvelope(sign({}, [k1]), [signerFor(k1), signerFor(k2)]);
  t.equal(cosigned.signatures.length, 2);
  t.equal(verifyEnvelope(cosigned, trustTwo, { now: NOW }).keyIds.length, 2);
  // Threshold 0 would accept anything: it is a configuration error.
  rejects(t, () => verifyEnvelope(sign(), { keys: [k1], threshold: 0 }, { now: NOW }), 'E_CONFIG');
});

t.test('rollback floor: counter below the manifest floor or the persisted floor is E_FLOOR', async (t) => {
  rejects(
    t,
    () => verifyEnvelope(sign({ counter: 5 }), trustOne, { now: NOW, persistedFloor: 6 }),
    'E_FLOOR',
    /below the rollback floor 6/,
  );
  t.doesNotThrow(() => verifyEnvelope(sign({ counter: 6 }), trustOne, { now: NOW, persistedFloor: 6 }));
  // A manifest whose own floor is above its counter cannot be signed or verified.
  t.throws(() => sign({ counter: 5, floor: 6 }), { code: 'E_MANIFEST' });
  t.doesNotThrow(() => verifyEnvelope(sign({ counter: 6, floor: 6 }), trustOne, { now: NOW }));
});

t.test('an expired manifest is E_EXPIRED; expiry is checked against the given clock', async (t) => {
  const envelope = sign({ expiresAt: '2026-05-31T23:59:59.000Z' });
  rejects(t, () => verifyEnvelope(envelope, trustOne, { now: NOW }), 'E_EXPIRED');
  t.doesNotThrow(() => verifyEnvelope(envelope, trustOne, { now: new Date('2026-05-31T00:00:00Z') }));
  t.throws(() => sign({ expiresAt: '2025-01-01T00:00:00.000Z' }), { code: 'E_MANIFEST' }, 'expiry before creation');
});

t.test('model names or versions with path separators or ".." are E_NAME, even when validly signed', async (t) => {
  for (const bad of ['../etc', 'a/b', 'a\\b', '..', 'x..y', '.hidden', '', 'a b', 'x'.repeat(65), 'm\u0000']) {
    for (const field of ['model', 'version'] as const) {
      // Sign the raw text directly: the signer side refuses too, an attacker would not use it.
      const text = JSON.stringify({ ...manifestFor(bytes), [field]: bad });
      rejects(t, () => verifyEnvelope(signRaw(text), trustOne, { now: NOW }), 'E_NAME');
    }
  }
  t.throws(() => sign({ model: '../x' }), { code: 'E_NAME' });
  t.doesNotThrow(() => verifyEnvelope(sign({ version: '1.2.3+build.7' }), trustOne, { now: NOW }));
});

t.test('a manifest for another model or version than assigned is E_MODEL_MISMATCH', async (t) => {
  const envelope = sign();
  rejects(t, () => verifyEnvelope(envelope, trustOne, { now: NOW, expect: { model: 'other' } }), 'E_MODEL_MISMATCH');
  rejects(
    t,
    () => verifyEnvelope(envelope, trustOne, { now: NOW, expect: { model: 'detector', version: '2.0' } }),
    'E_MODEL_MISMATCH',
  );
  t.doesNotThrow(() =>
    verifyEnvelope(envelope, trustOne, { now: NOW, expect: { model: 'detector', version: '1.0.0' } }),
  );
});

t.test('a flipped bit in the file is E_DIGEST; a wrong size is E_SIZE', async (t) => {
  const { manifest } = verifyEnvelope(sign(), trustOne, { now: NOW });
  rejects(
    t,
    () => verifyArtifact(manifest, { size: manifest.size, sha256: `${manifest.sha256.slice(0, -1)}0` }),
    'E_DIGEST',
  );
  rejects(t, () => verifyArtifact(manifest, { size: manifest.size + 1, sha256: manifest.sha256 }), 'E_SIZE');
});

t.test('malformed envelopes and manifests are E_MANIFEST, never a crash', async (t) => {
  for (const bad of [
    null,
    'x',
    {},
    { manifest: '{}' },
    { manifest: '{}', signatures: [] },
    { manifest: 1, signatures: [{ keyId: 'a', sig: 'AA==' }] },
  ]) {
    rejects(t, () => verifyEnvelope(bad, trustOne, { now: NOW }), 'E_MANIFEST');
  }
  rejects(t, () => verifyEnvelope(signRaw('not json at all'), trustOne, { now: NOW }), 'E_MANIFEST', /not JSON/);
  const wrongType = JSON.stringify({ ...manifestFor(bytes), type: 'ota.other/v1' });
  rejects(t, () => verifyEnvelope(signRaw(wrongType), trustOne, { now: NOW }), 'E_MANIFEST', /type/);
  const extraField = JSON.stringify({ ...manifestFor(bytes), unexpected: true });
  rejects(t, () => verifyEnvelope(signRaw(extraField), trustOne, { now: NOW }), 'E_MANIFEST', /unexpected/);
});
