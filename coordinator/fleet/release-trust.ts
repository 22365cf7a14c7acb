import type { Envelope } from '../../shared/envelope.js';
import { OtaError } from '../../shared/errors.js';
import { type PublicKey, publicKeyFromJson } from '../../shared/keys.js';
import { type TrustPolicy, verifyThreshold } from '../../shared/signatures.js';
import type { TrustedKeyRecord } from '../store/records.js';

/**
 * Which published releases the coordinator may still assign (docs/security.md, "Revoking a key
 * on the coordinator"). A release was checked against the trusted keys when it was published;
 * after a key is revoked (or rotated out by a trust document) its valid signatures from keys the
 * coordinator still counts may fall below the threshold: such a release is revoked, and no writer
 * of desired state assigns it again. Pure: the envelope, the keys and the threshold in, a verdict
 * out, with the same signature check devices make (shared/signatures.ts).
 */

export interface CoordinatorTrust {
  /** The keys counted now (the held trust without revoked keys) and the threshold. */
  policy: TrustPolicy;
  /** Keys the coordinator knows and does not count, with why ("revoked", "not in trust version 2"). */
  untrusted: ReadonlyMap<string, string>;
  /** The trust document version in force (0: the keys added with `key add`). */
  version: number;
}

export type Eligibility = { eligible: true } | { eligible: false; reason: string; keys: string[] };

/**
 * The coordinator's trust: before any trust document, the keys added with `key add` and the
 * configured threshold; after one, that document's keys and threshold. Revoked keys never count.
 */
export function coordinatorTrust(
  keys: readonly TrustedKeyRecord[],
  document: { version: number; keys: readonly PublicKey[]; threshold: number } | null,
  configThreshold: number,
): CoordinatorTrust {
  const revoked = new Set(keys.filter((k) => k.revoked).map((k) => k.keyId));
  const untrusted = new Map<string, string>();
  for (const id of revoked) untrusted.set(id, 'revoked');
  if (document) {
    const inDocument = new Set(document.keys.map((k) => k.keyId));
    for (const k of keys) {
      if (!inDocument.has(k.keyId) && !revoked.has(k.keyId))
        untrusted.set(k.keyId, `not in trust version ${document.version}`);
    }
    return {
      policy: { keys: document.keys.filter((k) => !revoked.has(k.keyId)), threshold: document.threshold },
      untrusted,
      version: document.version,
    };
  }
  return {
    policy: {
      keys: keys
        .filter((k) => !k.revoked)
        .map((k) => publicKeyFromJson({ keyId: k.keyId, publicKey: k.publicKey }, `trusted key ${k.keyId}`)),
      threshold: configThreshold,
    },
    untrusted,
    version: 0,
  };
}

/** Whether `release` is still signed by the threshold of the keys the coordinator counts now. */
export function releaseEligibility(release: { id: string; envelope: Envelope }, trust: CoordinatorTrust): Eligibility {
  const { manifest, signatures } = release.envelope;
  try {
    verifyThreshold(manifest, signatures, trust.policy, `release ${release.id}`);
    return { eligible: true };
  } catch {
    const signers = [...new Set(signatures.map((s) => s.keyId))];
    const named = signers.filter((id) => trust.untrusted.has(id));
    const why = named.map((id) => `${id} (${trust.untrusted.get(id)})`).join(', ');
    return {
      eligible: false,
      keys: named.length > 0 ? named : signers,
      reason:
        `release ${release.id} is revoked: ${why ? `signed by ${why}, ` : ''}it no longer has ` +
        `${trust.policy.threshold} valid signature(s) from keys the coordinator trusts (trust version ${trust.version}); ` +
        'sign the model again with a trusted key (`otactl key ls`) and publish it as a new version',
    };
  }
}

/** E_RELEASE_REVOKED naming the key(s) and the fix, when the release may not be assigned. */
export function assertAssignable(eligibility: Eligibility): void {
  if (!eligibility.eligible) throw new OtaError('E_RELEASE_REVOKED', eligibility.reason);
}
