import { randomBytes } from 'node:crypto';
import { OtaError } from '../../shared/errors.js';
import type { AuditEvent, ModelState, Reported, RolloutSummary } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import type { DesiredPublisher, OutgoingMessage } from '../desired/desired-publisher.js';
import { PacedFlush } from '../paced-flush.js';
import { type Store, WRITE_BEHIND } from '../store/store.js';
import { type DeviceEvent, decide, decideBatch } from './decide.js';
import { LiveDeviceIndex } from './device-index.js';
import { planWaves } from './plan-waves.js';
import { validateStrategy } from './strategy.js';
import { summarize } from './summary.js';
import {
  type AuditDraft,
  type Decision,
  FAILED_DEVICE_STATES,
  type Rollout,
  type RolloutDevice,
  type RolloutEvent,
} from './types.js';

const ACTIVE = new Set(['running', 'waiting_approval', 'halted']);
const FAILURE_STATES: ReadonlySet<string> = new Set(FAILED_DEVICE_STATES);

export interface RolloutTarget {
  group?: string | undefined;
  devices?: string[] | undefined;
  selector?: Record<string, string> | undefined;
}

export interface CreateRolloutInput {
  model: string;
  version: string;
  target: RolloutTarget;
  strategy: unknown;
  channel?: string | undefined;
  id?: string | undefined;
}

export interface RolloutServiceDeps {
  store: Store;
  desired: DesiredPublisher;
  topics: Topics;
  publish: (messages: OutgoingMessage[]) => Promise<void>;
  now: () => Date;
  onAudit?: (events: AuditEvent[]) => void;
  onSummary?: (summary: RolloutSummary) => void;
  onError?: (err: unknown, what: string) => void;
  /** Device events are decided at most once per this many ms under load (PacedFlush); default 20. */
  decideEveryMs?: number;
}

interface Live {
  rollout: Rollout;
  /** The rollout's rows and wave tallies, kept in step with every commit. */
  devices: LiveDeviceIndex;
}

/**
 * The imperative shell around the pure rollout engine (design section 6): it loads a rollout,
 * asks `decide`, writes the decision (rollout patch, device rows, desired entries, channel move,
 * audit rows) in ONE SQLite transaction, then publishes the signed desired states, the retained
 * rollout summary and the audit events. Active rollouts are kept in memory (loaded at start), so
 * a report costs one decision and one small transaction, not a reload of the rollout.
 *
 * Everything here is synchronous up to the publish: JavaScript runs one report at a time, so two
 * reports can never interleave inside a decision.
 */
export class RolloutService {
  private readonly live = new Map<string, Live>();
  private readonly queue = new Map<string, DeviceEvent[]>();
  private readonly pacer: PacedFlush;

  constructor(private readonly deps: RolloutServiceDeps) {
    this.pacer = new PacedFlush(
      () => this.decideQueued(),
      deps.decideEveryMs ?? 20,
      () => deps.now().getTime(),
    );
    for (const rollout of deps.store.listRollouts({ active: true })) this.load(rollout.id);
  }

  private load(id: string): Live | null {
    const cached = this.live.get(id);
    if (cached) return cached;
    const rollout = this.deps.store.getRollout(id);
    if (!rollout) return null;
    const entry: Live = {
      rollout,
      devices: new LiveDeviceIndex(this.deps.store.rolloutDevices(id), rollout.strategy.waves.length),
    };
    if (ACTIVE.has(rollout.status)) this.live.set(id, entry);
    return entry;
  }

  private mustLoad(id: string): Live {
    const entry = this.load(id);
    if (!entry) throw new OtaError('E_NOT_FOUND', `no rollout ${JSON.stringify(id)}: see \`otactl rollout ls\``);
    return entry;
  }

  /** Resolves a target to device ids; names that do not resolve are listed in the error. */
  resolveTarget(target: RolloutTarget): string[] {
    const { store } = this.deps;
    const given = [target.group, target.devices, target.selector].filter((v) => v !== undefined).length;
    if (given !== 1) {
      throw new OtaError('E_USAGE', 'name exactly one target: a group, a device list, or a label selector');
    }
    let ids: string[];
    if (target.group !== undefined) {
      const group = store.getGroup(target.group);
      if (!group)
        throw new OtaError('E_NOT_FOUND', `no group ${JSON.stringify(target.group)}: see \`otactl group ls\``);
      if (group.devices) ids = group.devices;
      else ids = this.select(group.selector ?? {});
    } else if (target.devices !== undefined) {
      ids = target.devices;
    } else {
      ids = this.select(target.selector ?? {});
    }
    const unknown = ids.filter((id) => !store.getDevice(id));
    if (unknown.length > 0) {
      throw new OtaError(
        'E_NOT_FOUND',
        `${unknown.length} device name(s) do not resolve: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? ', ...' : ''}; enrol them (\`otactl device add\`) or fix the target`,
      );
    }
    const unique = [...new Set(ids)];
    if (unique.length === 0) throw new OtaError('E_NOT_FOUND', 'the target resolves to no devices');
    return unique;
  }

