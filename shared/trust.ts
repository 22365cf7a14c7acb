import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { isOtaError, OtaError } from './errors.js';
import { type PublicKey, publicKeyFromJson } from './keys.js';
import { SignatureSchema, type Signer, signText, type TrustPolicy, verifyThreshold } from './signatures.js';
import { describeZodError } from './zod-errors.js';

/**
 * Signed trust rotation (design section 4, docs/security.md "Signed trust rotation"), after TUF's
 * root rotation (TUF specification section 5.3, "Update the root role"). A trust document names
 * the release keys devices trust and the threshold; its canonical JSON text is signed offline by
 * release keys, like a release manifest. A verifier holds one trust (version 0: its initial keys)
 * and moves to a new document only when:
 *   - a threshold of the keys it holds now signed the exact text (TUF 5.3.4 (1)),
 *   - a threshold of the document's own keys signed it too (TUF 5.3.4 (2)),
 *   - its version is above the one held (TUF 5.3.5: rollback).
 * The expiry of an intermediate document does not matter (TUF 5.3.6); the one held is checked
 * before it is used (`checkTrustFresh`, TUF 5.3.10: freeze). Pure: no clock, no I/O.
 */

export const TRUST_TYPE = 'ota.trust/v1';
export const MAX_TRUST_KEYS = 16;
export const MAX_TRUST_TEXT = 16 * 1024;
/** How many trust documents a desired state carries at most (the newest). */
export const MAX_TRUST_CHAIN = 16;

const isoDate = z.iso.datetime({ offset: true });

export const TrustKeySchema = z.strictObject({
  keyId: z.string().regex(/^[0-9a-f]{32}$/, 'must be 32 lowercase hex characters'),
  publicKey: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64'),
});

export const TrustDocumentSchema = z.strictObject({
  type: z.literal(TRUST_TYPE),
  version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  keys: z.array(TrustKeySchema).min(1).max(MAX_TRUST_KEYS),
  threshold: z.number().int().min(1).max(MAX_TRUST_KEYS),
  createdAt: isoDate,
  expiresAt: isoDate.optional(),
});
export type TrustDocument = z.infer<typeof TrustDocumentSchema>;

/** What travels and is stored: the exact signed text and its signatures. */
export const TrustEnvelopeSchema = z.strictObject({
  document: z.string().min(2).max(MAX_TRUST_TEXT),
  signatures: z
    .array(SignatureSchema)
    .min(1)
    .max(2 * MAX_TRUST_KEYS),
});
export type TrustEnvelope = z.infer<typeof TrustEnvelopeSchema>;

/** The trust a verifier holds. Version 0 is the initial trust (an agent config, the coordinator's keys). */
export interface HeldTrust {
  version: number;
  keys: readonly PublicKey[];
  threshold: number;
  expiresAt: string | null;
}

export interface AcceptedTrust {
  held: HeldTrust;
  document: TrustDocument;
  envelope: TrustEnvelope;
}

export function trustPolicyOf(held: Pick<HeldTrust, 'keys' | 'threshold'>): TrustPolicy {
  return { keys: held.keys, threshold: held.threshold };
}

/**
 * Validates a document: its schema (unknown fields refused), every key id derived from its key,
 * no key twice, a threshold it can meet, an expiry after its creation. Returns the decoded keys.
 */
export function parseTrustDocument(value: unknown): { document: TrustDocument; keys: PublicKey[] } {
  const parsed = TrustDocumentSchema.safeParse(value);
  if (!parsed.success) {
    throw new OtaError('E_TRUST_DOCUMENT', `invalid trust document: ${describeZodError(parsed.error)}`);
  }
  const document = parsed.data;
  const keys = document.keys.map((k, i) => {
    try {
      return publicKeyFromJson(k, `keys[${i}]`);
    } catch (err) {
      throw new OtaError('E_TRUST_DOCUMENT', `invalid trust document: ${(err as Error).message}`);
    }
  });
  const ids = new Set(keys.map((k) => k.keyId));
  if (ids.size !== keys.length) {
    throw new OtaError('E_TRUST_DOCUMENT', 'invalid trust document: a key is listed twice');
  }
  if (document.threshold > keys.length) {
    throw new OtaError(
      'E_TRUST_DOCUMENT',
      `invalid trust document: threshold ${document.threshold} is more than its ${keys.length} key(s)`,
    );
  }
  if (document.expiresAt !== undefined && Date.parse(document.expiresAt) <= Date.parse(document.createdAt)) {
    throw new OtaError(
      'E_TRUST_DOCUMENT',
      `invalid trust document: expiresAt ${document.expiresAt} is not after createdAt ${document.createdAt}`,
    );
  }
  return { document, keys };
}

function heldOf(document: TrustDocument, keys: PublicKey[]): HeldTrust {
  return { version: document.version, keys, threshold: document.threshold, expiresAt: document.expiresAt ?? null };
}

export function signTrust(document: TrustDocument, signers: readonly Signer[]): TrustEnvelope {
  if (signers.length === 0) throw new OtaError('E_USAGE', 'at least one signing key is needed');
  const text = canonicalJson(parseTrustDocument(document).document);
  return { document: text, signatures: signText(text, signers) };
}

/** Adds signatures by more keys (another key holder signing on another machine). */
export function cosignTrust(envelope: TrustEnvelope, signers: readonly Signer[]): TrustEnvelope {
  const have = new Set(envelope.signatures.map((s) => s.keyId));
  const added = signText(
    envelope.document,
    signers.filter((s) => !have.has(s.keyId)),
  );
  return { document: envelope.document, signatures: [...envelope.signatures, ...added] };
}

