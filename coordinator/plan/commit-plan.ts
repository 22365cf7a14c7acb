import type { AuditEvent } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import type { DesiredPublisher, DesiredStates, OutgoingMessage } from '../desired/desired-publisher.js';
import { type Store, WRITE_BEHIND } from '../store/store.js';
import type { WritePlan } from './write-plan.js';

export interface PlanExecutorDeps {
  store: Store;
  desired: DesiredPublisher;
  topics: Topics;
  /** `messages` in order, and `desired` (signed as they go out; a wave's in its own lane: OrderedPublisher). */
  publish: (messages: OutgoingMessage[], desired?: DesiredStates) => Promise<void>;
  onAudit?: (events: AuditEvent[]) => void;
}

/**
 * The one executor of write plans (write-plan.ts): every row, desired-state change, channel move
 * and audit row of a plan in ONE SQLite transaction (durable unless the plan says otherwise),
 * the devices' desired states issued inside it (their seq bumps commit with the change; a seq
 * floor first moves the device's seq up, then its unchanged desired state is issued above it; each
 * is signed when the publisher takes it: desired-publisher.ts), then, after the commit, the
 * desired states, what the caller adds (`after`: e.g. the rollout summary, computed once the
 * commit went through) and the audit events are handed to the publisher together. Each topic
 * keeps its order; across topics, through an external broker a wave's desired states go out in
 * a lane of their own beside the rest, so its summary and audit events need not wait for its
 * last device (ordered-publisher.ts). A plan that fails to write publishes nothing.
 */
export class PlanExecutor {
  constructor(private readonly deps: PlanExecutorDeps) {}

  commit(plan: WritePlan, now: string, after?: () => OutgoingMessage[]): AuditEvent[] {
    const { store, desired } = this.deps;
    let audit: AuditEvent[] = [];
    const messages = store.transaction(
      () => {
        if (plan.createDevice) store.addDevice({ ...plan.createDevice, now });
        if (plan.createRollout) store.createRollout(plan.createRollout.rollout, plan.createRollout.devices);
        if (plan.createExperiment) {
          store.createExperiment(plan.createExperiment.experiment, plan.createExperiment.devices);
        }
        if (plan.updateExperiment) store.updateExperiment(plan.updateExperiment);
        if (plan.rolloutPatch && Object.keys(plan.rolloutPatch.patch).length > 0) {
          store.updateRollout(plan.rolloutPatch.id, plan.rolloutPatch.patch);
        }
        if (plan.rolloutDevices && plan.rolloutDevices.devices.length > 0) {
          store.upsertRolloutDevices(plan.rolloutDevices.rolloutId, plan.rolloutDevices.devices);
        }
        const touched: string[] = [];
        for (const change of plan.desired) {
          touched.push(change.deviceId);
          if (change.kind === 'set') {
            store.setDesired({
              deviceId: change.deviceId,
              model: change.model,
              releaseId: change.releaseId,
              rolloutId: change.rolloutId,
              source: change.source,
              updatedAt: now,
            });
          } else {
            store.removeDesired(change.deviceId, change.model);
          }
        }
        for (const move of plan.channelMoves) store.setChannel({ ...move, now });
        for (const floor of plan.seqFloors) {
          if (store.raiseDesiredSeq(floor.deviceId, floor.seq)) touched.push(floor.deviceId);
        }
        audit = plan.audit.length > 0 ? store.appendAudit(plan.audit, now) : [];
        return desired.prepare(touched);
      },
      plan.durable ? {} : WRITE_BEHIND,
    );
    this.deps.onAudit?.(audit);
    const extra = after ? after() : [];
    void this.deps.publish(
      [...extra, ...audit.map((e) => ({ topic: this.deps.topics.audit(), payload: encodePayload(e), retain: false }))],
      messages,
    );
    return audit;
  }
}
