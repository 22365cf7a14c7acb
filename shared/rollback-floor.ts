import { OtaError } from './errors.js';
import type { Manifest } from './manifest.js';

/**
 * Rollback protection (design section 4, after TUF's version rule): a manifest's signed `floor`
 * is the lowest counter still allowed for its model. A device persists the highest floor it has
 * verified per model and refuses any release whose counter is below the effective floor, so an
 * attacker replaying an old signed release cannot downgrade it once the publisher raised the floor.
 */
export function effectiveFloor(persistedFloor: number, manifest: Pick<Manifest, 'floor'>): number {
  return Math.max(persistedFloor, manifest.floor);
}

export function checkRollbackFloor(
  manifest: Pick<Manifest, 'model' | 'counter' | 'floor'>,
  persistedFloor: number,
): void {
  const floor = effectiveFloor(persistedFloor, manifest);
  if (manifest.counter < floor) {
    throw new OtaError(
      'E_FLOOR',
      `release counter ${manifest.counter} of model ${manifest.model} is below the rollback floor ${floor}`,
    );
  }
}