  private select(selector: Record<string, string>): string[] {
    const pairs = Object.entries(selector);
    return this.deps.store
      .listDevices()
      .filter((d) => pairs.every(([k, v]) => d.labels[k] === v))
      .map((d) => d.id);
  }

  create(input: CreateRolloutInput, actor: string): RolloutSummary {
    this.flush();
    const { store } = this.deps;
    const strategy = validateStrategy(input.strategy);
    const releaseId = `${input.model}@${input.version}`;
    if (!store.getRelease(releaseId)) {
      throw new OtaError(
        'E_NOT_FOUND',
        `no release ${releaseId}: publish it first (\`otactl release publish\`), see \`otactl release ls\``,
      );
    }
    const deviceIds = this.resolveTarget(input.target);
    const busy: string[] = [];
    for (const id of deviceIds) {
      for (const other of store.activeRolloutsFor(id, input.model)) busy.push(`${id} (in ${other.id})`);
    }
    if (busy.length > 0) {
      throw new OtaError(
        'E_CONFLICT',
        `${busy.length} device(s) are already in an active rollout of ${input.model}: ${busy.slice(0, 20).join(', ')}; finish or abort that rollout first`,
      );
    }
    const id = input.id ?? `ro-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    if (store.getRollout(id)) throw new OtaError('E_CONFLICT', `rollout ${id} already exists`);
    const now = this.deps.now().toISOString();
    const waves = planWaves(deviceIds, strategy, id);
    const rollout: Rollout = {
      id,
      model: input.model,
      version: input.version,
      releaseId,
      channel: input.channel ?? 'stable',
      strategy,
      status: 'running',
      currentWave: 0,
      acknowledgedFailures: 0,
      haltReason: null,
      abortPolicy: null,
      promoted: false,
      createdBy: actor,
      createdAt: now,
      updatedAt: now,
    };
    const devices: RolloutDevice[] = deviceIds.map((deviceId) => {
      const device = store.getDevice(deviceId);
      return {
        deviceId,
        wave: waves.get(deviceId) ?? 0,
        state: 'pending',
        online: device?.online ?? false,
        previousReleaseId: store.getDesired(deviceId, input.model)?.releaseId ?? null,
        assignedAt: null,
        finishedAt: null,
        error: null,
      };
    });
    const created: AuditDraft = {
      actor,
      action: 'rollout.created',
      subject: `rollout:${id}`,
      details: {
        rolloutId: id,
        model: input.model,
        version: input.version,
        devices: deviceIds.length,
        strategy,
        channel: rollout.channel,
      },
    };
    const entry: Live = { rollout, devices: new LiveDeviceIndex(devices, strategy.waves.length) };
    const decision = decide(rollout, entry.devices, { type: 'start' }, now);
    this.commit(entry, decision, now, () => {
      store.createRollout(rollout, devices);
      return [created];
    });
    this.live.set(id, entry);
    return summarize(entry.rollout, entry.devices, now);
  }

  /** approve / promote / halt / resume / abort: E_ROLLOUT_STATE when it does not apply now. */
  act(id: string, event: Extract<RolloutEvent, { actor: string }>): RolloutSummary {
    this.flush();
    const entry = this.mustLoad(id);
    const now = this.deps.now().toISOString();
    const decision = decide(entry.rollout, entry.devices, event, now);
    this.commit(entry, decision, now);
    return summarize(entry.rollout, entry.devices, now);
  }

  status(id: string): { summary: RolloutSummary; rollout: Rollout; devices: RolloutDevice[] } {
    this.flush();
    const entry = this.mustLoad(id);
    return {
      summary: summarize(entry.rollout, entry.devices, this.deps.now().toISOString()),
      rollout: entry.rollout,
      devices: entry.devices.values(),
    };
  }

  /** A device report: every model entry that names an active rollout it belongs to. */
  onReport(deviceId: string, report: Reported): void {
    for (const [model, entry] of Object.entries(report.models)) {
      if (!entry.rolloutId) continue;
      const live = this.live.get(entry.rolloutId);
      if (!live || live.rollout.model !== model || !live.devices.byId.has(deviceId)) continue;
      this.enqueue(
        live.rollout.id,
        {
          type: 'report',
          deviceId,
          state: entry.state as ModelState,
          version: entry.version ?? '',
          error: entry.error ?? null,
        },
        // A failure may trip the halt rule: decided on the next turn, not after the batch interval.
        FAILURE_STATES.has(entry.state),
      );
    }
  }

  onPresence(deviceId: string, online: boolean): void {
    for (const live of this.live.values()) {
      if (live.devices.byId.has(deviceId)) this.enqueue(live.rollout.id, { type: 'presence', deviceId, online });
    }
  }

  /**
   * Device events are decided in batches: everything that arrived since the previous decision
   * goes into the next one (decideBatch: one decision, one transaction, one summary per
   * rollout), at most one batch per `decideEveryMs` (PacedFlush). Under light load a batch is one
   * event, decided on the next turn of the event loop; under a 10,000-device wave it is hundreds.
   */
  private enqueue(rolloutId: string, event: DeviceEvent, urgent = false): void {
    const list = this.queue.get(rolloutId);
    if (list) list.push(event);
    else this.queue.set(rolloutId, [event]);
    this.pacer.schedule(urgent);
  }

  /** Decides every queued device event now (also before an operator's command sees the rollout). */
  flush(): void {
    this.pacer.run();
  }

  private decideQueued(): void {
    const queued = [...this.queue];
    this.queue.clear();
    for (const [id, events] of queued) {
      const live = this.live.get(id);
      if (!live) continue;
      const now = this.deps.now().toISOString();
      try {
        this.commit(live, decideBatch(live.rollout, live.devices, events, now), now);
      } catch (err) {
        this.deps.onError?.(err, `deciding ${events.length} device event(s) of rollout ${id}`);
      }
    }
  }

  /** At start: every rollout summary again (the embedded broker's retained messages are in memory only). */
  summaries(): OutgoingMessage[] {
    const now = this.deps.now().toISOString();
    return this.deps.store.listRollouts().map((r) => {
      const entry = this.load(r.id) as Live;
      return this.summaryMessage(summarize(entry.rollout, entry.devices, now));
    });
  }

  private summaryMessage(summary: RolloutSummary): OutgoingMessage {
    return { topic: this.deps.topics.rollout(summary.rolloutId), payload: encodePayload(summary), retain: true };
  }

  private isEmpty(decision: Decision): boolean {
    return (
      Object.keys(decision.patch).length === 0 &&
      decision.devices.length === 0 &&
      decision.assignments.length === 0 &&
      decision.audit.length === 0 &&
      decision.channelMove === null
    );
  }

  /** Writes a decision in one transaction, updates the cache, then publishes. */
  private commit(entry: Live, decision: Decision, now: string, before?: () => AuditDraft[]): void {
    if (!before && this.isEmpty(decision)) return;
    const { store, desired } = this.deps;
    const { rollout } = entry;
    let audit: AuditEvent[] = [];
    // A decision that only moves device rows (a report or presence that changed no wave, no
    // rollout field, no assignment, no audit row) is re-derived from the reports the agents send
    // again, so it skips its own fsync (WRITE_BEHIND); the next durable commit syncs it too.
    // Everything else (a wave started, a halt, an operator's action) is durable before it is
    // published.
    const durable =
      before !== undefined ||
      Object.keys(decision.patch).some((key) => key !== 'updatedAt') ||
      decision.assignments.length > 0 ||
      decision.audit.length > 0 ||
      decision.channelMove !== null;
    const messages = store.transaction(
      () => {
        const drafts = before ? before() : [];
        if (Object.keys(decision.patch).length > 0) store.updateRollout(rollout.id, decision.patch);
        if (decision.devices.length > 0) store.upsertRolloutDevices(rollout.id, decision.devices);
        const touched: string[] = [];
        for (const a of decision.assignments) {
          touched.push(a.deviceId);
          if (a.kind === 'assign') {
            store.setDesired({
              deviceId: a.deviceId,
              model: rollout.model,
              releaseId: a.releaseId,
              rolloutId: rollout.id,
              source: 'rollout',
              updatedAt: now,
            });
          } else if (a.releaseId) {
            store.setDesired({
              deviceId: a.deviceId,
              model: rollout.model,
              releaseId: a.releaseId,
              rolloutId: null,
              source: 'revert',
              updatedAt: now,
            });
          } else {
            store.removeDesired(a.deviceId, rollout.model);
          }
        }
        if (decision.channelMove) {
          const { channel, model, releaseId } = decision.channelMove;
          store.setChannel({ model, channel, releaseId, now });
          drafts.push({
            actor: 'coordinator',
            action: 'channel.moved',
            subject: `channel:${model}/${channel}`,
            details: { rolloutId: rollout.id, model, channel, releaseId },
          });
        }
        audit = store.appendAudit([...drafts, ...decision.audit], now);
        return desired.prepare(touched);
      },
      durable ? {} : WRITE_BEHIND,
    );
    // The transaction committed: now the cache may change.
    Object.assign(rollout, decision.patch);
    entry.devices.apply(decision.devices);
    if (!ACTIVE.has(rollout.status)) this.live.delete(rollout.id);
    const summary = summarize(rollout, entry.devices, now);
    this.deps.onAudit?.(audit);
    this.deps.onSummary?.(summary);
    const out = [
      ...messages,
      this.summaryMessage(summary),
      ...audit.map((e) => ({ topic: this.deps.topics.audit(), payload: encodePayload(e), retain: false })),
    ];
    void this.deps.publish(out);
  }
}
