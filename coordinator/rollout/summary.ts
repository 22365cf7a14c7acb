import type { ModelState, RolloutSummary } from '../../shared/messages.js';
import { asIndex, currentWaveComplete, effectiveApproval, failureStats } from './decide.js';
import type { DeviceIndex, WaveTally } from './device-index.js';
import type { Rollout, RolloutDevice } from './types.js';

type WaveSummary = RolloutSummary['waves'][number];

/**
 * The retained rollout summary (RolloutSummarySchema). A pure function of the stored rows:
 * `updatedAt` is the rollout's own `updatedAt`, so republishing after a restart gives the same
 * message; `now` is accepted for the shell's convenience and not needed for any field.
 */
export function summarize(
  rollout: Rollout,
  devices: readonly RolloutDevice[] | DeviceIndex,
  _now: string,
): RolloutSummary {
  // From the wave tallies: O(waves), whatever the size of the rollout.
  const tallies = asIndex(rollout, devices).waves;
  const stats = failureStats(rollout, tallies);
  const waves = rollout.strategy.waves.map((spec, index): WaveSummary => {
    const tally = tallies[index];
    const counts: Partial<Record<ModelState, number>> = {};
    for (const [state, n] of Object.entries(tally?.counts ?? {}) as [RolloutDevice['state'], number][]) {
      if (n === 0 || state === 'pending' || state === 'reverted') continue;
      const key: ModelState = state === 'assigned' ? 'idle' : state;
      counts[key] = (counts[key] ?? 0) + n;
    }
    return {
      index,
      percent: spec.percent,
      approval: effectiveApproval(rollout, index),
      state: waveState(rollout, tallies, index),
      devices: tally?.members ?? 0,
      counts,
    };
  });
  return {
    rolloutId: rollout.id,
    model: rollout.model,
    version: rollout.version,
    status: rollout.status,
    currentWave: rollout.currentWave,
    maxFailureRate: rollout.strategy.maxFailureRate,
    failures: { count: stats.count, acknowledged: stats.acknowledged, assigned: stats.assigned, rate: stats.rate },
    waves,
    haltReason: rollout.haltReason === null ? null : rollout.haltReason.slice(0, 2000),
    updatedAt: rollout.updatedAt,
  };
}

function waveState(rollout: Rollout, tallies: readonly WaveTally[], index: number): WaveSummary['state'] {
  const current = rollout.currentWave;
  if (index < current) return 'completed';
  if (index > current) {
    return index === current + 1 && rollout.status === 'waiting_approval' ? 'waiting_approval' : 'pending';
  }
  switch (rollout.status) {
    case 'completed':
    case 'waiting_approval':
      return 'completed';
    case 'running':
      return 'running';
    default:
      // halted or aborted: show whether its live devices all finished.
      return currentWaveComplete(rollout, tallies) ? 'completed' : 'running';
  }
}
