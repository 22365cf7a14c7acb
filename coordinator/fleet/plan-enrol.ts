import { emptyPlan, type WritePlan } from '../plan/write-plan.js';

/**
 * Enrolment (design section 6, the third writer of desired state): the device's row, and its
 * channel's release of every model that has one, unless that release is revoked (`revoked`:
 * release-trust.ts; it is left out and the audit row names it). Pure: the channel pointers in,
 * one plan out.
 */
export function planEnrol(
  input: { id: string; labels: Record<string, string>; channel: string; tokenHash: string },
  channelReleases: readonly { model: string; releaseId: string; revoked?: boolean }[],
  actor: string,
): WritePlan {
  const plan = emptyPlan();
  plan.createDevice = { id: input.id, labels: input.labels, channel: input.channel, tokenHash: input.tokenHash };
  const assigned = channelReleases.filter((c) => !c.revoked);
  const revoked = channelReleases.filter((c) => c.revoked).map((c) => c.releaseId);
  for (const ch of assigned) {
    plan.desired.push({
      kind: 'set',
      deviceId: input.id,
      model: ch.model,
      releaseId: ch.releaseId,
      rolloutId: null,
      source: 'enrolment',
    });
  }
  plan.audit.push({
    actor,
    action: 'device.enrolled',
    subject: `device:${input.id}`,
    details: {
      labels: input.labels,
      channel: input.channel,
      releases: assigned.map((c) => c.releaseId),
      ...(revoked.length > 0 ? { skippedRevoked: revoked } : {}),
    },
  });
  return plan;
}
