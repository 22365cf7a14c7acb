import { type Envelope, verifyArtifact, verifyEnvelope } from '../../shared/envelope.js';
import { OtaError } from '../../shared/errors.js';
import { publicKeyFromJson, publicKeyToJson } from '../../shared/keys.js';
import type { AuditEvent } from '../../shared/messages.js';
import { assertSafeName } from '../../shared/names.js';
import { encodePayload } from '../../shared/payload.js';
import { releaseIdOf } from '../../shared/release-id.js';
import type { Topics } from '../../shared/topics.js';
import {
  checkTrustFresh,
  type HeldTrust,
  parseTrustDocument,
  type TrustDocument,
  verifyTrustUpdate,
} from '../../shared/trust.js';
import type { SessionOwner } from '../broker/create-broker.js';
import { type ChannelView, channelView } from '../commands/views.js';
import type { DesiredPublisher, DesiredStates, OutgoingMessage } from '../desired/desired-publisher.js';
import type { BrokerIdentity } from '../external-broker/dynsec-identity.js';
import { hashToken, newToken } from '../identity/tokens.js';
import { PlanExecutor } from '../plan/commit-plan.js';
import type { WritePlan } from '../plan/write-plan.js';
import type {
  AuditDraft,
  ChannelRecord,
  DesiredRecord,
  DeviceRecord,
  HistoryRecord,
  ReleaseRecord,
  Role,
} from '../store/records.js';
import type { Store } from '../store/store.js';
import { type ChannelMoveSnapshot, planChannelMove } from './plan-channel-move.js';
import { planEnrol } from './plan-enrol.js';
import { type CoordinatorTrust, coordinatorTrust, type Eligibility, releaseEligibility } from './release-trust.js';

