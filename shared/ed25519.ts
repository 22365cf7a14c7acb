import { createPrivateKey, createPublicKey, type KeyObject, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import nacl from 'tweetnacl';

/**
 * Ed25519 (RFC 8032) over tweetnacl, plus node:crypto's implementation for the coordinator's hot
 * path. Ed25519 signing is deterministic (RFC 8032 section 5.1.6), so both produce the same bytes;
 * a test holds them to that.
 */

export const SEED_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

/** The group order L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032 section 5.1). */
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

export interface KeyPair {
  publicKey: Uint8Array; // 32 bytes
  secretKey: Uint8Array; // 64 bytes: seed || public key (tweetnacl's layout)
}

export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (seed.length !== SEED_BYTES) throw new TypeError(`ed25519 seed must be ${SEED_BYTES} bytes`);
  return nacl.sign.keyPair.fromSeed(seed);
}

export function generateSeed(): Uint8Array {
  return nacl.randomBytes(SEED_BYTES);
}

export function signDetached(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return nacl.sign.detached(message, secretKey);
}

/**
 * RFC 8032 section 5.1.7 step 1: "If ... S is not in the range [0, L), the signature MUST be
 * rejected". tweetnacl 1.0.3 skips this check and accepts S + L, a second valid-looking encoding
 * of the same signature (malleability).
 */
export function hasCanonicalS(signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES) return false;
  let s = 0n;
  for (let i = SIGNATURE_BYTES - 1; i >= 32; i--) s = (s << 8n) | BigInt(signature[i] as number);
  return s < L;
}

export type VerifyOutcome = 'valid' | 'malleated' | 'invalid';

/**
 * RFC 8032 section 5.1.7 verification with node:crypto (OpenSSL): ~60 us here, where tweetnacl
 * takes 6 ms (more under the agent's --no-opt, agent/node-flags.ts). The S < L
 * check comes first so a malleated signature is named as such.
 */
export function verifyDetached(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): VerifyOutcome {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== PUBLIC_KEY_BYTES) return 'invalid';
  if (!hasCanonicalS(signature)) return 'malleated';
  try {
    return nodeVerify(null, message, nodePublicKey(publicKey), signature) ? 'valid' : 'invalid';
  } catch {
    return 'invalid'; // 32 bytes that do not decode to a curve point
  }
}

/** tweetnacl's verification, kept to check node:crypto against it (test/ed25519.test.ts). */
export function verifyDetachedTweetnacl(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  return nacl.sign.detached.verify(message, signature, publicKey);
}

// PKCS#8 / SPKI DER prefixes for Ed25519 (RFC 8410 section 7): the raw key follows them.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function nodePrivateKey(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function nodePublicKey(publicKey: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
}

/** A signer over node:crypto (OpenSSL): about 80x tweetnacl here; same signatures. */
export function createFastSigner(seed: Uint8Array): (message: Uint8Array) => Uint8Array {
  const key = nodePrivateKey(seed);
  return (message) => new Uint8Array(nodeSign(null, message, key));
}
