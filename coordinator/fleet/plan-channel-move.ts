import { OtaError } from '../../shared/errors.js';
import { emptyPlan, type WritePlan } from '../plan/write-plan.js';
import { assertAssignable, type Eligibility } from './release-trust.js';

/**
 * Above this many devices, a channel move re-targets only with `yes: true` (design section 6),
 * whichever command moves it: `channel set` or `release publish --channel`.
 */
export const CHANNEL_CONFIRM_ABOVE = 5;

/** What `planChannelMove` reads: the channel's followers as the store has them now. */
export interface ChannelMoveSnapshot {
  releaseExists: boolean;
  /** Whether the release may still be assigned (release-trust.ts: not revoked). */
  eligibility: Eligibility;
  followers: readonly {
    id: string;
    /** The release its desired state names for the model, or null. */
    desiredReleaseId: string | null;
    /** In an active rollout of the model: the rollout owns it until it ends. */
    inRollout: boolean;
  }[];
}

export interface ChannelMove {
  model: string;
  channel: string;
  releaseId: string;
  /** Devices whose desired state the move changes. */
  retarget: string[];
  /** Followers left to the rollout that owns them. */
  inRollout: string[];
}

/**
 * The one confirmation rule for moving a channel, with one message, checked before anything is
 * written (so fleet scripts on the command API or POST /releases get it too).
 */
export function confirmChannelMove(
  move: { model: string; channel: string; releaseId: string; retarget: number },
  yes: boolean,
): void {
  if (move.retarget <= CHANNEL_CONFIRM_ABOVE || yes) return;
  throw new OtaError(
    'E_USAGE',
    `moving channel ${move.channel} of ${move.model} to ${move.releaseId} re-targets ${move.retarget} devices at once (more than ${CHANNEL_CONFIRM_ABOVE}), so nothing was changed: confirm with --yes (command API: "yes": true; POST /releases: X-Ota-Yes: true), or go in waves with \`otactl rollout create\``,
  );
}

/** Which followers a move re-targets (those on another release, not owned by a rollout). Pure. */
export function channelMoveTargets(
  model: string,
  channel: string,
  releaseId: string,
  followers: ChannelMoveSnapshot['followers'],
): ChannelMove {
  const inRollout = followers.filter((d) => d.inRollout).map((d) => d.id);
  const retarget = followers.filter((d) => !d.inRollout && d.desiredReleaseId !== releaseId).map((d) => d.id);
  return { model, channel, releaseId, retarget, inRollout };
}

/**
 * `channel set` (and `release publish --channel`), design section 6: the channel points at the
 * release and every follower not owned by an active rollout of the model is re-targeted at once,
 * after the confirmation rule. Pure: a snapshot in, one write plan out.
 */
export function planChannelMove(
  input: { model: string; channel: string; releaseId: string; yes: boolean },
  snapshot: ChannelMoveSnapshot,
  actor: string,
): { move: ChannelMove; plan: WritePlan } {
  if (!snapshot.releaseExists) {
    throw new OtaError(
      'E_NOT_FOUND',
      `no release ${input.releaseId}: see \`otactl release ls --model ${input.model}\``,
    );
  }
  // A revoked release is never assigned again (docs/security.md), checked before the confirmation.
  assertAssignable(snapshot.eligibility);
  const move = channelMoveTargets(input.model, input.channel, input.releaseId, snapshot.followers);
  confirmChannelMove({ ...move, retarget: move.retarget.length }, input.yes);
  const plan = emptyPlan();
  plan.channelMoves.push({ model: input.model, channel: input.channel, releaseId: input.releaseId });
  for (const deviceId of move.retarget) {
    plan.desired.push({
      kind: 'set',
      deviceId,
      model: input.model,
      releaseId: input.releaseId,
      rolloutId: null,
      source: 'channel',
    });
  }
  plan.audit.push({
    actor,
    action: 'channel.moved',
    subject: `channel:${input.model}/${input.channel}`,
    details: {
      model: input.model,
      channel: input.channel,
      releaseId: input.releaseId,
      retargeted: move.retarget.length,
      skippedInRollout: move.inRollout,
    },
  });
  return { move, plan };
}
