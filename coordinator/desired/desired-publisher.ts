import { desiredMessage, desiredText } from '../../shared/desired.js';
import { OtaError } from '../../shared/errors.js';
import type { PrivateKey } from '../../shared/keys.js';
import { DESIRED_TYPE, type DesiredState, MAX_MODELS } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { type Signer, signerFor } from '../../shared/signatures.js';
import type { Topics } from '../../shared/topics.js';
import { MAX_TRUST_CHAIN, type TrustEnvelope } from '../../shared/trust.js';
import type { QueuedPublish } from '../broker/ordered-publisher.js';
import type { ReleaseRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { type ParallelSigner, SIGN_BATCH_TEXTS } from './parallel-signer.js';
import { signEach } from './sign-job.js';

/** One message the coordinator publishes itself (sent through OrderedPublisher). */
export type OutgoingMessage = QueuedPublish;

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

  /**
   * Every device's next desired state, as messages whose payloads are signed when the publisher
   * reaches them (OrderedPublisher): here, inside the caller's transaction, only the seq is taken
   * and the state assembled from the store (~0.3 KB a device: the release envelopes and the trust
   * chain are shared); its text, signature and payload (~1.6 KB, twice that while an MQTT client
   * holds a QoS 1 copy) exist only for the messages within the publish window. A whole 50,000-device
   * wave signed up front held ~100 MB of payloads at once.
   *
   * States are signed 1,024 at a time (the first message of a batch to go out signs the batch, on
   * worker threads too): a batch's payloads are handed out one by one and not held after.
   */
  prepare(deviceIds: Iterable<string>): OutgoingMessage[] {
    const { store, topics } = this.deps;
    const issuedAt = this.deps.now().toISOString();
    const out: OutgoingMessage[] = [];
    let batch = new DeferredBatch(this.signAll);
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
      const entries = store.listDesiredFor(deviceId);
      // The schema's limit, checked here so the plan that broke it rolls back with a clear error
      // (the full schema check runs when the state is signed, after the commit).
      if (entries.length > MAX_MODELS) {
        throw new OtaError(
          'E_CONFLICT',
          `device ${deviceId} would be assigned ${entries.length} models, more than the ${MAX_MODELS} a desired state carries: remove a model from it first (\`otactl rollout abort\` or a channel move)`,
        );
      }
      for (const entry of entries) {
        models[entry.model] = { envelope: this.envelope(entry.releaseId), rolloutId: entry.rolloutId };
      }
      if (batch.size === SIGN_BATCH_TEXTS) batch = new DeferredBatch(this.signAll);
      const payload = batch.add({ type: DESIRED_TYPE, deviceId, seq, issuedAt, models, ...trust });
      out.push({ topic: topics.desired(deviceId), payload, retain: true });
    }
    return out;
  }

  /**
   * The signed payloads of `states`, in order; a state the schema refuses (desiredText) gets its
   * error instead, and the others are signed all the same.
   */
  private readonly signAll = (states: readonly DesiredState[]): (Buffer | Error)[] => {
    const { signer } = this.deps;
    const signMany = this.deps.signMany ?? ((texts: readonly string[]) => signEach(texts, (m) => signer.sign(m)));
    const texts: (string | Error)[] = states.map((state) => {
      try {
        return desiredText(state);
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
    });
    const valid = texts.filter((t): t is string => typeof t === 'string');
    const signatures = signMany(valid);
    let next = 0;
    return texts.map((text) =>
      typeof text === 'string'
        ? encodePayload(desiredMessage(text, signer.keyId, signatures[next++] as Uint8Array))
        : text,
    );
  };

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

/**
 * Up to SIGN_BATCH_TEXTS desired states signed together the first time one of their payloads is
 * asked for. Each payload is handed out once and dropped here, so what the broker acknowledged is
 * garbage at once; the states are dropped when the batch is signed.
 */
class DeferredBatch {
  private states: DesiredState[] | null = [];
  private payloads: (Buffer | Error | undefined)[] | null = null;
  private failure: Error | null = null;

  constructor(private readonly signAll: (states: readonly DesiredState[]) => (Buffer | Error)[]) {}

  get size(): number {
    return this.states?.length ?? 0;
  }

  /** Adds a state; the function returns its signed payload (once), or throws why it has none. */
  add(state: DesiredState): () => Buffer {
    const states = this.states as DesiredState[];
    const i = states.length;
    states.push(state);
    return () => this.take(i);
  }

  private take(i: number): Buffer {
    if (this.failure) throw this.failure;
    if (!this.payloads) {
      try {
        this.payloads = this.signAll(this.states as DesiredState[]);
      } catch (err) {
        // The batch's other messages fail alike, without signing it again once each.
        this.failure = err instanceof Error ? err : new Error(String(err));
        this.states = null;
        throw this.failure;
      }
      this.states = null;
    }
    const payload = this.payloads[i];
    this.payloads[i] = undefined;
    if (payload instanceof Error) throw payload;
    if (!payload) throw new Error(`desired state ${i} of its batch was already taken`);
    return payload;
  }
}
