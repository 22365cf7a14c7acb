import type { Rollout } from '../../coordinator/rollout/types.js';

/**
 * A rollout record as the store keeps it, for tests that build one by hand: running, at its first
 * wave, created by alice; `releaseId` from the model and version, `updatedAt` = `createdAt`
 * unless given.
 */
export function rolloutRecord(
  fields: Pick<Rollout, 'id' | 'model' | 'version' | 'strategy' | 'createdAt'> & Partial<Rollout>,
): Rollout {
  return {
    releaseId: `${fields.model}@${fields.version}`,
    channel: 'stable',
    status: 'running',
    currentWave: 0,
    acknowledgedFailures: 0,
    promoted: false,
    haltReason: null,
    abortPolicy: null,
    createdBy: 'alice',
    updatedAt: fields.createdAt,
    ...fields,
  };
}
