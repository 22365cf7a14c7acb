import { isOutcome } from '../../shared/states.js';

/**
 * What an operator watching a rollout looks at first: a failed device (or any other outcome but
 * healthy) 0, an unfinished one 1, a healthy one 2. `rollout.status` with `order: 'attention'`
 * and otactl's `--watch` sort by it, then by device id.
 */
export function attentionRank(state: string): number {
  if (!isOutcome(state)) return 1;
  return state === 'healthy' ? 2 : 0;
}
