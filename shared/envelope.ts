import { z } from 'zod';
import { OtaError } from './errors.js';
import { type Manifest, manifestText, parseManifest } from './manifest.js';
import { checkRollbackFloor } from './rollback-floor.js';
import { SignatureSchema, type Signer, signText, type TrustPolicy, verifyThreshold } from './signatures.js';
import { describeZodError } from './zod-errors.js';

/**
 * The signed release envelope: `{ manifest: "<exact signed JSON text>", signatures: [...] }`.
 * Signatures cover the exact bytes of `manifest`; verification parses that text only after the
 * signatures check out, and never re-serialises it (tuf-js: verification is a pure function over
 * bytes with the reference time passed in).
 */

export const MAX_MANIFEST_TEXT = 64 * 1024;

export const EnvelopeSchema = z.strictObject({
  manifest: z.string().min(2).max(MAX_MANIFEST_TEXT),
  signatures: z.array(SignatureSchema).min(1).max(16),
});
export type Envelope = z.infer<typeof EnvelopeSchema>;

export function signManifest(manifest: Manifest, signers: readonly Signer[]): Envelope {
  if (signers.length === 0) throw new OtaError('E_USAGE', 'at least one signing key is needed');
  const text = manifestText(parseManifest(manifest));
  return { manifest: text, signatures: signText(text, signers) };
}

/** Adds signatures by more keys to an envelope (a second publisher co-signing for a threshold). */
export function cosignEnvelope(envelope: Envelope, signers: readonly Signer[]): Envelope {
  const have = new Set(envelope.signatures.map((s) => s.keyId));
  const added = signText(
    envelope.manifest,
    signers.filter((s) => !have.has(s.keyId)),
  );
  return { manifest: envelope.manifest, signatures: [...envelope.signatures, ...added] };
}

export interface VerifyContext {
  /** Reference time for expiry. */
  now: Date;
  /** Highest floor this verifier has recorded for the model (0 when none). */
  persistedFloor?: number;
  /** The assignment this envelope came with: a manifest for anything else is refused. */
  expect?: { model?: string; version?: string };
}

export interface VerifiedRelease {
  manifest: Manifest;
  keyIds: string[];
}

export function parseEnvelope(value: unknown): Envelope {
  const parsed = EnvelopeSchema.safeParse(value);
  if (!parsed.success) throw new OtaError('E_MANIFEST', `invalid release envelope: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/**
 * Verifies an envelope: signatures and threshold over the exact text, then the manifest's schema
 * and names, expiry, rollback floor, and that it is the release that was assigned.
 */
export function verifyEnvelope(value: unknown, policy: TrustPolicy, ctx: VerifyContext): VerifiedRelease {
  const envelope = parseEnvelope(value);
  const keyIds = verifyThreshold(envelope.manifest, envelope.signatures, policy, 'release manifest');
  let json: unknown;
  try {
    json = JSON.parse(envelope.manifest);
  } catch {
    throw new OtaError('E_MANIFEST', 'release manifest text is not JSON');
  }
  const manifest = parseManifest(json);
  if (manifest.expiresAt !== undefined && Date.parse(manifest.expiresAt) <= ctx.now.getTime()) {
    throw new OtaError(
      'E_EXPIRED',
      `release ${manifest.model}@${manifest.version} expired at ${manifest.expiresAt} (now ${ctx.now.toISOString()})`,
    );
  }
  checkRollbackFloor(manifest, ctx.persistedFloor ?? 0);
  const { expect } = ctx;
  if (expect?.model !== undefined && expect.model !== manifest.model) {
    throw new OtaError(
      'E_MODEL_MISMATCH',
      `manifest is for model ${manifest.model}, but it was assigned as model ${expect.model}`,
    );
  }
  if (expect?.version !== undefined && expect.version !== manifest.version) {
    throw new OtaError(
      'E_MODEL_MISMATCH',
      `manifest is for version ${manifest.version}, but it was assigned as version ${expect.version}`,
    );
  }
  return { manifest, keyIds };
}

/** Checks the exact bytes (their size and sha256, computed by the caller while reading). */
export function verifyArtifact(
  manifest: Pick<Manifest, 'size' | 'sha256'>,
  observed: { size: number; sha256: string },
): void {
  if (observed.size !== manifest.size) {
    throw new OtaError('E_SIZE', `artifact is ${observed.size} bytes, the manifest says ${manifest.size}`);
  }
  if (observed.sha256 !== manifest.sha256) {
    throw new OtaError('E_DIGEST', `artifact sha256 is ${observed.sha256}, the manifest says ${manifest.sha256}`);
  }
}
