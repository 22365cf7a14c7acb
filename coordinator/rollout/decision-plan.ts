import { emptyPlan, type WritePlan } from '../plan/write-plan.js';
import type { Decision, Rollout } from './types.js';

/**
 * The write plan of one rollout decision: the rollout's fields, its device rows, the desired-state
 * changes of its assignments, the channel move on completion, and the audit rows. Pure.
 *
 * Durability: a decision that only moves device rows (a report or presence that changed no wave,
 * no rollout field, no assignment and no audit row) is re-derived from what agents send again,
 * so it is written behind; everything else (a wave started, a halt, an operator's action) is
 * durable before it is published.
 */
export function decisionPlan(rollout: Rollout, decision: Decision): WritePlan {
  const plan = emptyPlan();
  plan.rolloutPatch = { id: rollout.id, patch: decision.patch };
  plan.rolloutDevices = { rolloutId: rollout.id, devices: decision.devices };
  for (const a of decision.assignments) {
    if (a.kind === 'assign') {
      plan.desired.push({
        kind: 'set',
        deviceId: a.deviceId,
        model: rollout.model,
        releaseId: a.releaseId,
        rolloutId: rollout.id,
        source: 'rollout',
      });
    } else if (a.releaseId) {
      plan.desired.push({
        kind: 'set',
        deviceId: a.deviceId,
        model: rollout.model,
        releaseId: a.releaseId,
        rolloutId: null,
        source: 'revert',
      });
    } else {
      plan.desired.push({ kind: 'remove', deviceId: a.deviceId, model: rollout.model });
    }
  }
  if (decision.channelMove) {
    const { channel, model, releaseId } = decision.channelMove;
    plan.channelMoves.push({ model, channel, releaseId });
    plan.audit.push({
      actor: 'coordinator',
      action: 'channel.moved',
      subject: `channel:${model}/${channel}`,
      details: { rolloutId: rollout.id, model, channel, releaseId },
    });
  }
  plan.audit.push(...decision.audit);
  plan.durable =
    Object.keys(decision.patch).some((key) => key !== 'updatedAt') ||
    decision.assignments.length > 0 ||
    decision.audit.length > 0 ||
    decision.channelMove !== null;
  return plan;
}
