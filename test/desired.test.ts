import t from 'tap';
import { decodeDesiredMessage, signDesired, verifyDesired } from '../shared/desired.js';
import { signManifest } from '../shared/envelope.js';
import { DESIRED_TYPE, type DesiredState } from '../shared/messages.js';
import { signerFor } from '../shared/signatures.js';
import { keys, manifestFor } from './helpers/releases.js';

const [coordinator, releaseKey, stranger] = keys(3) as [
  ReturnType<typeof keys>[0],
  ReturnType<typeof keys>[0],
  ReturnType<typeof keys>[0],
];
const policy = { keys: [coordinator], threshold: 1 };
const envelope = signManifest(manifestFor(new Uint8Array([9])), [signerFor(releaseKey)]);

function state(seq: number, deviceId = 'cam-1'): DesiredState {
  return {
    type: DESIRED_TYPE,
    deviceId,
    seq,
    issuedAt: '2026-11-26T10:00:00.000Z',
    models: { detector: { envelope, rolloutId: 'r1' } },
  };
}

t.test('signed by the coordinator, verified by the device, seq must increase', async (t) => {
  const message = signDesired(state(5), signerFor(coordinator));
  const decoded = decodeDesiredMessage(Buffer.from(JSON.stringify(message)));
  t.same(verifyDesired(decoded, policy, { deviceId: 'cam-1', lastSeq: 4 }), state(5));
  t.throws(() => verifyDesired(decoded, policy, { deviceId: 'cam-1', lastSeq: 5 }), { code: 'E_REPLAY' }, 'equal seq');
  t.throws(() => verifyDesired(decoded, policy, { deviceId: 'cam-1', lastSeq: 9 }), { code: 'E_REPLAY' }, 'older seq');
});

t.test('the fast (node:crypto) signer produces the same message byte for byte', async (t) => {
  const slow = signDesired(state(7), signerFor(coordinator));
  const fast = signDesired(state(7), signerFor(coordinator, { fast: true }));
  t.same(fast, slow);
});

t.test('unknown signer, tampered text, other device', async (t) => {
  const byStranger = signDesired(state(5), signerFor(stranger));
  t.throws(() => verifyDesired(byStranger, policy, { deviceId: 'cam-1', lastSeq: 0 }), { code: 'E_UNKNOWN_KEY' });
  const message = signDesired(state(5), signerFor(coordinator));
  const tampered = { ...message, desired: message.desired.replace('"seq":5', '"seq":6') };
  t.throws(() => verifyDesired(tampered, policy, { deviceId: 'cam-1', lastSeq: 0 }), { code: 'E_SIGNATURE' });
  const other = signDesired(state(5, 'cam-2'), signerFor(coordinator));
  t.throws(() => verifyDesired(other, policy, { deviceId: 'cam-1', lastSeq: 0 }), { code: 'E_WRONG_DEVICE' });
});

t.test('bad desired payloads are rejected with a code, never a crash', async (t) => {
  t.throws(() => decodeDesiredMessage('{'), { code: 'E_PAYLOAD_JSON' });
  t.throws(() => decodeDesiredMessage('{"desired":1,"signatures":[]}'), { code: 'E_PAYLOAD_SCHEMA' });
  t.throws(() => decodeDesiredMessage(Buffer.alloc(300_000, 0x20)), { code: 'E_PAYLOAD_TOO_LARGE' });
  // Signed garbage: the signature is fine, the content is not a desired state.
  const text = '{"type":"ota.desired/v1","deviceId":"cam-1","seq":"1"}';
  const message = {
    desired: text,
    signatures: [
      {
        keyId: coordinator.keyId,
        sig: Buffer.from(signerFor(coordinator).sign(new TextEncoder().encode(text))).toString('base64'),
      },
    ],
  };
  t.throws(() => verifyDesired(message, policy, { deviceId: 'cam-1', lastSeq: 0 }), { code: 'E_PAYLOAD_SCHEMA' });
});
