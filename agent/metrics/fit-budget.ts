import type { Metrics } from '../../shared/messages.js';
import { MAX_VALUE_MAGNITUDE, MESSAGE_BUDGET_BYTES } from '../../shared/metrics/limits.js';
import { binCount, coarsen, fitBins, MAX_SKETCH_LEVEL, type WireSketch } from '../../shared/metrics/sketch.js';

/**
 * Makes a summary message fit the byte budget by lowering the resolution of its sketches, never
 * by losing observations: each sketch is first cut to `binCap` bins, then, while the encoded
 * message is over budget, the sketch with the most bins goes one level coarser (exact: sketch.ts).
 * The widest sketch pays first, so narrow distributions keep their 1% accuracy.
 */

/** Bins a sketch keeps before the budget is even looked at (160 bins at 1% span a factor of ~25). */
export const DEFAULT_BIN_CAP = 160;

export function encodedBytes(message: unknown): number {
  return Buffer.byteLength(JSON.stringify(message));
}

/**
 * x to 6 significant digits, rounded towards -Infinity (dir -1) or +Infinity (dir 1), never past
 * +-MAX_VALUE_MAGNITUDE: every value is within it, and the coordinator refuses a bound beyond
 * (999,999,400,000 rounded up would be 1.00001e12).
 */
export function roundOutward(x: number, dir: -1 | 1): number {
  const clamp = (v: number) => Math.min(MAX_VALUE_MAGNITUDE, Math.max(-MAX_VALUE_MAGNITUDE, v));
  const r = Number(x.toPrecision(6));
  if (dir < 0 ? r <= x : r >= x) return clamp(r);
  // toPrecision rounded the wrong way by at most half a unit of the 6th digit (<= 5e-6 of |x|).
  return clamp(Number((x + dir * Math.abs(x) * 1e-5).toPrecision(6)));
}

function roundStats(s: WireSketch): WireSketch {
  // The sum stays within count x MAX_VALUE_MAGNITUDE after rounding, as the schema asks.
  const limit = s.count * MAX_VALUE_MAGNITUDE;
  return {
    ...s,
    sum: Math.min(limit, Math.max(-limit, Number(s.sum.toPrecision(6)))),
    min: roundOutward(s.min, -1),
    max: roundOutward(s.max, 1),
  };
}

interface Slot {
  get(): WireSketch;
  set(s: WireSketch): void;
}

/**
 * The message with coarser sketches, encoded in at most `budget` bytes; null when even the
 * coarsest sketches do not fit (too many series and values: the caller drops something, counted).
 * The input is not modified.
 */
export function fitToBudget(message: Metrics, budget = MESSAGE_BUDGET_BYTES, binCap = DEFAULT_BIN_CAP): Metrics | null {
  const out: Metrics = {
    ...message,
    series: message.series.map((s) => {
      const copy = { ...s, latencyMs: fitBins(s.latencyMs, binCap) };
      if (s.values) {
        const values = Object.create(null) as Record<string, WireSketch>;
        for (const name of Object.keys(s.values)) values[name] = fitBins(s.values[name] as WireSketch, binCap);
        copy.values = values;
      }
      return copy;
    }),
  };
  const slots: Slot[] = [];
  for (const s of out.series) {
    slots.push({ get: () => s.latencyMs, set: (v) => (s.latencyMs = v) });
    const values = s.values;
    if (values)
      for (const name of Object.keys(values))
        slots.push({ get: () => values[name] as WireSketch, set: (v) => (values[name] = v) });
  }
  let bytes = encodedBytes(out);
  if (bytes > budget) {
    // Full-precision floats cost ~20 bytes each; 6 significant digits are far below the sketches'
    // 1% accuracy. min and max round outward so they still bound every value.
    for (const slot of slots) slot.set(roundStats(slot.get()));
    bytes = encodedBytes(out);
  }
  while (bytes > budget) {
    let widest: Slot | undefined;
    let most = 1; // a sketch of one bin gains nothing from coarsening
    for (const slot of slots) {
      const s = slot.get();
      const n = binCount(s);
      if (n > most && s.level < MAX_SKETCH_LEVEL) {
        most = n;
        widest = slot;
      }
    }
    if (!widest) return null;
    const before = widest.get();
    const after = coarsen(before, before.level + 1);
    widest.set(after);
    // The sketch's JSON is a substring of the message's (same keys, same order, ASCII only).
    bytes -= JSON.stringify(before).length - JSON.stringify(after).length;
  }
  return out;
}
