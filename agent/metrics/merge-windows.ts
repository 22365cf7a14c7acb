import type { MetricSeries, Metrics } from '../../shared/messages.js';
import {
  CONFIDENCE_BINS,
  MAX_SERIES,
  MAX_VALUE_NAMES,
  MAX_WINDOW_SECONDS,
  MESSAGE_BUDGET_BYTES,
} from '../../shared/metrics/limits.js';
import { mergeSketches, type WireSketch } from '../../shared/metrics/sketch.js';
import { fitToBudget } from './fit-budget.js';

/**
 * Merging two closed windows into one coarser window, for the metrics outbox when the agent is
 * offline longer than it keeps windows (metrics-outbox.ts). Pure. DDSketch merges exactly (the
 * result is the sketch of the union), counts add up, so no observation is lost: only the time
 * resolution is.
 */

export function windowStartMs(m: Metrics): number {
  return Date.parse(m.windowStart);
}

export function windowEndMs(m: Metrics): number {
  return Date.parse(m.windowStart) + m.windowSeconds * 1000;
}

/** The time a merge of a (earlier) and b (later) would cover, in ms. */
export function combinedSpanMs(a: Metrics, b: Metrics): number {
  return Math.max(windowEndMs(a), windowEndMs(b)) - Math.min(windowStartMs(a), windowStartMs(b));
}

function seriesKey(s: MetricSeries): string {
  return `${s.model}\u0000${s.version}\u0000${s.source}`;
}

function mergeSeries(a: MetricSeries, b: MetricSeries): MetricSeries | null {
  const out: MetricSeries = {
    model: a.model,
    version: a.version,
    source: a.source,
    count: a.count + b.count,
    errors: a.errors + b.errors,
    latencyMs: mergeSketches(a.latencyMs, b.latencyMs),
  };
  if (a.confidence || b.confidence) {
    const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
    for (let i = 0; i < CONFIDENCE_BINS; i++) confidence[i] = (a.confidence?.[i] ?? 0) + (b.confidence?.[i] ?? 0);
    out.confidence = confidence;
  }
  if (a.values || b.values) {
    const values = Object.create(null) as Record<string, WireSketch>;
    for (const v of [a.values, b.values]) {
      if (!v) continue;
      for (const name of Object.keys(v)) {
        const prev = values[name];
        values[name] = prev ? mergeSketches(prev, v[name] as WireSketch) : (v[name] as WireSketch);
      }
    }
    if (Object.keys(values).length > MAX_VALUE_NAMES) return null;
    out.values = values;
  }
  return out;
}

/**
 * One window standing for both (a before b): from the earlier start to the later end, series
 * merged per (model, version, source), drops summed. Null when the result would break a limit:
 * more than MAX_SERIES series of a source, more than MAX_VALUE_NAMES values in a series, a span
 * over MAX_WINDOW_SECONDS, or a message over the byte budget even with the coarsest sketches.
 */
export function mergeWindows(a: Metrics, b: Metrics, budgetBytes = MESSAGE_BUDGET_BYTES): Metrics | null {
  const start = Math.min(windowStartMs(a), windowStartMs(b));
  const seconds = Math.max(1, Math.ceil(combinedSpanMs(a, b) / 1000));
  if (seconds > MAX_WINDOW_SECONDS) return null;
  const byKey = new Map<string, MetricSeries>();
  for (const s of a.series) byKey.set(seriesKey(s), s);
  for (const s of b.series) {
    const key = seriesKey(s);
    const prev = byKey.get(key);
    if (!prev) {
      byKey.set(key, s);
      continue;
    }
    const merged = mergeSeries(prev, s);
    if (!merged) return null;
    byKey.set(key, merged);
  }
  const perSource = new Map<string, number>();
  for (const s of byKey.values()) {
    const n = (perSource.get(s.source) ?? 0) + 1;
    if (n > MAX_SERIES) return null;
    perSource.set(s.source, n);
  }
  return fitToBudget(
    {
      ts: Date.parse(a.ts) > Date.parse(b.ts) ? a.ts : b.ts,
      windowStart: new Date(start).toISOString(),
      windowSeconds: seconds,
      windowsMerged: a.windowsMerged + b.windowsMerged,
      series: [...byKey.values()],
      dropped: {
        observations: (a.dropped?.observations ?? 0) + (b.dropped?.observations ?? 0),
        windows: (a.dropped?.windows ?? 0) + (b.dropped?.windows ?? 0),
      },
    },
    budgetBytes,
  );
}

/**
 * The adjacent pairs of a time-ordered list of windows, best merge first: the smallest combined
 * span (the least time resolution lost), the oldest first on ties. Index i stands for (i, i+1).
 */
export function mergeOrder(spans: readonly { startMs: number; endMs: number }[]): number[] {
  const pairs: { i: number; span: number }[] = [];
  for (let i = 0; i + 1 < spans.length; i++) {
    const a = spans[i] as { startMs: number; endMs: number };
    const b = spans[i + 1] as { startMs: number; endMs: number };
    pairs.push({ i, span: Math.max(a.endMs, b.endMs) - Math.min(a.startMs, b.startMs) });
  }
  pairs.sort((x, y) => x.span - y.span || x.i - y.i);
  return pairs.map((p) => p.i);
}
