/**
 * The exact quantile of `values` with the rank rule the sketches use (the lower value at rank
 * q * (n - 1), as @datadog/sketches-js getValueAtQuantile): what a sketch's quantile must be
 * within its relative accuracy of.
 */
export function exactQuantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(q * (sorted.length - 1))] as number;
}
