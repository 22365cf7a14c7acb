import { type Envelope, verifyArtifact, verifyEnvelope } from '../../shared/envelope.js';
import { OtaError } from '../../shared/errors.js';
import { publicKeyFromJson, publicKeyToJson } from '../../shared/keys.js';
import type { AuditEvent } from '../../shared/messages.js';
import { assertSafeName } from '../../shared/names.js';
import { encodePayload } from '../../shared/payload.js';
import { releaseIdOf } from '../../shared/release-id.js';
import type { Topics } from '../../shared/topics.js';
import type { SessionOwner } from '../broker/create-broker.js';
import { type ChannelView, channelView } from '../commands/views.js';
import type { DesiredPublisher, OutgoingMessage } from '../desired/desired-publisher.js';
import { hashToken, newToken } from '../identity/tokens.js';
import { PlanExecutor } from '../plan/commit-plan.js';
import type { AuditDraft, ChannelRecord, DeviceRecord, ReleaseRecord, Role } from '../store/records.js';
import type { Store } from '../store/store.js';
import { type ChannelMoveSnapshot, planChannelMove } from './plan-channel-move.js';
import { planEnrol } from './plan-enrol.js';

export interface FleetServiceDeps {
  store: Store;
  desired: DesiredPublisher;
  topics: Topics;
  publish: (messages: OutgoingMessage[]) => Promise<void>;
  now: () => Date;
  releaseThreshold: number;
  /** What an enrolled device needs besides its own id and token. */
  agentConfigBase: () => {
    broker: { url: string };
    artifactsUrl: string;
    coordinatorKey: { keyId: string; publicKey: string };
  };
  onAudit?: (events: AuditEvent[]) => void;
  /** The one executor of write plans (one per coordinator); default: one of its own. */
  executor?: PlanExecutor;
  /**
   * Called right after a change to who may connect as what has committed: a device removed (an
   * id enrolled again is removed first), an operator removed or given another role. The coordinator ends that
   * device's or operator's sessions and forgets what it cached about it (service.ts).
   */
  onCredentialsChanged?: (who: SessionOwner) => void;
}

/**
 * Devices, operators, trusted keys, groups, releases and channels: the writes other than rollouts.
 * Each change and its audit rows commit in one transaction; desired-state messages it causes
 * (enrolment, channel moves) are published after the commit.
 */
export class FleetService {
  private readonly executor: PlanExecutor;

  constructor(private readonly deps: FleetServiceDeps) {
    this.executor = deps.executor ?? new PlanExecutor(deps);
  }

  private audit(drafts: AuditDraft[]): void {
    const events = this.deps.store.appendAudit(drafts, this.deps.now().toISOString());
    this.pendingAudit.push(...events);
  }

  private pendingAudit: AuditEvent[] = [];

  /** Runs `fn` in a transaction, then publishes its desired messages and audit events. */
  private write<T>(fn: () => { result: T; desiredFor?: string[] }): T {
    this.pendingAudit = [];
    const { result, messages } = this.deps.store.transaction(() => {
      const out = fn();
      return { result: out.result, messages: this.deps.desired.prepare(out.desiredFor ?? []) };
    });
    const audit = this.pendingAudit;
    this.pendingAudit = [];
    this.deps.onAudit?.(audit);
    void this.deps.publish([
      ...messages,
      ...audit.map((e) => ({ topic: this.deps.topics.audit(), payload: encodePayload(e), retain: false })),
    ]);
    return result;
  }

  trustPolicy() {
    const keys = this.deps.store
      .listKeys()
      .filter((k) => !k.revoked)
      .map((k) => publicKeyFromJson({ keyId: k.keyId, publicKey: k.publicKey }, `trusted key ${k.keyId}`));
    return { keys, threshold: this.deps.releaseThreshold };
  }

  // ---- keys ----

  addKey(input: { key: unknown; name?: string | undefined }, actor: string) {
    const key = publicKeyFromJson(input.key, 'key');
    const json = publicKeyToJson(key);
    return this.write(() => {
      const record = this.deps.store.addKey({
        keyId: json.keyId,
        publicKey: json.publicKey,
        name: input.name ?? null,
        now: this.deps.now().toISOString(),
      });
      this.audit([{ actor, action: 'key.added', subject: `key:${json.keyId}`, details: { name: input.name ?? null } }]);
      return { result: record };
    });
  }

  revokeKey(keyId: string, actor: string) {
    return this.write(() => {
      if (!this.deps.store.revokeKey(keyId)) {
        throw new OtaError('E_NOT_FOUND', `no trusted key ${keyId}: see \`otactl key ls\``);
      }
      this.audit([{ actor, action: 'key.revoked', subject: `key:${keyId}`, details: {} }]);
      return { result: { keyId, revoked: true } };
    });
  }

  private credentialsChanged(who: SessionOwner): void {
    this.deps.onCredentialsChanged?.(who);
  }

  // ---- operators ----

