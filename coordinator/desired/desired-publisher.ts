import { desiredMessage, desiredText } from '../../shared/desired.js';
import { OtaError } from '../../shared/errors.js';
import type { PrivateKey } from '../../shared/keys.js';
import { DESIRED_TYPE, type DesiredState } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { type Signer, signerFor } from '../../shared/signatures.js';
import type { Topics } from '../../shared/topics.js';
import { MAX_TRUST_CHAIN, type TrustEnvelope } from '../../shared/trust.js';
import type { OutgoingPublish } from '../broker/ordered-publisher.js';
import type { ReleaseRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { type ParallelSigner, SIGN_BATCH_TEXTS } from './parallel-signer.js';
import { signEach } from './sign-job.js';

/** One message the coordinator publishes itself (sent through OrderedPublisher). */
export type OutgoingMessage = OutgoingPublish;

/**
 * Builds a device's signed desired-state message from its stored (device, model) entries
 * (design sections 3 and 4): the next `seq` (monotonic per device, kept in SQLite so a restart
 * never reuses one), every model's release envelope and rollout id, signed with the
 * coordinator's key (node:crypto's Ed25519: byte-identical to tweetnacl, much faster), and the
 * newest trust documents (`trust`, oldest first), which the coordinator relays and cannot forge:
 * they are signed by release keys (docs/security.md).
 *
 * `prepare` runs inside the caller's transaction (the seq bump commits with the change that
 * caused it); the caller publishes the messages after the commit.
 */
export class DesiredPublisher {
  /** Releases never change once published: their envelopes are read from SQLite once. */
  private readonly envelopes = new Map<string, ReleaseRecord['envelope']>();
  /** The trust chain every desired state carries; read again after `trustChanged`. */
  private trust: TrustEnvelope[] | null = null;

  constructor(
    private readonly deps: {
      store: Store;
      topics: Topics;
      signer: Signer;
      now: () => Date;
      /**
       * Signs many texts at once with the signer's key (parallel-signer.ts: on worker threads too);
       * default one by one with `signer`.
       */
      signMany?: (texts: readonly string[]) => Uint8Array[];
    },
  ) {}

  /** The coordinator's: signed with `key`, a large batch shared with `signing`'s worker threads. */
  static sharing(
    signing: ParallelSigner,
    key: PrivateKey,
    deps: { store: Store; topics: Topics; now: () => Date },
  ): DesiredPublisher {
    return new DesiredPublisher({
      ...deps,
      signer: signerFor(key, { fast: true }),
      signMany: (texts) => signing.signMany(texts),
    });
  }

  prepare(deviceIds: Iterable<string>): OutgoingMessage[] {
    const { store, topics, signer } = this.deps;
    const signMany = this.deps.signMany ?? ((texts: readonly string[]) => signEach(texts, (m) => signer.sign(m)));
    const issuedAt = this.deps.now().toISOString();
    const out: OutgoingMessage[] = [];
    // Signed in batches, each turned into its messages at once: a wave's texts are not all held
    // beside all its messages (~13 MB more at 9,000 devices).
    let batch: { topic: string; text: string }[] = [];
    const sign = () => {
      const signatures = signMany(batch.map((m) => m.text));
      batch.forEach(({ topic, text }, i) => {
        const message = desiredMessage(text, signer.keyId, signatures[i] as Uint8Array);
        out.push({ topic, payload: encodePayload(message), retain: true });
      });
      batch = [];
    };
    this.trust ??= store.trustChain(MAX_TRUST_CHAIN).map((d) => d.envelope);
    const trust = this.trust.length > 0 ? { trust: this.trust } : {};
    for (const deviceId of new Set(deviceIds)) {
      let seq: number;
      try {
        seq = store.nextDesiredSeq(deviceId);
      } catch {
        continue; // removed meanwhile
      }
      const models: DesiredState['models'] = {};
      for (const entry of store.listDesiredFor(deviceId)) {
        models[entry.model] = { envelope: this.envelope(entry.releaseId), rolloutId: entry.rolloutId };
      }
      const state: DesiredState = { type: DESIRED_TYPE, deviceId, seq, issuedAt, models, ...trust };
      batch.push({ topic: topics.desired(deviceId), text: desiredText(state) });
      if (batch.length === SIGN_BATCH_TEXTS) sign();
    }
    if (batch.length > 0) sign();
    return out;
  }

  /** A trust document was published (inside the caller's transaction): the next prepare reads the chain again. */
  trustChanged(): void {
    this.trust = null;
  }

  private envelope(releaseId: string): ReleaseRecord['envelope'] {
    let envelope = this.envelopes.get(releaseId);
    if (!envelope) {
      const release = this.deps.store.getRelease(releaseId);
      if (!release) throw new OtaError('E_INTERNAL', `desired entry names unknown release ${releaseId}`);
      envelope = release.envelope;
      this.envelopes.set(releaseId, envelope);
    }
    return envelope;
  }
}
