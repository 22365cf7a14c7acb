/**
 * The bounds of device metrics (docs/metrics.md), shared by the agent that builds summaries, the
 * schema that checks them and the coordinator that stores them. They hold whatever an application
 * sends: an application reports observations, the agent keeps a bounded number of series, and a
 * summary message fits MESSAGE_BUDGET_BYTES however wide the values spread (sketch.ts, levels).
 */

/** A summary message as sent (JSON bytes). */
export const MESSAGE_BUDGET_BYTES = 8 * 1024;
/** (model, version, source) series in one summary message. */
export const MAX_SERIES = 8;
/** Named custom values per series (each a sketch); their names must be declared in the agent config. */
export const MAX_VALUE_NAMES = 4;
/** Confidence in [0, 1] is counted in this many equal bins; 1.0 falls in the last. */
export const CONFIDENCE_BINS = 10;
/** A custom value's name: what the agent config declares and the wire carries. */
export const VALUE_NAME_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
/**
 * Latencies and custom values are within +-this (the agent refuses others, the coordinator checks
 * sketches against it): sums of a window, and of windows merged over a week offline, stay finite
 * (JSON has no Infinity) and exact enough; 1e12 ms is 31 years.
 */
export const MAX_VALUE_MAGNITUDE = 1e12;
/**
 * The largest |bin key| at level 0: keys of doubles run from about -37,200 (5e-324) to 35,500
 * (1.8e308) at 1% accuracy, and halve with each level (sketch.ts).
 */
export const MAX_SKETCH_KEY = 38_000;
/** The longest window a summary may cover: windows merged during an outage (agent outbox). */
export const MAX_WINDOW_SECONDS = 7 * 86_400;
/** Where a series' observations come from: the application, or the agent's own health probe. */
export const METRIC_SOURCES = ['app', 'probe'] as const;
export type MetricSource = (typeof METRIC_SOURCES)[number];

/** The confidence bin of c in [0, 1]. */
export function confidenceBin(c: number): number {
  return Math.min(CONFIDENCE_BINS - 1, Math.floor(c * CONFIDENCE_BINS));
}
