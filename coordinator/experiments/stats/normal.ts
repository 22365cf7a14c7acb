/**
 * The standard normal distribution, for the experiment statistics (docs: issue 15). Pure.
 *
 * Everything rests on erfc, computed so that the upper tail keeps its relative accuracy: a
 * p-value of 1e-10 must come out as 1e-10, not as 1 - 0.9999999999 (which has lost most of its
 * digits to cancellation). No fitted constants: below ERFC_SPLIT the power
 * series of erf, whose terms are all positive (no cancellation), and from ERFC_SPLIT up the
 * continued fraction of erfc, which converges fast there. Both are in Abramowitz & Stegun,
 * Handbook of Mathematical Functions (1964), 7.1.6 and 7.1.14; the continued fraction is
 * evaluated with the modified Lentz method (Press et al., Numerical Recipes, 3rd ed., 5.2).
 * Checked against scipy.special.erfc / scipy.stats.norm in test/experiment-stats.test.ts.
 */

const SQRT_PI = Math.sqrt(Math.PI);
const SQRT_2 = Math.SQRT2;
const SQRT_2PI = Math.sqrt(2 * Math.PI);

/**
 * Where erfc switches from 1 - erf(series) to the continued fraction. Below it erfc(x) > 0.033, so
 * the subtraction 1 - erf loses at most ~1.5 digits (relative error ~3e-15); from it up the
 * continued fraction needs at most ~90 terms (fewer the larger x), and fails to converge in a
 * reasonable number well below it (~730 terms at x = 0.5).
 */
const ERFC_SPLIT = 1.5;
/** Relative size of the last term (series) or step (continued fraction) at which we stop. */
const EPS = 1e-17;
/** More than either expansion needs on its side of ERFC_SPLIT (~90 at most); a guard, not a tuning. */
const MAX_TERMS = 500;
/** Past this, erfc(x) < 1e-2700: it underflows to 0 in doubles. */
const ERFC_ZERO = 27.3;

/** erf(x) for 0 <= x <= ERFC_SPLIT: A&S 7.1.6, 2/sqrt(pi) e^(-x^2) sum 2^n x^(2n+1) / (1*3*...*(2n+1)). */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < MAX_TERMS; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < EPS * sum) break;
  }
  return (2 / SQRT_PI) * Math.exp(-x2) * sum;
}

/**
 * erfc(x) for x >= ERFC_SPLIT: A&S 7.1.14,
 * erfc(x) = e^(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))),
 * by modified Lentz (the partial numerators are k/2, the partial denominators all x).
 */
function erfcContinuedFraction(x: number): number {
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let k = 1; k < MAX_TERMS; k++) {
    const a = k / 2;
    d = x + a * d;
    d = d === 0 ? tiny : d;
    c = x + a / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const step = c * d;
    f *= step;
    if (Math.abs(step - 1) < EPS) break;
  }
  return Math.exp(-x * x) / (SQRT_PI * f);
}

/** The complementary error function, with full relative accuracy in the upper tail. */
export function erfc(x: number): number {
  if (Number.isNaN(x)) throw new RangeError('erfc: the argument is NaN; pass a number');
  if (x < 0) return 2 - erfc(-x);
  if (x >= ERFC_ZERO) return 0;
  return x < ERFC_SPLIT ? 1 - erfSeries(x) : erfcContinuedFraction(x);
}

/**
 * The standard normal CDF, Phi(z) = erfc(-z/sqrt 2)/2. For z < 0 this is the lower tail computed
 * directly (relative error ~1e-15 near the centre, ~1e-13 at z = -37, below which it underflows); for z > 0 it is 1 minus
 * a small number, accurate to ~1e-16 absolute.
 */
export function normalCdf(z: number): number {
  if (Number.isNaN(z)) throw new RangeError('normalCdf: z is NaN; pass a number');
  return erfc(-z / SQRT_2) / 2;
}

// Acklam's rational approximations (P. J. Acklam, "An algorithm for computing the inverse normal
// cumulative distribution function", 2003; relative error < 1.15e-9), central region and tail.
const A = [
  -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239,
] as const;
const B = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572] as const;
const C = [
  -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
  2.938163982698783,
] as const;
const D = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416] as const;
const P_LOW = 0.02425;

/** Acklam's approximation for 0 < p <= 0.5 (the lower half; the upper half is by symmetry). */
function acklamLowerHalf(p: number): number {
  const [a0, a1, a2, a3, a4, a5] = A;
  const [b0, b1, b2, b3, b4] = B;
  if (p < P_LOW) {
    const [c0, c1, c2, c3, c4, c5] = C;
    const [d0, d1, d2, d3] = D;
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q) /
    (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1)
  );
}

/**
 * Phi^-1(p): Acklam's approximation, then one Halley step on Phi(x) - p (Acklam's own refinement),
 * which takes the relative error from ~1e-9 to near machine precision. Computed in the lower half
 * only, where Phi(x) is a small number held to full relative accuracy, and mirrored for p > 1/2:
 * 1 - p is exact there (Sterbenz), so p = 1 - 1e-10 loses nothing it had.
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile: p must be strictly between 0 and 1, got ${p}`);
  if (p > 0.5) return -normalQuantile(1 - p);
  const x = acklamLowerHalf(p);
  const e = normalCdf(x) - p;
  const u = e * SQRT_2PI * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

/**
 * P(X > x) for X chi-squared with 1 degree of freedom: X = Z^2, so P(X > x) = P(|Z| > sqrt x) =
 * erfc(sqrt(x/2)), the upper tail computed directly (x = 40 gives 2.5e-10 to full precision, not
 * 1 minus something). x <= 0 gives 1: the whole distribution is above it.
 */
export function chiSquared1Survival(x: number): number {
  if (Number.isNaN(x)) throw new RangeError('chiSquared1Survival: x is NaN; pass a number');
  if (x <= 0) return 1;
  return erfc(Math.sqrt(x / 2));
}
