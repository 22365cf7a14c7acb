import { signDesired } from '../../shared/desired.js';
import { OtaError } from '../../shared/errors.js';
import { DESIRED_TYPE, type DesiredState } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import type { Signer } from '../../shared/signatures.js';
import type { Topics } from '../../shared/topics.js';
import type { OutgoingPublish } from '../broker/ordered-publisher.js';
import type { ReleaseRecord } from '../store/records.js';
import type { Store } from '../store/store.js';

/** One message the coordinator publishes itself (sent through OrderedPublisher). */
export type OutgoingMessage = OutgoingPublish;

/**
 * Builds a device's signed desired-state message from its stored (device, model) entries
 * (design sections 3 and 4): the next `seq` (monotonic per device, kept in SQLite so a restart
 * never reuses one), every model's release envelope and rollout id, signed with the
 * coordinator's key (node:crypto's Ed25519: byte-identical to tweetnacl, much faster).
 *
 * `prepare` runs inside the caller's transaction (the seq bump commits with the change that
 * caused it); the caller publishes the messages after the commit.
 */
export class DesiredPublisher {
  /** Releases never change once published: their envelopes are read from SQLite once. */
  private readonly envelopes = new Map<string, ReleaseRecord['envelope']>();

  constructor(private readonly deps: { store: Store; topics: Topics; signer: Signer; now: () => Date }) {}

  prepare(deviceIds: Iterable<string>): OutgoingMessage[] {
    const { store, topics, signer } = this.deps;
    const issuedAt = this.deps.now().toISOString();
    const out: OutgoingMessage[] = [];
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
      const state: DesiredState = { type: DESIRED_TYPE, deviceId, seq, issuedAt, models };
      out.push({ topic: topics.desired(deviceId), payload: encodePayload(signDesired(state, signer)), retain: true });
    }
    return out;
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