export interface FleetServiceDeps {
  store: Store;
  desired: DesiredPublisher;
  topics: Topics;
  publish: (messages: OutgoingMessage[], desired?: DesiredStates) => Promise<void>;
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
  /**
   * An external broker's clients (design section 12), kept in step: a device or operator is
   * created there before its row commits (its token exists in plain text only now) and removed
   * there after its row is gone. None with the embedded broker, which reads the store itself.
   */
  brokerIdentity?: BrokerIdentity;
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
    void this.deps.publish(
      audit.map((e) => ({ topic: this.deps.topics.audit(), payload: encodePayload(e), retain: false })),
      messages,
    );
    return result;
  }

  /** The last trust document published, parsed once per version (documents never change). */
  private published: { version: number; document: TrustDocument; held: HeldTrust } | null = null;

  private latestTrust(): { document: TrustDocument; held: HeldTrust } | null {
    const latest = this.deps.store.latestTrustDocument();
    if (!latest) return null;
    if (this.published?.version !== latest.version) {
      const { document, keys } = parseTrustDocument(JSON.parse(latest.envelope.document));
      const held = {
        version: document.version,
        keys,
        threshold: document.threshold,
        expiresAt: document.expiresAt ?? null,
      };
      this.published = { version: latest.version, document, held };
    }
    return this.published;
  }

  /**
   * The trust a new trust document is checked against, as a device would (docs/security.md): the
   * last document published, or before the first one every key added with `key add`, revoked ones
   * included (a compromised key must still be able to sign the rotation away from itself), and
   * the configured threshold.
   */
  heldTrust(): HeldTrust {
    const latest = this.latestTrust();
    if (latest) return latest.held;
    return {
      version: 0,
      keys: this.deps.store
        .listKeys()
        .map((k) => publicKeyFromJson({ keyId: k.keyId, publicKey: k.publicKey }, `trusted key ${k.keyId}`)),
      threshold: this.deps.releaseThreshold,
      expiresAt: null,
    };
  }

  /** The release keys and threshold the coordinator counts now (release-trust.ts). */
  releaseTrust(): CoordinatorTrust {
    return coordinatorTrust(this.deps.store.listKeys(), this.latestTrust()?.held ?? null, this.deps.releaseThreshold);
  }

  trustPolicy() {
    return this.releaseTrust().policy;
  }

  /** Whether a published release may still be assigned (not revoked: release-trust.ts). */
  eligibility(release: ReleaseRecord, trust: CoordinatorTrust = this.releaseTrust()): Eligibility {
    return releaseEligibility(release, trust);
  }

  /** `key ls`: each key with its status now: trusted, revoked, or not in the trust document in force. */
  listKeys() {
    const { untrusted } = this.releaseTrust();
    return this.deps.store.listKeys().map((k) => ({ ...k, status: untrusted.get(k.keyId) ?? 'trusted' }));
  }

  /** `release ls`: each release with whether it is revoked, and why (never its envelope). */
  listReleases(model?: string) {
    const trust = this.releaseTrust();
    return this.deps.store.listReleases(model).map(({ envelope, ...rest }) => {
      const e = releaseEligibility({ id: rest.id, envelope }, trust);
      return {
        ...rest,
        /** The key ids whose signatures the envelope carries (which of them count: `key ls`). */
        signedBy: envelope.signatures.map((sig) => sig.keyId),
        revoked: !e.eligible,
        revokedReason: e.eligible ? null : e.reason,
        revokedKeys: e.eligible ? [] : e.keys,
      };
    });
  }

  /**
   * What a change of trust leaves behind (docs/security.md): the releases now revoked, the
   * channels pointing at them, and how many devices' desired states still name them. Those
   * desired states are left as they are; the operator moves them on.
   */
  revokedReleases(trust: CoordinatorTrust = this.releaseTrust()) {
    const { store } = this.deps;
    const releases = store
      .listReleases()
      .filter((r) => !releaseEligibility(r, trust).eligible)
      .map((r) => r.id);
    const revoked = new Set(releases);
    const counts = store.desiredCountsByRelease();
    return {
      releases,
      channels: store
        .listChannels()
        .filter((c) => revoked.has(c.releaseId))
        .map((c) => `${c.model}/${c.channel}`),
      devices: releases.reduce((n, id) => n + (counts.get(id) ?? 0), 0),
    };
  }

  // ---- keys ----

  addKey(input: { key: unknown; name?: string | undefined }, actor: string) {
    const latest = this.deps.store.latestTrustDocument();
    if (latest) {
      // Devices trust the signed document, not this table: a key added here alone would let the
      // coordinator accept releases every device then refuses.
      throw new OtaError(
        'E_CONFLICT',
        `the trusted keys are set by the signed trust document version ${latest.version}; add a key with a rotation: \`otactl key rotate --keys ... --sign-with ...\` (docs/security.md)`,
      );
    }
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
      const affected = this.revokedReleases();
      this.audit([{ actor, action: 'key.revoked', subject: `key:${keyId}`, details: { revokedReleases: affected } }]);
      return { result: { keyId, revoked: true, affected } };
    });
  }

  // ---- trust documents (docs/security.md, "Signed trust rotation") ----

  /**
   * Publishes a signed trust document: checked as a device checks it against the coordinator's
   * held trust (threshold of the held keys and of its own, shared/trust.ts), the next version,
   * not expired. Stored and audited in one transaction that also signs every device's desired
   * state again, now carrying it; from then on the coordinator counts its keys (less revoked ones).
   */
  publishTrust(value: unknown, actor: string) {
    const { store } = this.deps;
    const held = this.heldTrust();
    const accepted = verifyTrustUpdate(value, held);
    const { document } = accepted;
    if (document.version !== held.version + 1) {
      throw new OtaError(
        'E_TRUST_VERSION',
        `trust document version ${document.version} is not the next one: the coordinator holds version ${held.version}, so publish version ${held.version + 1}`,
      );
    }
    const now = this.deps.now();
    checkTrustFresh(accepted.held, now);
    return this.write(() => {
      const record = store.addTrustDocument({
        version: document.version,
        envelope: accepted.envelope,
        publishedBy: actor,
        publishedAt: now.toISOString(),
      });
      // Its keys are known here too (key ls, key revoke).
      const known = new Set(store.listKeys().map((k) => k.keyId));
      for (const k of document.keys) {
        if (!known.has(k.keyId)) {
          store.addKey({
            keyId: k.keyId,
            publicKey: k.publicKey,
            name: `trust v${document.version}`,
            now: now.toISOString(),
          });
        }
      }
      this.deps.desired.trustChanged();
      const affected = this.revokedReleases();
      this.audit([
        {
          actor,
          action: 'trust.published',
          subject: `trust:${document.version}`,
          details: {
            version: document.version,
            keys: document.keys.map((k) => k.keyId),
            threshold: document.threshold,
            expiresAt: document.expiresAt ?? null,
            signedBy: [...new Set(accepted.envelope.signatures.map((s) => s.keyId))],
            revokedReleases: affected,
          },
        },
      ]);
      return {
        result: { ...this.trustView(), publishedBy: record.publishedBy, publishedAt: record.publishedAt, affected },
        // Every device learns it, also those with no model assigned.
        desiredFor: store.deviceIds(),
      };
    });
  }

  /** `trust show`: the trust in force, and how many devices report holding it. */
  trustView() {
    const { store } = this.deps;
    const latest = store.latestTrustDocument();
    const held = this.heldTrust();
    const trust = this.releaseTrust();
    const counted = new Set(trust.policy.keys.map((k) => k.keyId));
    const devices = { atVersion: 0, behind: 0, unknown: 0 };
    for (const d of store.eachDevice()) {
      const v = d.lastReport?.trust?.version;
      if (v === undefined) devices.unknown++;
      else if (v >= held.version) devices.atVersion++;
      else devices.behind++;
    }
    return {
      version: held.version,
      threshold: trust.policy.threshold,
      keys: held.keys.map((k) => ({ id: k.keyId, counted: counted.has(k.keyId) })),
      expiresAt: held.expiresAt,
      publishedBy: latest?.publishedBy ?? null,
      publishedAt: latest?.publishedAt ?? null,
      devices,
    };
  }

  private credentialsChanged(who: SessionOwner): void {
    this.deps.onCredentialsChanged?.(who);
  }

  /** Changes to the broker's clients, one at a time: two adds of one id must not interleave. */
  private identityChanges: Promise<unknown> = Promise.resolve();

  /** Runs `fn` in turn with the changes to the broker's clients (the start's reconcile). */
  inIdentityTurn<T>(fn: () => Promise<T>): Promise<T> {
    return this.inTurn(fn);
  }

  private inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.identityChanges.then(fn, fn);
    this.identityChanges = next.catch(() => {});
    return next;
  }

  /**
   * Creates `who` in the broker, then runs `commit`; when the commit fails the broker's client is
   * removed again, so the broker never lets in a principal the store does not have.
   */
  private async provisioned<T>(who: SessionOwner, token: string, commit: () => T): Promise<T> {
    const identity = this.deps.brokerIdentity;
    if (!identity) return commit();
    return this.inTurn(async () => {
      // Refused before the broker is asked: the commit would refuse it anyway.
      if (who.kind === 'device' ? this.deps.store.getDevice(who.deviceId) : this.deps.store.getOperator(who.name)) {
        return commit();
      }
      if (who.kind === 'device') await identity.addDevice(who.deviceId, token);
      else await identity.addOperator(who.name, token);
      try {
        return commit();
      } catch (err) {
        await (who.kind === 'device' ? identity.removeDevice(who.deviceId) : identity.removeOperator(who.name)).catch(
          () => {},
        );
        throw err;
      }
    });
  }

  /** Removes `who` from the broker after `commit` (which ends its sessions there too). */
  private async deprovisioned<T>(who: SessionOwner, commit: () => T): Promise<T> {
    const identity = this.deps.brokerIdentity;
    if (!identity) return commit();
    return this.inTurn(async () => {
      const result = commit();
      // The store no longer has it, so nothing it sends is taken; a removal that fails here is
      // retried at the next start (DynsecIdentity.reconcile) and said in the reply.
      try {
        await (who.kind === 'device' ? identity.removeDevice(who.deviceId) : identity.removeOperator(who.name));
        // Once more now that its session is gone: what it published between the commit and the
        // broker's removal (a retained status) is cleared too.
        this.credentialsChanged(who);
      } catch (err) {
        throw new OtaError(
          'E_BROKER',
          `${who.kind === 'device' ? `device ${who.deviceId}` : `operator ${who.name}`} is removed here, but the broker did not confirm removing its client (${(err as Error).message}); the coordinator removes it again at its next start`,
        );
      }
      return result;
    });
  }

  // ---- operators ----

  addOperator(name: string, role: Role, actor: string): Promise<{ name: string; role: Role; token: string }> {
    assertSafeName('client id', name);
    if (this.deps.store.getDevice(name)) {
      // An operator's MQTT client ids are `name` and `name@...` (broker/acl.ts); a device id never
      // holds `@`, so only the bare name can be a device's client id.
      throw new OtaError('E_CONFLICT', `operator name ${name} clashes with device ${name}; pick another name`);
    }
    const token = newToken();
    return this.provisioned({ kind: 'operator', name }, token, () =>
      this.write(() => {
        this.deps.store.addOperator({ name, role, tokenHash: hashToken(token), now: this.deps.now().toISOString() });
        this.audit([{ actor, action: 'operator.added', subject: `operator:${name}`, details: { role } }]);
        return { result: { name, role, token } };
      }),
    );
  }

  /**
   * Removes an operator account: its token stops working and its sessions end at once. Nobody
   * removes or demotes themselves, so an admin always remains (only an admin may do either).
   */
  removeOperator(name: string, actor: string): Promise<{ name: string; removed: true }> {
    this.refuseSelf(name, actor, 'remove');
    return this.deprovisioned({ kind: 'operator', name }, () => {
      const result = this.write(() => {
        if (!this.deps.store.removeOperator(name)) throw this.noOperator(name);
        this.audit([{ actor, action: 'operator.removed', subject: `operator:${name}`, details: {} }]);
        return { result: { name, removed: true as const } };
      });
      this.credentialsChanged({ kind: 'operator', name });
      return result;
    });
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
    const token = newToken();
    return this.provisioned({ kind: 'device', deviceId: id }, token, () => this.enrol(input, token, actor));
  }

  private enrol(
    input: { id: string; labels?: Record<string, string> | undefined; channel?: string | undefined },
    token: string,
    actor: string,
  ) {
    const id = assertSafeName('device id', input.id);
    const channel = input.channel ?? 'stable';
    assertSafeName('device id', channel);
    if (this.deps.store.getOperator(id)) {
      // That id is the operator's own MQTT client id (its name; its others are `name@...`).
      throw new OtaError('E_CONFLICT', `device id ${id} clashes with operator ${id}'s client id; pick another id`);
    }
    const { store } = this.deps;
    const labels = input.labels ?? {};
    const trust = this.releaseTrust();
    const plan = planEnrol(
      { id, labels, channel, tokenHash: hashToken(token) },
      store
        .listChannels()
        .filter((c) => c.channel === channel)
        .map((c) => {
          const release = store.getRelease(c.releaseId);
          return { ...c, revoked: release ? !releaseEligibility(release, trust).eligible : false };
        }),
      actor,
    );
    // (An id enrolled again was removed first, and removeDevice ended its sessions.)
    this.executor.commit(plan, this.deps.now().toISOString());
    const device = store.getDevice(id) as DeviceRecord;
    // After a rotation: the keys of the document in force and its version, so the agent skips the
    // documents before it (their signers are not its keys). Before: the keys counted now.
    const latest = this.latestTrust();
    const policy = latest ? latest.held : this.trustPolicy();
    const agentConfig = {
      deviceId: id,
      ...this.deps.agentConfigBase(),
      token,
      trustedKeys: policy.keys.map((k) => publicKeyToJson(k)),
      threshold: policy.threshold,
      ...(latest ? { trustVersion: latest.held.version } : {}),
    };
    return { device, token, agentConfig };
  }

  /** Removes a device: its token stops working and its session ends at once. */
  removeDevice(id: string, actor: string) {
    return this.deprovisioned({ kind: 'device', deviceId: id }, () => {
      const result = this.write(() => {
        if (!this.deps.store.removeDevice(id)) {
          throw new OtaError('E_NOT_FOUND', `no device ${JSON.stringify(id)}: see \`otactl device ls\``);
        }
        this.audit([{ actor, action: 'device.removed', subject: `device:${id}`, details: {} }]);
        return { result: { id, removed: true } };
      });
      this.credentialsChanged({ kind: 'device', deviceId: id });
      return result;
    });
  }

  showDevice(id: string): DeviceRecord & { desired: DesiredRecord[]; history: HistoryRecord[] } {
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
  /**
   * Everything about a release that can be decided without its bytes: the signatures against the
   * trusted, non-revoked keys and the threshold, the release not already published, and the
   * channel move (refused above CHANNEL_CONFIRM_ABOVE devices without `yes`). The HTTP upload asks
   * this before it reads the body, so a refused upload costs neither disk nor bandwidth;
   * publishRelease asks again once the bytes are in (a key may be revoked meanwhile).
   */
  checkRelease(input: { envelope: Envelope; channel: string | null; yes: boolean }, actor: string) {
    const { store } = this.deps;
    const policy = this.trustPolicy();
    if (policy.keys.length === 0) {
      throw new OtaError(
        'E_UNKNOWN_KEY',
        'no trusted release keys on the coordinator: add one first (`otactl key add release.key.pub`)',
      );
    }
    const { manifest } = verifyEnvelope(input.envelope, policy, { now: this.deps.now() });
    const id = releaseIdOf(manifest.model, manifest.version);
    if (store.getRelease(id)) throw new OtaError('E_CONFLICT', `release ${id} already exists; publish a new version`);
    // The channel move is planned (and confirmed) before the release is written, so a refused
    // move leaves nothing published; it is committed right after (nothing runs in between).
    let channelMove: ReturnType<typeof planChannelMove> | null = null;
    if (input.channel) {
      assertSafeName('device id', input.channel);
      channelMove = planChannelMove(
        { model: manifest.model, channel: input.channel, releaseId: id, yes: input.yes },
        {
          releaseExists: true,
          // Just verified against the keys counted now: not revoked.
          eligibility: { eligible: true },
          followers: this.followers(manifest.model, input.channel),
        },
        actor,
      );
    }
    return { manifest, id, channelMove };
  }

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
    const { manifest, id, channelMove } = this.checkRelease(input, actor);
    verifyArtifact(manifest, { size: input.size, sha256: input.sha256 });
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
  private followers(model: string, channel: string, releasing?: string): ChannelMoveSnapshot['followers'] {
    const { store } = this.deps;
    const ids = store
      .listDeviceSummaries()
      .filter((d) => d.channel === channel)
      .map((d) => d.id);
    // One read each for all the followers, not three per device (target-reads.ts).
    const desired = store.desiredReleasesOf(ids, model);
    const rollouts = store.activeRolloutIdsOf(ids, model);
    const experiments = store.runningExperimentIdsOf(ids, model);
    return ids.map((id) => ({
      id,
      desiredReleaseId: desired.get(id) ?? null,
      // A running experiment owns its devices like a rollout (docs/experiments.md).
      inRollout: rollouts.has(id) || (experiments.get(id) ?? []).some((e) => e !== releasing),
    }));
  }

  /**
   * Points a channel at a release and re-targets every device that follows the channel, except
   * those in an active rollout of the model (the rollout owns them until it ends): planChannelMove.
   */
  /**
   * `options.releasing`: an experiment handing its devices over (experiment promote): its
   * ownership does not count, and `options.amend` adds its end to the same write plan.
   */
  setChannel(
    input: { model: string; channel: string; version: string; yes?: boolean | undefined },
    actor: string,
    options: { releasing?: string; amend?: (plan: WritePlan) => void } = {},
  ) {
    const { store } = this.deps;
    assertSafeName('device id', input.channel);
    const releaseId = releaseIdOf(input.model, input.version);
    const release = store.getRelease(releaseId);
    return this.commitChannelMove(
      planChannelMove(
        { model: input.model, channel: input.channel, releaseId, yes: input.yes === true },
        {
          releaseExists: release !== null,
          eligibility: release ? this.eligibility(release) : { eligible: true },
          followers: this.followers(input.model, input.channel, options.releasing),
        },
        actor,
      ),
      options.amend,
    );
  }

  private commitChannelMove({ move, plan }: ReturnType<typeof planChannelMove>, amend?: (plan: WritePlan) => void) {
    amend?.(plan);
    this.executor.commit(plan, this.deps.now().toISOString());
    const channel = this.deps.store.listChannels().find((c) => c.model === move.model && c.channel === move.channel);
    return {
      channel: channelView(channel as ChannelRecord),
      retargeted: move.retarget,
      skippedInRollout: move.inRollout,
    };
  }
}
