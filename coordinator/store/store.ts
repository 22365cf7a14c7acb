import type { AuditEvent } from '../../shared/messages.js';
import type { Experiment, ExperimentDevice } from '../experiments/types.js';
import type {
  AuditDraft,
  AuditVerdict,
  ChannelRecord,
  DesiredRecord,
  DeviceRecord,
  DeviceSummary,
  GroupRecord,
  HistoryRecord,
  OperatorRecord,
  ReleaseRecord,
  Role,
  Rollout,
  RolloutDevice,
  TrustDocumentRecord,
  TrustedKeyRecord,
} from './records.js';

/**
 * `durable: false`: the commit survives a crash of the coordinator process (kill -9: the WAL is
 * written before the commit returns) but not necessarily a power loss, until the next durable
 * commit or checkpoint, which syncs the WAL with everything before it (SQLite WAL with
 * synchronous=NORMAL, https://sqlite.org/pragma.html#pragma_synchronous). It saves the fsync
 * per commit, which on the coordinator's one thread costs the whole fleet. Ignored inside an
 * outer transaction (the outer one decides).
 */
export interface TransactionOptions {
  durable?: boolean;
}

/**
 * The coordinator's persistent state (SQLite through better-sqlite3, WAL, synchronous=FULL,
 * foreign keys on, versioned migrations). Every method is synchronous (better-sqlite3 is) and
 * every write is durable when it returns (unless written behind, below). `transaction(fn)` runs fn in one SQLite transaction:
 * the rollout shell writes a decision's patch, device rows, desired entries and audit rows
 * through it, all or nothing. `transaction(fn, { durable: false })` is for state that devices
 * send again (their last report, presence, history): see `TransactionOptions`.
 *
 * Secrets: tokens are stored only as hashes (`tokenHash` is sha256 hex of the token; the caller
 * hashes and compares in constant time).
 */
export interface Store {
  transaction<T>(fn: () => T, options?: TransactionOptions): T;
  close(): void;

  // devices
  addDevice(device: {
    id: string;
    labels: Record<string, string>;
    channel: string;
    tokenHash: string;
    now: string;
  }): DeviceRecord;
  getDevice(id: string): DeviceRecord | null;
  /** The stored token hash of a device, for authentication. */
  deviceTokenHash(id: string): string | null;
  listDevices(): DeviceRecord[];
  /*
   * Fleet-wide reads that do not build every device's full record at once (its parsed report,
   * facts and labels: ~2 KB a device, ~100 MB at 50,000, all alive together in a list).
   */
  /** Every device's id, in id order. */
  deviceIds(): string[];
  /**
   * Every device as a list shows it, in id order: no report, facts or token read (device.ls takes
   * the models from memory: ~190 ms at 50,000 devices, 400 ms from whole records; bench:device-list).
   * A page: the first `limit` whose id sorts after `after` (by id, not by position, so devices
   * enrolled or removed between pages neither repeat nor go missing from the ones not yet listed).
   */
  listDeviceSummaries(page?: { after?: string; limit?: number }): DeviceSummary[];
  /** Every device as listDeviceSummaries shows it, one row at a time, in id order (nothing else may use the store meanwhile). */
  eachDeviceSummary(): IterableIterator<DeviceSummary>;
  /** Every device's full record, one row at a time, in id order (nothing else may use the store meanwhile). */
  eachDevice(): IterableIterator<DeviceRecord>;
  /** Every device's id and labels, one row at a time, in id order (nothing else may use the store meanwhile). */
  eachDeviceLabels(): IterableIterator<{ id: string; labels: Record<string, string> }>;
  deviceCount(): number;
  /** Of `ids`, the enrolled devices (others absent) and whether each is online, read at once. */
  devicesOnline(ids: readonly string[]): Map<string, boolean>;
  removeDevice(id: string): boolean;
  /** At start: no device is connected to a broker that just started (last_seen is kept). */
  markAllOffline(): number;
  setDevicePresence(
    id: string,
    online: boolean,
    now: string,
    facts?: { facts: DeviceRecord['facts']; agentVersion: string | null },
  ): void;
  setDeviceReport(id: string, report: DeviceRecord['lastReport'], now: string): void;
  /** Increments and returns the device's desired seq (inside the caller's transaction). */
  nextDesiredSeq(id: string): number;
  /** The last desired seq issued to the device; null when it is not enrolled. */
  desiredSeq(id: string): number | null;
  /**
   * Moves the device's desired seq up to `atLeast`, never down (a device reported a higher seq
   * than this database issued: a restored backup); false when the device is not enrolled.
   */
  raiseDesiredSeq(id: string, atLeast: number): boolean;

