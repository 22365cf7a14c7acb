import { z } from 'zod';
import { createFastSigner, signDetached, verifyDetached } from './ed25519.js';
import { OtaError } from './errors.js';
import type { PrivateKey, PublicKey } from './keys.js';

/**
 * Detached signatures over the exact UTF-8 bytes of a text, with several keys and a threshold
 * (TUF specification section 5: count each trusted key at most once). Shared by release
 * envelopes (release keys) and desired-state messages (the coordinator's key).
 */

export const SignatureSchema = z.strictObject({
  keyId: z.string().min(1).max(64),
  sig: z
    .string()
    .max(128)
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64'),
});
export type Signature = z.infer<typeof SignatureSchema>;

export interface TrustPolicy {
  keys: readonly PublicKey[];
  /** Distinct trusted keys whose signature must verify; at least 1. */
  threshold: number;
}

export interface Signer {
  keyId: string;
  sign(message: Uint8Array): Uint8Array;
}

/** tweetnacl by default; `fast` uses node:crypto (same signatures, for the coordinator's volume). */
export function signerFor(key: PrivateKey, options: { fast?: boolean } = {}): Signer {
  const sign = options.fast ? createFastSigner(key.seed) : (m: Uint8Array) => signDetached(m, key.secretKey);
  return { keyId: key.keyId, sign };
}

export function signText(text: string, signers: readonly Signer[]): Signature[] {
  const bytes = new TextEncoder().encode(text);
  return signers.map((s) => signatureOf(s.keyId, s.sign(bytes)));
}

/** A signature as messages carry it: the key's id and the 64 bytes in base64. */
export function signatureOf(keyId: string, signature: Uint8Array): Signature {
  return { keyId, sig: Buffer.from(signature).toString('base64') };
}

/**
 * Returns the ids of the trusted keys whose signatures verify, or throws with the most specific
 * reason: a malleated or bad signature from a trusted key is reported before "not enough keys",
 * because it means something was altered.
 */
export function verifyThreshold(
  text: string,
  signatures: readonly Signature[],
  policy: TrustPolicy,
  what: string,
): string[] {
  if (!Number.isInteger(policy.threshold) || policy.threshold < 1) {
    throw new OtaError('E_CONFIG', `signature threshold must be an integer >= 1, got ${policy.threshold}`);
  }
  const trusted = new Map(policy.keys.map((k) => [k.keyId, k.publicKey]));
  const bytes = new TextEncoder().encode(text);
  const valid = new Set<string>();
  const malleated: string[] = [];
  const invalid: string[] = [];
  const unknown: string[] = [];
  for (const { keyId, sig } of signatures) {
    const publicKey = trusted.get(keyId);
    if (!publicKey) {
      unknown.push(keyId);
      continue;
    }
    if (valid.has(keyId)) continue;
    const outcome = verifyDetached(bytes, new Uint8Array(Buffer.from(sig, 'base64')), publicKey);
    if (outcome === 'valid') valid.add(keyId);
    else if (outcome === 'malleated') malleated.push(keyId);
    else invalid.push(keyId);
  }
  if (valid.size >= policy.threshold) return [...valid];
  if (malleated.length > 0) {
    throw new OtaError(
      'E_SIGNATURE_MALLEATED',
      `${what}: signature by key ${malleated[0]} is not canonical (S >= L); rejected as malleated`,
    );
  }
  if (invalid.length > 0) {
    throw new OtaError('E_SIGNATURE', `${what}: signature by key ${invalid[0]} does not verify over the signed text`);
  }
  if (valid.size === 0) {
    throw new OtaError(
      'E_UNKNOWN_KEY',
      `${what}: no signature is from a trusted key (signed by ${unknown.join(', ') || 'nobody'})`,
    );
  }
  throw new OtaError(
    'E_THRESHOLD',
    `${what}: ${valid.size} valid signature(s) from trusted keys, ${policy.threshold} required`,
  );
}
