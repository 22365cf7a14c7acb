import type { AuditEvent } from '../../shared/messages.js';
import type { Experiment, ExperimentDevice } from '../experiments/types.js';
import { AuditTable } from './audit-table.js';
import { Db, type StoreOptions, type StoreSettings } from './db.js';
import { DesiredTable } from './desired-table.js';
import { DevicesTable } from './devices-table.js';
import { ExperimentsTable } from './experiments-table.js';
import { GroupsTable } from './groups-table.js';
import { KeysTable } from './keys-table.js';
import { OperatorsTable } from './operators-table.js';
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
import { ReleasesTable } from './releases-table.js';
import { RolloutsTable } from './rollouts-table.js';
import type { Store, TransactionOptions } from './store.js';
import { TrustTable } from './trust-table.js';

export type { StoreOptions, StoreSettings } from './db.js';

/**
 * The Store on SQLite (better-sqlite3): WAL, synchronous=FULL, foreign keys on, busy timeout 5 s,
 * migrations on open. One instance per connection, nothing module-wide.
 *
 * It composes one module per table group over the shared connection (db.ts: open, migrations,
 * statement cache, error translation, transactions): devices-table.ts (devices, presence, last
 * report, desired seq, history), operators-table.ts, keys-table.ts, trust-table.ts, groups-table.ts,
 * releases-table.ts (releases and channels), desired-table.ts, rollouts-table.ts (rollouts and
 * their devices), experiments-table.ts (experiments and their arms) and audit-table.ts (the hash chain of audit-chain.ts). Each holds persistence
 * and constraints only; the rules that decide what is written are the planners'. The methods
 * below forward to them, and all share the connection's transactions: `transaction(fn)` around
 * calls to several of them is one SQLite transaction.
 */
export class SqliteStore implements Store {
  readonly file: string;
  /** Opened with `readonly`: reads only, and transactions take no write lock. */
  readonly readonly: boolean;
  private readonly devices: DevicesTable;
  private readonly operators: OperatorsTable;
  private readonly keys: KeysTable;
  private readonly trust: TrustTable;
  private readonly groups: GroupsTable;
  private readonly releases: ReleasesTable;
  private readonly desired: DesiredTable;
  private readonly rollouts: RolloutsTable;
  private readonly experiments: ExperimentsTable;
  private readonly audit: AuditTable;

  private constructor(private readonly db: Db) {
    this.file = db.file;
    this.readonly = db.readonly;
    this.devices = new DevicesTable(db);
    this.operators = new OperatorsTable(db);
    this.keys = new KeysTable(db);
    this.trust = new TrustTable(db);
    this.groups = new GroupsTable(db);
    this.releases = new ReleasesTable(db);
    this.desired = new DesiredTable(db);
    this.rollouts = new RolloutsTable(db);
    this.experiments = new ExperimentsTable(db);
    this.audit = new AuditTable(db);
  }

  static open(file: string, options: StoreOptions = {}): SqliteStore {
    return new SqliteStore(Db.open(file, options));
  }

  // ---- plumbing ----

  transaction<T>(fn: () => T, options: TransactionOptions = {}): T {
    return this.db.transaction(fn, options);
  }

  close(): void {
    this.db.close();
  }

  settings(): StoreSettings {
    return this.db.settings();
  }

  // ---- devices ----

  addDevice(device: {
    id: string;
    labels: Record<string, string>;
    channel: string;
    tokenHash: string;
    now: string;
  }): DeviceRecord {
    return this.devices.add(device);
  }

  getDevice(id: string): DeviceRecord | null {
    return this.devices.get(id);
  }

  deviceTokenHash(id: string): string | null {
    return this.devices.tokenHash(id);
  }

  listDevices(): DeviceRecord[] {
    return this.devices.list();
  }

  deviceIds(): string[] {
    return this.devices.ids();
  }

  listDeviceSummaries(page?: { after?: string; limit?: number }): DeviceSummary[] {
    return this.devices.summaries(page);
  }

  eachDeviceSummary(): IterableIterator<DeviceSummary> {
    return this.devices.eachSummary();
  }

  eachDevice(): IterableIterator<DeviceRecord> {
    return this.devices.each();
  }

  eachDeviceLabels(): IterableIterator<{ id: string; labels: Record<string, string> }> {
    return this.devices.eachLabels();
  }

  deviceCount(): number {
    return this.devices.count();
  }

  devicesOnline(ids: readonly string[]): Map<string, boolean> {
    return this.devices.onlineOf(ids);
  }

  removeDevice(id: string): boolean {
    return this.devices.remove(id);
  }

  markAllOffline(): number {
    return this.devices.markAllOffline();
  }

  setDevicePresence(
    id: string,
    online: boolean,
    now: string,
    facts?: { facts: DeviceRecord['facts']; agentVersion: string | null },
  ): void {
    this.devices.setPresence(id, online, now, facts);
  }

  setDeviceReport(id: string, report: DeviceRecord['lastReport'], now: string): void {
    this.devices.setReport(id, report, now);
  }

  nextDesiredSeq(id: string): number {
    return this.devices.nextDesiredSeq(id);
  }

  desiredSeq(id: string): number | null {
    return this.devices.desiredSeq(id);
  }

  raiseDesiredSeq(id: string, atLeast: number): boolean {
    return this.devices.raiseDesiredSeq(id, atLeast);
  }

  // ---- operators ----

  addOperator(op: { name: string; role: Role; tokenHash: string; now: string }): OperatorRecord {
    return this.operators.add(op);
  }

  getOperator(name: string): (OperatorRecord & { tokenHash: string }) | null {
    return this.operators.get(name);
  }

  listOperators(): OperatorRecord[] {
    return this.operators.list();
  }