export function parseTrustEnvelope(value: unknown): TrustEnvelope {
  const parsed = TrustEnvelopeSchema.safeParse(value);
  if (!parsed.success) {
    throw new OtaError('E_TRUST_DOCUMENT', `invalid trust envelope: ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}

/** The version a document claims, read before it is verified (for messages and ordering only). */
export function claimedTrustVersion(envelope: { document: string }): number | null {
  try {
    const version = (JSON.parse(envelope.document) as { version?: unknown }).version;
    return typeof version === 'number' && Number.isSafeInteger(version) && version >= 0 ? version : null;
  } catch {
    return null;
  }
}

/**
 * Signatures of `what` by a threshold of `policy`: a missing or short quorum is E_TRUST_THRESHOLD
 * (the message keeps the reason); a signature that does not verify or is malleated keeps its own
 * code, since it means something was altered.
 */
function requireQuorum(envelope: TrustEnvelope, policy: TrustPolicy, what: string): string[] {
  try {
    return verifyThreshold(envelope.document, envelope.signatures, policy, what);
  } catch (err) {
    if (isOtaError(err, 'E_UNKNOWN_KEY') || isOtaError(err, 'E_THRESHOLD')) {
      throw new OtaError('E_TRUST_THRESHOLD', err.message, { cause: err });
    }
    throw err;
  }
}

/** Checks the exact text and parses it; the signatures are the caller's business. */
function readDocument(envelope: TrustEnvelope): { document: TrustDocument; keys: PublicKey[] } {
  let json: unknown;
  try {
    json = JSON.parse(envelope.document);
  } catch {
    throw new OtaError('E_TRUST_DOCUMENT', 'trust document text is not JSON');
  }
  return parseTrustDocument(json);
}

/**
 * One step of the rotation (TUF 5.3.4 and 5.3.5): `value` becomes the held trust when a threshold
 * of the held keys and a threshold of its own keys signed it, and its version is above the held
 * one. Expiry is not checked here (TUF 5.3.6): see `checkTrustFresh`.
 */
export function verifyTrustUpdate(value: unknown, held: HeldTrust): AcceptedTrust {
  const envelope = parseTrustEnvelope(value);
  const claimed = claimedTrustVersion(envelope);
  const label = `trust document${claimed === null ? '' : ` version ${claimed}`}`;
  requireQuorum(
    envelope,
    trustPolicyOf(held),
    `${label}: not signed by ${held.threshold} of the ${held.keys.length} key(s) trusted now (trust version ${held.version})`,
  );
  const { document, keys } = readDocument(envelope);
  requireQuorum(
    envelope,
    { keys, threshold: document.threshold },
    `${label}: not signed by ${document.threshold} of its own ${keys.length} new key(s) (TUF 5.3.4: the new keys sign too)`,
  );
  if (document.version <= held.version) {
    throw new OtaError(
      'E_TRUST_VERSION',
      `trust document version ${document.version} is not above the version held, ${held.version} (a replay or a rollback of trust)`,
    );
  }
  return { held: heldOf(document, keys), document, envelope };
}

/**
 * A document checked against its own keys only: for a copy this verifier accepted earlier and
 * stored (it was checked against the keys held then, which it no longer has).
 */
export function verifyTrustSelfSigned(value: unknown): AcceptedTrust {
  const envelope = parseTrustEnvelope(value);
  const { document, keys } = readDocument(envelope);
  requireQuorum(
    envelope,
    { keys, threshold: document.threshold },
    `trust document version ${document.version}: not signed by ${document.threshold} of its own keys`,
  );
  return { held: heldOf(document, keys), document, envelope };
}

/** TUF 5.3.10 (freeze attack): a held trust past its expiry verifies nothing new. */
export function checkTrustFresh(held: Pick<HeldTrust, 'version' | 'expiresAt'>, now: Date): void {
  if (held.expiresAt !== null && Date.parse(held.expiresAt) <= now.getTime()) {
    throw new OtaError(
      'E_TRUST_EXPIRED',
      `trust document version ${held.version} expired at ${held.expiresAt} (now ${now.toISOString()}); new releases are refused until a newer trust document arrives`,
    );
  }
}

export interface TrustChainOutcome {
  /** The trust held after the chain (the one given when nothing was accepted). */
  held: HeldTrust;
  /** Documents accepted, in order. */
  accepted: AcceptedTrust[];
  /** The first document refused (the rest of the chain was not looked at), or null. */
  rejected: { version: number | null; error: OtaError } | null;
}

/**
 * A chain of documents, as a desired state carries it (oldest first): each one above the held
 * version is verified against the trust as updated by the ones before it (TUF 5.3.9: repeat);
 * documents at or below the held version are history and skipped. The first refusal stops the
 * walk: the documents after it are normally signed by the keys it would have brought.
 */
export function applyTrustChain(chain: readonly unknown[], held: HeldTrust): TrustChainOutcome {
  let current = held;
  const accepted: AcceptedTrust[] = [];
  for (const item of chain) {
    const claimed =
      typeof item === 'object' && item !== null && typeof (item as { document?: unknown }).document === 'string'
        ? claimedTrustVersion(item as { document: string })
        : null;
    if (claimed !== null && claimed <= current.version) continue;
    try {
      const next = verifyTrustUpdate(item, current);
      accepted.push(next);
      current = next.held;
    } catch (err) {
      const error = isOtaError(err) ? err : new OtaError('E_TRUST_DOCUMENT', String(err));
      return { held: current, accepted, rejected: { version: claimed, error } };
    }
  }
  return { held: current, accepted, rejected: null };
}
