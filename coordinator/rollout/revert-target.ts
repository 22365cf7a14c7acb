import type { ReportedModel } from '../../shared/messages.js';
import { releaseIdOf } from '../../shared/release-id.js';

/**
 * Where an abort sends a device back (design section 6: "a revert goes back to the release the
 * device last ran healthy, never to one that failed on it"). Read from what the device itself
 * reports for the model, not from its desired state: a desired state can name a candidate that
 * failed its probe there (an earlier rollout aborted with `keep`), while the device kept running
 * the release before it.
 *
 * What it runs: `current` (what `models/<name>/current` points at), except while it is applying or
 * probing an update, when `current` may already point at the unproven candidate and
 * `previousVersion` is the release it ran before the swap, and likewise after a failure that left
 * the failed version as `current` (its rollback failed). In every other state `current` has passed
 * its probe on this device, or the agent swapped back to it after a failed one.
 *
 * Returns `undefined` when the device never reported the model (unknown: the caller keeps what it
 * knew), `null` when it runs no release of it, else the release id.
 */
export function runningRelease(model: string, report: ReportedModel | undefined): string | null | undefined {
  if (!report) return undefined;
  // A failure whose `current` is still the version that failed (a rollback that could not swap
  // back, E_ROLLBACK) does not vouch for it: the release before it is the last one known healthy.
  const unproven =
    report.state === 'applying' ||
    report.state === 'probing' ||
    ((report.state === 'failed' || report.state === 'rolled_back') && report.current === report.version);
  const version = unproven ? report.previousVersion : report.current;
  return version === null ? null : releaseIdOf(model, version);
}

/**
 * The revert target of a device, given the release it runs: that release when the coordinator
 * can send it (published here: a side-loaded version cannot be signed into a desired state; and
 * not revoked since, which the caller's `isPublished` folds in: docs/security.md), else null (the
 * entry is removed and the agent keeps what it runs). A device that never reported the
 * model is the planner's case (its desired state before the rollout, plan-create.ts).
 */
export function revertTarget(running: string | null, isPublished: (releaseId: string) => boolean): string | null {
  return running !== null && isPublished(running) ? running : null;
}
