import { desiredMessage, desiredText } from '../../shared/desired.js';
import { OtaError } from '../../shared/errors.js';
import type { PrivateKey } from '../../shared/keys.js';
import { DESIRED_TYPE, type DesiredState, MAX_MODELS } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { type Signer, signerFor } from '../../shared/signatures.js';
import type { Topics } from '../../shared/topics.js';
import { MAX_TRUST_CHAIN, type TrustEnvelope } from '../../shared/trust.js';
import type { DeferredMessages, OutgoingPublish } from '../broker/ordered-publisher.js';
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

  /**
   * Every device's next desired state, as a list whose payloads are signed when the publisher
   * reaches them (OrderedPublisher): here, inside the caller's transaction, only the seq is taken
   * and the models read from the store; the list keeps a device's id, seq and models (shared by
   * every device assigned the same ones), ~0.1 KB a device. Its text, signature and payload
   * (~1.6 KB, twice that while an MQTT client holds a QoS 1 copy) exist only for the messages
   * within the publish window. A whole 50,000-device wave signed up front held ~100 MB of
   * payloads at once.
   *
   * States are signed 1,024 at a time (the first message of a batch to go out signs the batch, on
   * worker threads too): a batch's payloads are handed out one by one and not held after.
   */
  prepare(deviceIds: Iterable<string>): DesiredStates {
    const { store, topics } = this.deps;
    this.trust ??= store.trustChain(MAX_TRUST_CHAIN).map((d) => d.envelope);
    const out = new DesiredStates(topics, this.deps.now().toISOString(), this.trust, this.signAll);
    // The models of one prepare, by what they hold: a wave assigns most of its devices the same.
    const shared = new Map<string, DesiredState['models']>();
    for (const deviceId of new Set(deviceIds)) {
      let seq: number;
      try {
        seq = store.nextDesiredSeq(deviceId);
      } catch {
        continue; // removed meanwhile
      }
      const entries = store.listDesiredFor(deviceId);
      // The schema's limit, checked here so the plan that broke it rolls back with a clear error
      // (the full schema check runs when the state is signed, after the commit).
      if (entries.length > MAX_MODELS) {
        throw new OtaError(
          'E_CONFLICT',
          `device ${deviceId} would be assigned ${entries.length} models, more than the ${MAX_MODELS} a desired state carries: remove a model from it first (\`otactl rollout abort\` or a channel move)`,
        );
      }
      const key = JSON.stringify(entries.map((e) => [e.model, e.releaseId, e.rolloutId]));
      let models = shared.get(key);
      if (!models) {
        models = {};
        for (const entry of entries) {
          models[entry.model] = { envelope: this.envelope(entry.releaseId), rolloutId: entry.rolloutId };
        }
        shared.set(key, models);
      }
      out.add(deviceId, seq, models);
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
 * Desired states to publish (DesiredPublisher.prepare), made into signed messages as the
 * publisher asks for them: the states of SIGN_BATCH_TEXTS consecutive devices are signed together
 * the first time one of their payloads is asked for. Each payload is handed out once and dropped
 * here, so what the broker acknowledged is garbage at once; a batch is dropped once every payload
 * of it was taken.
 */
export class DesiredStates implements DeferredMessages {
  readonly retain = true;
  private readonly deviceIds: string[] = [];
  private readonly seqs: number[] = [];
  private readonly models: DesiredState['models'][] = [];
  /** Signed batches not taken in full yet, by batch number (index / SIGN_BATCH_TEXTS). */
  private readonly batches = new Map<number, SignedBatch>();
  /** Batches whose every payload was taken. */
  private readonly finished = new Set<number>();

  constructor(
    private readonly topics: Topics,
    private readonly issuedAt: string,
    private readonly trust: TrustEnvelope[],
    private readonly signAll: (states: readonly DesiredState[]) => (Buffer | Error)[],
  ) {}

  get length(): number {
    return this.deviceIds.length;
  }

  add(deviceId: string, seq: number, models: DesiredState['models']): void {
    // Its topic is named now, inside the caller's transaction: an id no topic can carry rolls the
    // plan back with that error, instead of failing its message after the commit.
    this.topics.desired(deviceId);
    this.deviceIds.push(deviceId);
    this.seqs.push(seq);
    this.models.push(models);
  }

  /** The device a message is for, and its state's seq (for tests and benchmarks). */
  device(index: number): { deviceId: string; seq: number } {
    return { deviceId: this.at(this.deviceIds, index), seq: this.at(this.seqs, index) };
  }

  topic(index: number): string {
    return this.topics.desired(this.at(this.deviceIds, index));
  }

  /** The index-th signed payload (once); throws why it has none (the schema refused its state, or signing failed). */
  payload(index: number): Buffer {
    this.at(this.deviceIds, index);
    const number = Math.floor(index / SIGN_BATCH_TEXTS);
    const taken = () => new Error(`desired state ${index} was already taken`);
    if (this.finished.has(number)) throw taken();
    let batch = this.batches.get(number);
    if (!batch) {
      batch = this.sign(number);
      this.batches.set(number, batch);
    }
    const i = index - number * SIGN_BATCH_TEXTS;
    const payload = batch.payloads[i];
    if (payload === undefined) throw taken();
    batch.payloads[i] = undefined;
    if (--batch.left === 0) {
      this.batches.delete(number);
      this.finished.add(number);
    }
    if (payload instanceof Error) throw payload;
    return payload;
  }

  private sign(number: number): SignedBatch {
    const from = number * SIGN_BATCH_TEXTS;
    const to = Math.min(this.length, from + SIGN_BATCH_TEXTS);
    const trust = this.trust.length > 0 ? { trust: this.trust } : {};
    const states: DesiredState[] = [];
    for (let i = from; i < to; i++) {
      states.push({
        type: DESIRED_TYPE,
        deviceId: this.at(this.deviceIds, i),
        seq: this.at(this.seqs, i),
        issuedAt: this.issuedAt,
        models: this.at(this.models, i),
        ...trust,
      });
    }
    let payloads: (Buffer | Error | undefined)[];
    try {
      payloads = this.signAll(states);
    } catch (err) {
      // The batch's messages fail alike, without signing it again once each.
      payloads = states.map(() => (err instanceof Error ? err : new Error(String(err))));
    }
    return { payloads, left: to - from };
  }

  private at<T>(values: readonly T[], index: number): T {
    if (!Number.isInteger(index) || index < 0 || index >= values.length) {
      throw new Error(`desired state ${index} of ${values.length}: no such message`);
    }
    return values[index] as T;
  }
}

interface SignedBatch {
  /** Each state's payload, or why it has none; undefined once taken. */
  payloads: (Buffer | Error | undefined)[];
  /** Payloads not taken yet. */
  left: number;
}
