import { randomBytes } from 'node:crypto';
import t from 'tap';
import nacl from 'tweetnacl';
import {
  createFastSigner,
  hasCanonicalS,
  keyPairFromSeed,
  signDetached,
  verifyDetached,
  verifyDetachedTweetnacl,
} from '../shared/ed25519.js';

// RFC 8032 section 7.1, TEST 1, TEST 2, TEST 3 and TEST SHA(abc).
const VECTORS = [
  {
    name: 'TEST 1 (empty message)',
    secret: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    public: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    message: '',
    signature:
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2 (one byte)',
    secret: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    public: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    message: '72',
    signature:
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3 (two bytes)',
    secret: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    public: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    message: 'af82',
    signature:
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
];

const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

t.test('RFC 8032 test vectors: tweetnacl and node:crypto both match', async (t) => {
  for (const v of VECTORS) {
    const pair = keyPairFromSeed(hex(v.secret));
    t.equal(toHex(pair.publicKey), v.public, `${v.name}: public key`);
    t.equal(toHex(signDetached(hex(v.message), pair.secretKey)), v.signature, `${v.name}: tweetnacl signature`);
    t.equal(toHex(createFastSigner(hex(v.secret))(hex(v.message))), v.signature, `${v.name}: node:crypto signature`);
    t.equal(verifyDetached(hex(v.message), hex(v.signature), pair.publicKey), 'valid', `${v.name}: verifies`);
    const flipped = hex(v.signature);
    flipped[0] = (flipped[0] as number) ^ 1;
    t.equal(verifyDetached(hex(v.message), flipped, pair.publicKey), 'invalid', `${v.name}: flipped R bit rejected`);
  }
});

t.test('node:crypto and tweetnacl give byte-identical signatures on random inputs', async (t) => {
  for (let i = 0; i < 50; i++) {
    const seed = new Uint8Array(randomBytes(32));
    const message = new Uint8Array(randomBytes(i * 37));
    const pair = keyPairFromSeed(seed);
    t.same(createFastSigner(seed)(message), signDetached(message, pair.secretKey));
  }
  t.end();
});

t.test('node:crypto verification agrees with tweetnacl: valid, tampered, wrong key, garbage keys', async (t) => {
  let checked = 0;
  for (let i = 0; i < 40; i++) {
    const pair = keyPairFromSeed(new Uint8Array(randomBytes(32)));
    const message = new Uint8Array(randomBytes(1 + i * 29));
    const signature = signDetached(message, pair.secretKey);
    const tampered = new Uint8Array(message);
    tampered[i % tampered.length] = (tampered[i % tampered.length] as number) ^ 1;
    const other = keyPairFromSeed(new Uint8Array(randomBytes(32))).publicKey;
    // Random 32 bytes: about half do not decode to a curve point at all.
    const garbage = new Uint8Array(randomBytes(32));
    for (const [msg, key] of [
      [message, pair.publicKey],
      [tampered, pair.publicKey],
      [message, other],
      [message, garbage],
    ] as const) {
      const node = verifyDetached(msg, signature, key) === 'valid';
      t.equal(node, verifyDetachedTweetnacl(msg, signature, key), `case ${checked}`);
      checked++;
    }
  }
  t.equal(verifyDetached(new Uint8Array(), new Uint8Array(64), new Uint8Array(32).fill(255)), 'invalid');
});

/** Adds the group order L to the little-endian S half of a signature: the classic malleation. */
function malleate(signature: Uint8Array): Uint8Array {
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  let s = 0n;
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(signature[i] as number);
  let sPlusL = s + L;
  const out = new Uint8Array(signature);
  for (let i = 32; i < 64; i++) {
    out[i] = Number(sPlusL & 0xffn);
    sPlusL >>= 8n;
  }
  return out;
}

t.test('an S+L malleated signature is rejected (tweetnacl alone accepts it)', async (t) => {
  const pair = keyPairFromSeed(hex(VECTORS[1]?.secret as string));
  const message = new TextEncoder().encode('release manifest');
  const sig = signDetached(message, pair.secretKey);
  const bad = malleate(sig);
  t.not(toHex(bad), toHex(sig));
  // The attack is real: the library's own verify says yes...
  t.ok(nacl.sign.detached.verify(message, bad, pair.publicKey), 'tweetnacl 1.0.3 accepts S+L');
  // ...and our check says no (RFC 8032 section 5.1.7).
  t.notOk(hasCanonicalS(bad));
  t.ok(hasCanonicalS(sig));
  t.equal(verifyDetached(message, bad, pair.publicKey), 'malleated');
});

t.test('wrong lengths are invalid, not exceptions', async (t) => {
  const pair = keyPairFromSeed(hex(VECTORS[0]?.secret as string));
  t.equal(verifyDetached(new Uint8Array(), new Uint8Array(63), pair.publicKey), 'invalid');
  t.equal(verifyDetached(new Uint8Array(), new Uint8Array(64), new Uint8Array(31)), 'invalid');
  t.notOk(hasCanonicalS(new Uint8Array(10)));
  t.throws(() => keyPairFromSeed(new Uint8Array(31)), /32 bytes/);
});