  addOperator(name: string, role: Role, actor: string): { name: string; role: Role; token: string } {
    assertSafeName('client id', name);
    if (this.deps.store.getDevice(name)) {
      // An operator's MQTT client ids are `name` and `name@...` (broker/acl.ts); a device id never
      // holds `@`, so only the bare name can be a device's client id.
      throw new OtaError('E_CONFLICT', `operator name ${name} clashes with device ${name}; pick another name`);
    }
    const token = newToken();
    return this.write(() => {
      this.deps.store.addOperator({ name, role, tokenHash: hashToken(token), now: this.deps.now().toISOString() });
      this.audit([{ actor, action: 'operator.added', subject: `operator:${name}`, details: { role } }]);
      return { result: { name, role, token } };
    });
  }

  /**
   * Removes an operator account: its token stops working and its sessions end at once. Nobody
   * removes or demotes themselves, so an admin always remains (only an admin may do either).
   */
  removeOperator(name: string, actor: string): { name: string; removed: true } {
    this.refuseSelf(name, actor, 'remove');
    const result = this.write(() => {
      if (!this.deps.store.removeOperator(name)) throw this.noOperator(name);
      this.audit([{ actor, action: 'operator.removed', subject: `operator:${name}`, details: {} }]);
      return { result: { name, removed: true as const } };
    });
    this.credentialsChanged({ kind: 'operator', name });
    return result;
  }

  /** Gives an operator another role; its sessions end, and it reconnects with the new one. */
  setOperatorRole(name: string, role: Role, actor: string): { name: string; role: Role } {
    this.refuseSelf(name, actor, 'change the role of');
    const result = this.write(() => {
      const before = this.deps.store.getOperator(name);
      if (!before || !this.deps.store.setOperatorRole(name, role)) throw this.noOperator(name);
      this.audit([
        {
          actor,
          action: 'operator.role_changed',
          subject: `operator:${name}`,
          details: { from: before.role, to: role },
        },
      ]);
      return { result: { name, role } };
    });
    this.credentialsChanged({ kind: 'operator', name });
    return result;
  }

  private refuseSelf(name: string, actor: string, what: string): void {
    if (name === actor) {
      throw new OtaError('E_USAGE', `you cannot ${what} your own account (${name}); ask another admin`);
    }
  }

  private noOperator(name: string): OtaError {
    return new OtaError('E_NOT_FOUND', `no operator ${JSON.stringify(name)}: see \`otactl operator ls\``);
  }

  // ---- devices ----

  addDevice(
    input: { id: string; labels?: Record<string, string> | undefined; channel?: string | undefined },
    actor: string,
  ) {
    const id = assertSafeName('device id', input.id);
    const channel = input.channel ?? 'stable';
    assertSafeName('device id', channel);
    if (this.deps.store.getOperator(id)) {
      // That id is the operator's own MQTT client id (its name; its others are `name@...`).
      throw new OtaError('E_CONFLICT', `device id ${id} clashes with operator ${id}'s client id; pick another id`);
    }
    const token = newToken();
    const { store } = this.deps;
    const labels = input.labels ?? {};
    const plan = planEnrol(
      { id, labels, channel, tokenHash: hashToken(token) },
      store.listChannels().filter((c) => c.channel === channel),
      actor,
    );
    // (An id enrolled again was removed first, and removeDevice ended its sessions.)
    this.executor.commit(plan, this.deps.now().toISOString());
    const device = store.getDevice(id) as DeviceRecord;
    const policy = this.trustPolicy();
    const agentConfig = {
      deviceId: id,
      ...this.deps.agentConfigBase(),
      token,
      trustedKeys: policy.keys.map((k) => publicKeyToJson(k)),
      threshold: policy.threshold,
    };
    return { device, token, agentConfig };
  }

  /** Removes a device: its token stops working and its session ends at once. */
  removeDevice(id: string, actor: string) {
    const result = this.write(() => {
      if (!this.deps.store.removeDevice(id)) {
        throw new OtaError('E_NOT_FOUND', `no device ${JSON.stringify(id)}: see \`otactl device ls\``);
      }
      this.audit([{ actor, action: 'device.removed', subject: `device:${id}`, details: {} }]);
      return { result: { id, removed: true } };
    });
    this.credentialsChanged({ kind: 'device', deviceId: id });
    return result;
  }

  showDevice(id: string): DeviceRecord & { desired: unknown[]; history: unknown[] } {
    const device = this.deps.store.getDevice(id);
    if (!device) throw new OtaError('E_NOT_FOUND', `no device ${JSON.stringify(id)}: see \`otactl device ls\``);
    return {
      ...device,
      desired: this.deps.store.listDesiredFor(id),
      history: this.deps.store.listHistory(id, 50),
    };
  }

  // ---- groups ----

