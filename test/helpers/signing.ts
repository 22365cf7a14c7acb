import { signDesired } from '../../shared/desired.js';
import { type Envelope, signManifest } from '../../shared/envelope.js';
import { generateKey, type PrivateKey, publicKeyToJson } from '../../shared/keys.js';
import type { Manifest } from '../../shared/manifest.js';
import { DESIRED_TYPE, type DesiredMessage } from '../../shared/messages.js';
import { signerFor } from '../../shared/signatures.js';
import { manifestFor } from './releases.js';

/**
 * Stands in for the publisher (release key) and the coordinator (desired-state key) in agent
 * tests, with the real signing code.
 */
export class TestSigners {
  readonly releaseKey: PrivateKey = generateKey();
  readonly coordinatorKey: PrivateKey = generateKey();
  private seq = 0;

  release(model: string, version: string, bytes: Uint8Array, overrides: Partial<Manifest> = {}): Envelope {
    return signManifest(manifestFor(bytes, { model, version, counter: 100, ...overrides }), [
      signerFor(this.releaseKey),
    ]);
  }

  /** A desired-state message with the next seq (or the given one). */
  desired(
    deviceId: string,
    models: Record<string, { envelope: Envelope; rolloutId?: string | null }>,
    seq = ++this.seq,
  ): DesiredMessage {
    this.seq = Math.max(this.seq, seq);
    return signDesired(
      {
        type: DESIRED_TYPE,
        deviceId,
        seq,
        issuedAt: new Date().toISOString(),
        models: Object.fromEntries(
          Object.entries(models).map(([m, v]) => [m, { envelope: v.envelope, rolloutId: v.rolloutId ?? null }]),
        ),
      },
      signerFor(this.coordinatorKey, { fast: true }),
    );
  }

  /** The trust-related part of an agent config. */
  configKeys() {
    return {
      coordinatorKey: publicKeyToJson(this.coordinatorKey),
      trustedKeys: [publicKeyToJson(this.releaseKey)],
      threshold: 1,
    };
  }
}
