import { mulberry32 } from '../../scripts/mulberry32.js';

/**
 * A seeded PRNG (scripts/mulberry32.ts) for the property tests: every run checks the same cases,
 * and a failure names its seed.
 */
export function prng(seed: number) {
  const next = mulberry32(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  return { next, pick, bool: () => next() < 0.5 };
}