  // operators
  addOperator(op: { name: string; role: Role; tokenHash: string; now: string }): OperatorRecord;
  getOperator(name: string): (OperatorRecord & { tokenHash: string }) | null;
  listOperators(): OperatorRecord[];
  /** False when there is no such operator. */
  removeOperator(name: string): boolean;
  /** False when there is no such operator. */
  setOperatorRole(name: string, role: Role): boolean;

  // trusted release keys
  addKey(key: { keyId: string; publicKey: string; name: string | null; now: string }): TrustedKeyRecord;
  listKeys(): TrustedKeyRecord[];
  revokeKey(keyId: string): boolean;

  // signed trust documents (docs/security.md)
  addTrustDocument(doc: TrustDocumentRecord): TrustDocumentRecord;
  latestTrustDocument(): TrustDocumentRecord | null;
  /** The newest `limit` documents, oldest first. */
  trustChain(limit: number): TrustDocumentRecord[];

  // groups
  createGroup(group: {
    name: string;
    devices: string[] | null;
    selector: Record<string, string> | null;
    now: string;
  }): GroupRecord;
  getGroup(name: string): GroupRecord | null;
  listGroups(): GroupRecord[];

  // releases and channels
  addRelease(release: ReleaseRecord): ReleaseRecord;
  getRelease(id: string): ReleaseRecord | null;
  listReleases(model?: string): ReleaseRecord[];
  setChannel(channel: { model: string; channel: string; releaseId: string; now: string }): ChannelRecord;
  getChannel(model: string, channel: string): ChannelRecord | null;
  listChannels(): ChannelRecord[];

  // desired state, per (device, model)
  setDesired(entry: DesiredRecord): void;
  removeDesired(deviceId: string, model: string): void;
  getDesired(deviceId: string, model: string): DesiredRecord | null;
  /** getDesired's release for a list of devices at once: per device with a desired state for `model` (others absent). */
  desiredReleasesOf(deviceIds: readonly string[], model: string): Map<string, string>;
  listDesiredFor(deviceId: string): DesiredRecord[];
  /** Every device id that has at least one desired entry (republished at start). */
  devicesWithDesired(): string[];
  /** How many desired entries name each release (releases named by none are absent). */
  desiredCountsByRelease(): Map<string, number>;

  // rollouts
  createRollout(rollout: Rollout, devices: RolloutDevice[]): void;
  getRollout(id: string): Rollout | null;
  listRollouts(filter?: { active?: boolean }): Rollout[];
  updateRollout(id: string, patch: Partial<Rollout>): void;
  rolloutDevices(rolloutId: string): RolloutDevice[];
  /** Ids of the rollout's devices sent it (not pending), with no outcome yet and not sent back by an abort. */
  openRolloutDevices(rolloutId: string): string[];
  upsertRolloutDevices(rolloutId: string, devices: RolloutDevice[]): void;
  /** Active (running, waiting_approval, halted) rollouts of `model` that include `deviceId`. */
  activeRolloutsFor(deviceId: string, model: string): Rollout[];
  /** activeRolloutsFor's ids for a list of devices at once: per device in any (others absent), by creation. */
  activeRolloutIdsOf(deviceIds: readonly string[], model: string): Map<string, string[]>;

  // experiments (docs/experiments.md)
  createExperiment(experiment: Experiment, devices: ExperimentDevice[]): void;
  getExperiment(id: string): Experiment | null;
  /** By start; `running: true` only running ones, `false` only ended ones. */
  listExperiments(filter?: { running?: boolean }): Experiment[];
  /** Writes the experiment's fields whole. */
  updateExperiment(experiment: Experiment): void;
  experimentDevices(experimentId: string): ExperimentDevice[];
  /** Running experiments of `model` that include `deviceId`. */
  runningExperimentsFor(deviceId: string, model: string): Experiment[];
  /** runningExperimentsFor's ids for a list of devices at once: per device in any (others absent). */
  runningExperimentIdsOf(deviceIds: readonly string[], model: string): Map<string, string[]>;

  // device history (batched: many rows in one statement/transaction)
  appendHistory(rows: HistoryRecord[]): void;
  listHistory(deviceId: string, limit: number): HistoryRecord[];

  // audit chain: append computes seq, prevHash and hash = sha256(prevHash || canonical(row))
  appendAudit(drafts: AuditDraft[], now: string): AuditEvent[];
  listAudit(filter: { rolloutId?: string; afterSeq?: number; limit?: number; newest?: boolean }): AuditEvent[];
  auditCount(): number;
  verifyAudit(): AuditVerdict;
}

/** For state the devices send again (reports, presence, history): see `TransactionOptions`. */
export const WRITE_BEHIND: TransactionOptions = Object.freeze({ durable: false });
