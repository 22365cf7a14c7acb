import type { Envelope } from '../../shared/envelope.js';
import type { AuditEvent, DeviceFacts, Reported } from '../../shared/messages.js';
import type { TrustEnvelope } from '../../shared/trust.js';
import type { AuditDraft, Rollout, RolloutDevice } from '../rollout/types.js';

/**
 * The rows the coordinator keeps (design section 6), as the rest of the coordinator sees them.
 * The table modules of `coordinator/store/` (composed by sqlite-store.ts) map them to tables.
 * Timestamps are ISO strings.
 */

export type Role = 'admin' | 'operator' | 'viewer';

/** What a fleet-wide list shows of a device: none of its JSON but its labels (Store.listDeviceSummaries). */
export type DeviceSummary = Pick<DeviceRecord, 'id' | 'labels' | 'channel' | 'online' | 'lastSeen' | 'agentVersion'>;

export interface DeviceRecord {
  id: string;
  labels: Record<string, string>;
  channel: string;
  facts: DeviceFacts | null;
  agentVersion: string | null;
  online: boolean;
  lastSeen: string | null;
  /** Highest desired-state seq published to it (monotonic, never reused). */
  desiredSeq: number;
  /** The device's last report, whole, as received (null before the first). */
  lastReport: Reported | null;
  createdAt: string;
}

export interface OperatorRecord {
  name: string;
  role: Role;
  createdAt: string;
}

export interface TrustedKeyRecord {
  keyId: string;
  /** base64 Ed25519 public key, as in a `.pub` file. */
  publicKey: string;
  name: string | null;
  revoked: boolean;
  addedAt: string;
}

export interface GroupRecord {
  name: string;
  /** Either an explicit device list or a label selector. */
  devices: string[] | null;
  selector: Record<string, string> | null;
  createdAt: string;
}

export interface ReleaseRecord {
  /** `${model}@${version}` */
  id: string;
  model: string;
  version: string;
  counter: number;
  sha256: string;
  size: number;
  envelope: Envelope;
  publishedBy: string;
  publishedAt: string;
}

/** A published trust document (shared/trust.ts): the envelope exactly as signed. */
export interface TrustDocumentRecord {
  version: number;
  envelope: TrustEnvelope;
  publishedBy: string;
  publishedAt: string;
}

export interface ChannelRecord {
  model: string;
  channel: string;
  releaseId: string;
  updatedAt: string;
}

/** One (device, model) entry of a device's desired state. */
export interface DesiredRecord {
  deviceId: string;
  model: string;
  releaseId: string;
  rolloutId: string | null;
  /** What wrote it: `rollout`, `channel`, `enrolment`, `revert`. */
  source: string;
  updatedAt: string;
}

export interface HistoryRecord {
  deviceId: string;
  model: string;
  state: string;
  version: string | null;
  rolloutId: string | null;
  error: { code: string; message: string } | null;
  ts: string;
}

export type StoredAuditEvent = AuditEvent;

export interface AuditVerdict {
  ok: boolean;
  count: number;
  /** Hash of the last row (64 zeros for an empty chain). */
  head: string;
  /** First sequence number that does not verify, when !ok. */
  firstBad: number | null;
  reason: string | null;
}

export type { AuditDraft, Rollout, RolloutDevice };