  createGroup(
    input: { name: string; devices?: string[] | undefined; selector?: Record<string, string> | undefined },
    actor: string,
  ) {
    assertSafeName('device id', input.name);
    if ((input.devices === undefined) === (input.selector === undefined)) {
      throw new OtaError('E_USAGE', 'a group is either a device list (--devices a,b,c) or a selector (--selector k=v)');
    }
    if (input.devices) {
      const unknown = input.devices.filter((d) => !this.deps.store.getDevice(d));
      if (unknown.length > 0) {
        throw new OtaError(
          'E_NOT_FOUND',
          `unknown device(s): ${unknown.join(', ')}; enrol them first (\`otactl device add\`)`,
        );
      }
    }
    return this.write(() => {
      const group = this.deps.store.createGroup({
        name: input.name,
        devices: input.devices ? [...new Set(input.devices)] : null,
        selector: input.selector ?? null,
        now: this.deps.now().toISOString(),
      });
      this.audit([
        {
          actor,
          action: 'group.created',
          subject: `group:${input.name}`,
          details: { devices: group.devices, selector: group.selector },
        },
      ]);
      return { result: group };
    });
  }

  // ---- releases ----

  /**
   * Makes a release out of an uploaded artifact: the envelope must verify against the trusted
   * release keys (threshold), and the artifact's size and sha256 must be the manifest's. The
   * coordinator never holds a release key (design section 4), so this is the same check a device
   * makes, done early so a bad release never reaches one.
   */
  publishRelease(
    input: {
      envelope: Envelope;
      sha256: string;
      size: number;
      channel: string | null;
      /** Confirms moving `channel` when that re-targets more than CHANNEL_CONFIRM_ABOVE devices. */
      yes: boolean;
    },
    actor: string,
  ): ReleaseRecord & { channel: ChannelView | null; retargeted: number } {
    const { store } = this.deps;
    const policy = this.trustPolicy();
    if (policy.keys.length === 0) {
      throw new OtaError(
        'E_UNKNOWN_KEY',
        'no trusted release keys on the coordinator: add one first (`otactl key add release.key.pub`)',
      );
    }
    const { manifest } = verifyEnvelope(input.envelope, policy, { now: this.deps.now() });
    verifyArtifact(manifest, { size: input.size, sha256: input.sha256 });
    const id = releaseIdOf(manifest.model, manifest.version);
    if (store.getRelease(id)) throw new OtaError('E_CONFLICT', `release ${id} already exists; publish a new version`);
    // The channel move is planned (and confirmed) before the release is written, so a refused
    // move leaves nothing published; it is committed right after (nothing runs in between).
    let channelMove: ReturnType<typeof planChannelMove> | null = null;
    if (input.channel) {
      assertSafeName('device id', input.channel);
      channelMove = planChannelMove(
        { model: manifest.model, channel: input.channel, releaseId: id, yes: input.yes },
        { releaseExists: true, followers: this.followers(manifest.model, input.channel) },
        actor,
      );
    }
    const release = this.write(() => {
      const record = store.addRelease({
        id,
        model: manifest.model,
        version: manifest.version,
        counter: manifest.counter,
        sha256: manifest.sha256,
        size: manifest.size,
        envelope: input.envelope,
        publishedBy: actor,
        publishedAt: this.deps.now().toISOString(),
      });
      this.audit([
        {
          actor,
          action: 'release.published',
          subject: `release:${id}`,
          details: { sha256: manifest.sha256, size: manifest.size, counter: manifest.counter, floor: manifest.floor },
        },
      ]);
      return { result: record };
    });
    if (!channelMove) return { ...release, channel: null, retargeted: 0 };
    const moved = this.commitChannelMove(channelMove);
    return { ...release, channel: moved.channel, retargeted: moved.retargeted.length };
  }

  /** A channel's followers as the store has them now (ChannelMoveSnapshot). */
  private followers(model: string, channel: string): ChannelMoveSnapshot['followers'] {
    const { store } = this.deps;
    return store
      .listDevices()
      .filter((d) => d.channel === channel)
      .map((d) => ({
        id: d.id,
        desiredReleaseId: store.getDesired(d.id, model)?.releaseId ?? null,
        inRollout: store.activeRolloutsFor(d.id, model).length > 0,
      }));
  }

  /**
   * Points a channel at a release and re-targets every device that follows the channel, except
   * those in an active rollout of the model (the rollout owns them until it ends): planChannelMove.
   */
  setChannel(input: { model: string; channel: string; version: string; yes?: boolean | undefined }, actor: string) {
    const { store } = this.deps;
    assertSafeName('device id', input.channel);
    const releaseId = releaseIdOf(input.model, input.version);
    return this.commitChannelMove(
      planChannelMove(
        { model: input.model, channel: input.channel, releaseId, yes: input.yes === true },
        { releaseExists: store.getRelease(releaseId) !== null, followers: this.followers(input.model, input.channel) },
        actor,
      ),
    );
  }

  private commitChannelMove({ move, plan }: ReturnType<typeof planChannelMove>) {
    this.executor.commit(plan, this.deps.now().toISOString());
    const channel = this.deps.store.listChannels().find((c) => c.model === move.model && c.channel === move.channel);
    return {
      channel: channelView(channel as ChannelRecord),
      retargeted: move.retarget,
      skippedInRollout: move.inRollout,
    };
  }
}
