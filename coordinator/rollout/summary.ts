import type { RolloutSummary } from '../../shared/messages.js';
import type { RolloutDeviceState, WaveState } from '../../shared/states.js';
import { asIndex, currentWaveComplete, effectiveApproval, failureStats, waveNumber } from './decide.js';
import type { DeviceIndex, WaveTally } from './device-index.js';
import type { Rollout, RolloutDevice } from './types.js';

type WaveSummary = RolloutSummary['waves'][number];

/**
 * The retained rollout summary (RolloutSummarySchema). A pure function of the stored rows:
 * `updatedAt` is the rollout's own `updatedAt`, so republishing after a restart gives the same
 * message; `now` is accepted for the shell's convenience and not needed for any field.
 *
 * It shows what happened, whatever came after: an aborted rollout keeps its failures, each wave's
 * counts by device state and how many devices were set back (an abort with revert does not erase
 * an outcome). Waves are numbered from 1.
 */
export function summarize(
  rollout: Rollout,
  devices: readonly RolloutDevice[] | DeviceIndex,
  _now: string,
): RolloutSummary {
  // From the wave tallies: O(waves), whatever the size of the rollout.
  const tallies = asIndex(rollout, devices).waves;
  const stats = failureStats(rollout, tallies);
  let reverted = 0;
  const waves = rollout.strategy.waves.map((spec, index): WaveSummary => {
    const tally = tallies[index];
    const counts: Partial<Record<RolloutDeviceState, number>> = {};
    for (const [state, n] of Object.entries(tally?.counts ?? {}) as [RolloutDeviceState, number][]) {
      if (n > 0) counts[state] = n;
    }
    reverted += tally?.reverted ?? 0;
    return {
      wave: waveNumber(index),
      percent: spec.percent,
      approval: effectiveApproval(rollout, index),
      state: waveState(rollout, tallies, index),
      devices: tally?.members ?? 0,
      counts,
      reverted: tally?.reverted ?? 0,
      ...(spec.analysis ? { analysis: true } : {}),
    };
  });
  const a = rollout.analysis;
  const spec = rollout.strategy.analysis;
  return {
    id: rollout.id,
    model: rollout.model,
    version: rollout.version,
    status: rollout.status,
    currentWave: waveNumber(rollout.currentWave),
    maxFailureRate: rollout.strategy.maxFailureRate,
    failures: { count: stats.count, acknowledged: stats.acknowledged, assigned: stats.assigned, rate: stats.rate },
    waves,
    haltReason: rollout.haltReason === null ? null : rollout.haltReason.slice(0, 2000),
    abortPolicy: rollout.abortPolicy,
    reverted,
    ...(a && spec
      ? {
          analysis: {
            wave: waveNumber(a.wave),
            state: a.state,
            startedAt: a.startedAt,
            measurements: a.measurements,
            maxMeasurements: spec.measurements,
            failures: a.failures,
            failureLimit: spec.failureLimit,
            bakeTimeMs: spec.bakeTimeMs,
            detail: a.detail,
          },
        }
      : {}),
    updatedAt: rollout.updatedAt,
  };
}

/**
 * A wave before the current one completed; the current one is running, or stopped with the
 * rollout (halted, aborted) unless its live devices all finished; later ones are pending, waiting
 * at their gate, or skipped when the rollout ended before them.
 */
function waveState(rollout: Rollout, tallies: readonly WaveTally[], index: number): WaveState {
  const current = rollout.currentWave;
  if (index < current) return 'completed';
  if (index > current) {
    if (rollout.status === 'aborted') return 'skipped';
    return index === current + 1 && rollout.status === 'waiting_approval' ? 'waiting_approval' : 'pending';
  }
  switch (rollout.status) {
    case 'completed':
    case 'waiting_approval':
      return 'completed';
    case 'running':
      return 'running';
    case 'halted':
      return currentWaveComplete(rollout, tallies) ? 'completed' : 'halted';
    case 'aborted':
      return currentWaveComplete(rollout, tallies) ? 'completed' : 'aborted';
  }
}
