/**
 * mulberry32: a small, well-mixed 32-bit PRNG for simulated data (benchmarks, the fleet
 * simulator) and property tests. Seeded: every run draws the same numbers.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seed from a name (a device id): each simulated device draws its own, stable numbers. */
export function seedOf(text: string): number {
  let a = 0;
  for (let i = 0; i < text.length; i++) a = (Math.imul(a, 31) + text.charCodeAt(i)) >>> 0;
  return a;
}
