/**
 * Repeated looks at a running experiment without inflating false alarms. Pure.
 *
 * Looking at a p-value every hour and stopping the first time it dips below 0.05 makes a false
 * alarm near-certain over a long enough run (Armitage, McPherson & Rowe 1969: the repeated
 * significance test). Here the looks are planned in advance, and each gets its share of alpha:
 *
 * - Looks double in spacing: look k is at firstLookMs * 2^(k-1) after the start. An experiment of
 *   duration T has only 1 + log2(T / firstLookMs) looks, so the correction stays small for the
 *   late looks, which see the most devices and matter most; looks every hour would give look 100
 *   a hundredth of the budget of look 1 or worse.
 * - Look k tests at alpha * 6 / (pi^2 k^2). Since sum 1/k^2 = pi^2/6, the levels of all looks,
 *   however many, sum to alpha, and the Bonferroni (union) bound makes the chance of any false
 *   alarm over the whole run at most alpha. This needs no planned end: an experiment may run as
 *   long as it takes. Group-sequential boundaries such as O'Brien & Fleming's (1979), or alpha
 *   spending functions (Lan & DeMets 1983), are less conservative but must know the number of
 *   looks or the maximum information (devices) in advance, which a fleet experiment does not.
 */

function checkFirstLook(firstLookMs: number, fn: string): void {
  if (!(Number.isFinite(firstLookMs) && firstLookMs > 0))
    throw new RangeError(`${fn}: firstLookMs must be a positive number of milliseconds, got ${firstLookMs}`);
}

function checkLook(k: number, fn: string): void {
  if (!(Number.isSafeInteger(k) && k >= 1))
    throw new RangeError(`${fn}: the look index k must be an integer >= 1 (looks count from 1), got ${k}`);
}

/** When look k is planned, in ms after the start: firstLookMs * 2^(k-1) (exact: a power-of-2 scaling). */
export function lookTimeMs(k: number, firstLookMs: number): number {
  checkLook(k, 'lookTimeMs');
  checkFirstLook(firstLookMs, 'lookTimeMs');
  return firstLookMs * 2 ** (k - 1);
}

/**
 * The last planned look at or before elapsedMs: 0 before the first look, else
 * k = 1 + floor(log2(elapsedMs / firstLookMs)), found by doubling, which is exact (scaling by 2 is
 * exact in floating point; at most ~2,100 steps over the whole range of doubles, ~20 for months of
 * hourly-first looks). Not by Math.log2, whose rounding lands on the wrong side of a look: for
 * elapsedMs 23.999999999999996 and firstLookMs 3 it says look 4, at 24.
 */
export function lookIndexAt(elapsedMs: number, firstLookMs: number): number {
  checkFirstLook(firstLookMs, 'lookIndexAt');
  if (!Number.isFinite(elapsedMs))
    throw new RangeError(`lookIndexAt: elapsedMs must be a finite number of milliseconds, got ${elapsedMs}`);
  if (elapsedMs < firstLookMs) return 0;
  let k = 1;
  for (let next = firstLookMs * 2; next <= elapsedMs; next *= 2) k++;
  return k;
}

/** The significance level of look k: alpha * 6 / (pi^2 k^2); all looks together spend at most alpha. */
export function alphaForLook(k: number, alpha: number): number {
  checkLook(k, 'alphaForLook');
  if (!(alpha > 0 && alpha < 1))
    throw new RangeError(`alphaForLook: alpha must be strictly between 0 and 1 (e.g. 0.05), got ${alpha}`);
  return (alpha * 6) / (Math.PI * Math.PI * k * k);
}