  removeOperator(name: string): boolean {
    return this.operators.remove(name);
  }

  setOperatorRole(name: string, role: Role): boolean {
    return this.operators.setRole(name, role);
  }

  // ---- trusted release keys ----

  addKey(key: { keyId: string; publicKey: string; name: string | null; now: string }): TrustedKeyRecord {
    return this.keys.add(key);
  }

  listKeys(): TrustedKeyRecord[] {
    return this.keys.list();
  }

  revokeKey(keyId: string): boolean {
    return this.keys.revoke(keyId);
  }

  // ---- trust documents ----

  addTrustDocument(doc: TrustDocumentRecord): TrustDocumentRecord {
    return this.trust.add(doc);
  }

  latestTrustDocument(): TrustDocumentRecord | null {
    return this.trust.latest();
  }

  trustChain(limit: number): TrustDocumentRecord[] {
    return this.trust.newest(limit);
  }

  // ---- groups ----

  createGroup(group: {
    name: string;
    devices: string[] | null;
    selector: Record<string, string> | null;
    now: string;
  }): GroupRecord {
    return this.groups.create(group);
  }

  getGroup(name: string): GroupRecord | null {
    return this.groups.get(name);
  }

  listGroups(): GroupRecord[] {
    return this.groups.list();
  }

  // ---- releases and channels ----

  addRelease(release: ReleaseRecord): ReleaseRecord {
    return this.releases.add(release);
  }

  getRelease(id: string): ReleaseRecord | null {
    return this.releases.get(id);
  }

  listReleases(model?: string): ReleaseRecord[] {
    return this.releases.list(model);
  }

  setChannel(channel: { model: string; channel: string; releaseId: string; now: string }): ChannelRecord {
    return this.releases.setChannel(channel);
  }

  getChannel(model: string, channel: string): ChannelRecord | null {
    return this.releases.getChannel(model, channel);
  }

  listChannels(): ChannelRecord[] {
    return this.releases.listChannels();
  }

  // ---- desired state ----

  setDesired(entry: DesiredRecord): void {
    this.desired.set(entry);
  }

  removeDesired(deviceId: string, model: string): void {
    this.desired.remove(deviceId, model);
  }

  getDesired(deviceId: string, model: string): DesiredRecord | null {
    return this.desired.get(deviceId, model);
  }

  desiredReleasesOf(deviceIds: readonly string[], model: string): Map<string, string> {
    return this.desired.releasesOf(deviceIds, model);
  }

  listDesiredFor(deviceId: string): DesiredRecord[] {
    return this.desired.listFor(deviceId);
  }

  desiredCountsByRelease(): Map<string, number> {
    return this.desired.countsByRelease();
  }

  devicesWithDesired(): string[] {
    return this.desired.devicesWithDesired();
  }

  // ---- rollouts ----

  createRollout(rollout: Rollout, devices: RolloutDevice[]): void {
    this.rollouts.create(rollout, devices);
  }

  getRollout(id: string): Rollout | null {
    return this.rollouts.get(id);
  }

  listRollouts(filter: { active?: boolean } = {}): Rollout[] {
    return this.rollouts.list(filter);
  }

  updateRollout(id: string, patch: Partial<Rollout>): void {
    this.rollouts.update(id, patch);
  }

  rolloutDevices(rolloutId: string): RolloutDevice[] {
    return this.rollouts.devices(rolloutId);
  }

  openRolloutDevices(rolloutId: string): string[] {
    return this.rollouts.openDevices(rolloutId);
  }

  upsertRolloutDevices(rolloutId: string, devices: RolloutDevice[]): void {
    this.rollouts.upsertDevices(rolloutId, devices);
  }

  activeRolloutsFor(deviceId: string, model: string): Rollout[] {
    return this.rollouts.activeFor(deviceId, model);
  }

  activeRolloutIdsOf(deviceIds: readonly string[], model: string): Map<string, string[]> {
    return this.rollouts.activeIdsOf(deviceIds, model);
  }

  // ---- experiments ----

  createExperiment(experiment: Experiment, devices: ExperimentDevice[]): void {
    this.experiments.create(experiment, devices);
  }

  getExperiment(id: string): Experiment | null {
    return this.experiments.get(id);
  }

  listExperiments(filter: { running?: boolean } = {}): Experiment[] {
    return this.experiments.list(filter);
  }

  updateExperiment(experiment: Experiment): void {
    this.experiments.update(experiment);
  }

  experimentDevices(experimentId: string): ExperimentDevice[] {
    return this.experiments.devices(experimentId);
  }

  runningExperimentsFor(deviceId: string, model: string): Experiment[] {
    return this.experiments.runningFor(deviceId, model);
  }

  runningExperimentIdsOf(deviceIds: readonly string[], model: string): Map<string, string[]> {
    return this.experiments.runningIdsOf(deviceIds, model);
  }

  // ---- device history ----

  appendHistory(rows: HistoryRecord[]): void {
    this.devices.appendHistory(rows);
  }

  listHistory(deviceId: string, limit: number): HistoryRecord[] {
    return this.devices.listHistory(deviceId, limit);
  }

  // ---- audit ----

  appendAudit(drafts: AuditDraft[], now: string): AuditEvent[] {
    return this.audit.append(drafts, now);
  }

  listAudit(filter: { rolloutId?: string; afterSeq?: number; limit?: number; newest?: boolean } = {}): AuditEvent[] {
    return this.audit.list(filter);
  }

  auditCount(): number {
    return this.audit.count();
  }

  verifyAudit(): AuditVerdict {
    return this.audit.verify();
  }
}

/** Opens (creating and migrating when needed) the coordinator database at `file`. */
export function openStore(file: string, options: StoreOptions = {}): SqliteStore {
  return SqliteStore.open(file, options);
}
