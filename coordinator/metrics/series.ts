import type { MetricSeries } from '../../shared/messages.js';
import { CONFIDENCE_BINS } from '../../shared/metrics/limits.js';
import {
  emptySketch,
  fitBins,
  MAX_WIRE_BINS,
  mean,
  mergeSketches,
  quantile,
  relativeAccuracyAt,
  type WireSketch,
} from '../../shared/metrics/sketch.js';

/**
 * The merged form of metric series (docs/metrics.md): what a rollup row holds, and what a query
 * merges rows into. Every part merges exactly (sums, and DDSketch merges: the merge of sketches is
 * the sketch of the union), so a rollup of rollups equals the rollup of the windows. Pure.
 *
 * Custom values are keyed by name: a Map in memory (a value may be named `constructor`), a list of
 * [name, sketch] pairs in the stored JSON, so no parsed object is ever looked up by a name.
 */
export interface Merged {
  /** Observations (each has a latency). */
  count: number;
  errors: number;
  /** Windows merged in (a summary that stands for several windows counts them all). */
  windows: number;
  latencyMs: WireSketch;
  /** Counts per confidence bin; null when no series carried confidence. */
  confidence: number[] | null;
  values: Map<string, WireSketch>;
}

export function emptyMerged(): Merged {
  return { count: 0, errors: 0, windows: 0, latencyMs: emptySketch(), confidence: null, values: new Map() };
}

function addConfidence(into: number[] | null, add: readonly number[] | null | undefined): number[] | null {
  if (!add) return into;
  const out = into ? [...into] : new Array<number>(CONFIDENCE_BINS).fill(0);
  for (let i = 0; i < CONFIDENCE_BINS; i++) out[i] = (out[i] as number) + (add[i] ?? 0);
  return out;
}

function addValues(into: Map<string, WireSketch>, add: Iterable<[string, WireSketch]>): Map<string, WireSketch> {
  const out = new Map(into);
  for (const [name, sketch] of add) {
    const had = out.get(name);
    out.set(name, had ? fitBins(mergeSketches(had, sketch), MAX_WIRE_BINS) : sketch);
  }
  return out;
}

/** a and b together (a new object; neither input changes). */
export function mergeMerged(a: Merged, b: Merged): Merged {
  return {
    count: a.count + b.count,
    errors: a.errors + b.errors,
    windows: a.windows + b.windows,
    // Refitted: sketches from many devices can spread wider than any one; a rollup row stays bounded.
    latencyMs: fitBins(mergeSketches(a.latencyMs, b.latencyMs), MAX_WIRE_BINS),
    confidence: addConfidence(a.confidence, b.confidence),
    values: addValues(a.values, b.values),
  };
}

/** One series of a summary that stands for `windows` windows, in merged form. */
export function mergedOfSeries(series: StoredSeries, count: number, errors: number, windows: number): Merged {
  return {
    count,
    errors,
    windows,
    latencyMs: series.latencyMs,
    confidence: series.confidence ? [...series.confidence] : null,
    values: new Map(series.values ?? []),
  };
}

// ---- stored JSON ----

/**
 * What a raw window row keeps of a parsed series besides its key columns (device, model, version,
 * source) and its count and errors (columns too): re-serialized from the parsed message, never
 * the payload as received, so nothing a device sent beyond the schema reaches the disk.
 */
export interface StoredSeries {
  latencyMs: WireSketch;
  confidence?: number[];
  values?: [string, WireSketch][];
}

export function storedOfSeries(series: MetricSeries): StoredSeries {
  const out: StoredSeries = { latencyMs: sketchOf(series.latencyMs) };
  if (series.confidence) out.confidence = [...series.confidence];
  if (series.values) {
    const names = Object.keys(series.values).sort();
    if (names.length > 0) out.values = names.map((n) => [n, sketchOf(series.values?.[n] as WireSketch)]);
  }
  return out;
}

/** Only the sketch's own fields, in a fixed order (the parsed object may carry dropped extras). */
function sketchOf(s: WireSketch): WireSketch {
  const out: WireSketch = { level: s.level, count: s.count, sum: s.sum, min: s.min, max: s.max, zeros: s.zeros };
  if (s.positive) out.positive = { offset: s.positive.offset, counts: [...s.positive.counts] };
  if (s.negative) out.negative = { offset: s.negative.offset, counts: [...s.negative.counts] };
  return out;
}

interface MergedJson {
  c: number;
  e: number;
  w: number;
  l: WireSketch;
  f?: number[];
  v?: [string, WireSketch][];
}

/** A rollup row's JSON (short keys: a device-hour row is rewritten once per summary). */
export function mergedToJson(m: Merged): string {
  const out: MergedJson = { c: m.count, e: m.errors, w: m.windows, l: m.latencyMs };
  if (m.confidence) out.f = m.confidence;
  if (m.values.size > 0) out.v = [...m.values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(out);
}

export function mergedFromJson(text: string): Merged {
  const j = JSON.parse(text) as MergedJson;
  return { count: j.c, errors: j.e, windows: j.w, latencyMs: j.l, confidence: j.f ?? null, values: new Map(j.v ?? []) };
}

// ---- what a query shows ----

export interface LatencySummary {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  mean: number | null;
  min: number;
  max: number;
  /** The relative accuracy every quantile above is within (the coarsest sketch level merged). */
  relativeAccuracy: number;
}

export interface ValueSummary {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  mean: number | null;
  samples: number;
}

export interface SeriesSummary {
  windows: number;
  samples: number;
  errors: number;
  /** errors / samples; null without samples. */
  errorRate: number | null;
  latencyMs: LatencySummary | null;
  confidence: { counts: number[]; samples: number } | null;
  /** By value name, without a prototype (a value may be named `constructor`). */
  values: Record<string, ValueSummary>;
}

export function summarize(m: Merged): SeriesSummary {
  const l = m.latencyMs;
  const values = Object.create(null) as Record<string, ValueSummary>;
  for (const [name, s] of [...m.values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    values[name] = {
      p50: quantile(s, 0.5),
      p95: quantile(s, 0.95),
      p99: quantile(s, 0.99),
      mean: mean(s),
      samples: s.count,
    };
  }
  return {
    windows: m.windows,
    samples: m.count,
    errors: m.errors,
    errorRate: m.count > 0 ? m.errors / m.count : null,
    latencyMs:
      l.count === 0
        ? null
        : {
            p50: quantile(l, 0.5),
            p95: quantile(l, 0.95),
            p99: quantile(l, 0.99),
            mean: mean(l),
            min: l.min,
            max: l.max,
            relativeAccuracy: relativeAccuracyAt(l.level),
          },
    confidence: m.confidence ? { counts: [...m.confidence], samples: m.confidence.reduce((a, b) => a + b, 0) } : null,
    values,
  };
}
