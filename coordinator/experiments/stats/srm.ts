import { chiSquared1Survival } from './normal.js';

/**
 * Sample-ratio mismatch (SRM): the arms hold a different share of devices than the assignment
 * intended. The comparison of the arms is then not to be trusted, whatever it says: something
 * decided which devices ended up in which arm (an arm's devices dropped out, failed to report,
 * or were assigned by a buggy split), and that something may be what differs (Fabijan et al.,
 * "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD 2019). The check is
 * Pearson's chi-squared goodness of fit with 1 degree of freedom, the test GrowthBook and Statsig
 * run (docs.statsig.com, "SRM Checks"), flagged at p < 0.001 by default: strict, because it runs
 * at every look and a false alarm stops a sound experiment. Pure.
 */

export interface SrmCheck {
  observed: [number, number];
  /** Devices each arm should hold: the observed total split by the intended shares. */
  expected: [number, number];
  chi2: number;
  p: number;
  flagged: boolean;
}

/** How far the intended shares may be from summing to 1 (decimal shares such as 0.7 + 0.3). */
const SHARE_SUM_TOLERANCE = 1e-9;

export function srmCheck(
  observed: readonly [number, number],
  shares: readonly [number, number],
  threshold = 0.001,
): SrmCheck {
  for (const [i, count] of observed.entries())
    if (!(Number.isSafeInteger(count) && count >= 0))
      throw new RangeError(`srmCheck: observed[${i}] is ${count}; pass each arm's device count (an integer >= 0)`);
  for (const [i, share] of shares.entries())
    if (!(share > 0 && share < 1))
      throw new RangeError(`srmCheck: shares[${i}] is ${share}; each arm's intended share must be between 0 and 1`);
  if (Math.abs(shares[0] + shares[1] - 1) > SHARE_SUM_TOLERANCE)
    throw new RangeError(`srmCheck: the shares ${shares[0]} and ${shares[1]} must sum to 1`);
  if (!(threshold > 0 && threshold < 1))
    throw new RangeError(`srmCheck: threshold must be strictly between 0 and 1 (e.g. 0.001), got ${threshold}`);
  const total = observed[0] + observed[1];
  const expected: [number, number] = [total * shares[0], total * shares[1]];
  if (total === 0) return { observed: [0, 0], expected, chi2: 0, p: 1, flagged: false };
  const chi2 = (observed[0] - expected[0]) ** 2 / expected[0] + (observed[1] - expected[1]) ** 2 / expected[1];
  const p = chiSquared1Survival(chi2);
  return { observed: [observed[0], observed[1]], expected, chi2, p, flagged: p < threshold };
}
