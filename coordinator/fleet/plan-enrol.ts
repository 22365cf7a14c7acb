import { emptyPlan, type WritePlan } from '../plan/write-plan.js';

/**
 * Enrolment (design section 6, the third writer of desired state): the device's row, and its
 * channel's release of every model that has one. Pure: the channel pointers in, one plan out.
 */
export function planEnrol(
  input: { id: string; labels: Record<string, string>; channel: string; tokenHash: string },
  channelReleases: readonly { model: string; releaseId: string }[],
  actor: string,
): WritePlan {
  const plan = emptyPlan();
  plan.createDevice = { id: input.id, labels: input.labels, channel: input.channel, tokenHash: input.tokenHash };
  for (const ch of channelReleases) {
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
    details: { labels: input.labels, channel: input.channel, releases: channelReleases.map((c) => c.releaseId) },
  });
  return plan;
}
