import {
  type Arm,
  type ArmRow,
  formatDifference,
  type LatencyQuantiles,
  limitText,
  type MetricRow,
} from './experiments.js';

/**
 * The geometry of the experiment view's charts, as numbers (the view draws them as inline SVG:
 * no chart library, and nothing the page's CSP forbids, since positions are SVG attributes and
 * colours come from the stylesheet's classes). Pure, so the node tests check the bars' positions
 * and labels.
 *
 * Coordinates are SVG user units in a viewBox of `width` x `height`; y grows downwards.
 */

export interface ChartBar {
  arm: Arm;
  /** What the bar is: `p95`, or a confidence bin's lower edge `0.9`. */
  key: string;
  value: number;
  x: number;
  y: number;
  width: number;
  height: number;
  /** Drawn above the bar (null: the bars are too narrow for one). */
  text: string | null;
  /** The bar in words (its SVG <title>, a tooltip and what a screen reader says). */
  title: string;
}

export interface AxisTick {
  /** y for the value axis, x for the category axis. */
  pos: number;
  label: string;
}

export interface BarChart {
  width: number;
  height: number;
  plot: { left: number; top: number; right: number; bottom: number };
  bars: ChartBar[];
  yTicks: AxisTick[];
  xTicks: AxisTick[];
  /** The value at the top of the plot. */
  max: number;
  /** No arm has data: the view says so instead of drawing. */
  empty: boolean;
}

export const LATENCY_QUANTILES = ['p50', 'p90', 'p95', 'p99'] as const;
export const CONFIDENCE_BINS = 10;

/** The smallest of 1, 2, 5 times a power of ten that is at least `v` (1 for nothing positive). */
export function niceStep(v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  // The tolerance: log10 of 1000 may come out a hair under 3.
  const m = [1, 2, 5].find((f) => f * power >= v * (1 - 1e-9)) ?? 10;
  return clean(m * power);
}

/** Float noise off (`0.30000000000000004` -> `0.3`). */
function clean(v: number): number {
  return Number(v.toPrecision(10));
}

/** A value axis from 0 to a round number at or above `max`, in about four steps. */
export function valueAxis(max: number): { top: number; steps: number[] } {
  const step = niceStep(max / 4);
  const n = Math.max(1, Math.ceil(clean(max / step)));
  return { top: clean(n * step), steps: Array.from({ length: n + 1 }, (_, i) => clean(i * step)) };
}

/** Milliseconds as a bar's label: `128`, `12.3`, `0.87`. */
export function formatMs(v: number): string {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return String(Number(v.toPrecision(2)));
}

interface Layout {
  width: number;
  height: number;
}

const MARGIN = { left: 48, right: 8, top: 20, bottom: 28 };

function frame(size: Layout) {
  return {
    left: MARGIN.left,
    top: MARGIN.top,
    right: size.width - MARGIN.right,
    bottom: size.height - MARGIN.bottom,
  };
}

/**
 * Groups of two bars (control, candidate) side by side over a shared value axis from 0. An arm
 * without data gets no bars; `values[g]` holds each arm's value of group g.
 */
function groupedBars(
  size: Layout,
  groups: readonly string[],
  values: Record<Arm, readonly number[] | null>,
  text: (arm: Arm, group: string, v: number) => string | null,
  title: (arm: Arm, group: string, v: number) => string,
  tickLabel: (v: number) => string,
): BarChart {
  const plot = frame(size);
  const all = [...(values.control ?? []), ...(values.candidate ?? [])];
  const axis = valueAxis(Math.max(0, ...all));
  const h = plot.bottom - plot.top;
  const y = (v: number) => plot.bottom - (h * v) / axis.top;
  const gw = (plot.right - plot.left) / groups.length;
  const bw = gw * 0.36;
  const bars: ChartBar[] = [];
  groups.forEach((group, g) => {
    (['control', 'candidate'] as const).forEach((arm, i) => {
      const v = values[arm]?.[g];
      if (v === undefined) return;
      const top = y(v);
      bars.push({
        arm,
        key: group,
        value: v,
        x: plot.left + gw * g + gw * 0.12 + i * (bw + gw * 0.04),
        y: top,
        width: bw,
        height: plot.bottom - top,
        text: text(arm, group, v),
        title: title(arm, group, v),
      });
    });
  });
  return {
    width: size.width,
    height: size.height,
    plot,
    bars,
    yTicks: axis.steps.map((v) => ({ pos: y(v), label: tickLabel(v) })),
    xTicks: [],
    max: axis.top,
    empty: values.control === null && values.candidate === null,
  };
}

/** The latency quantiles p50, p90, p95, p99 of both arms side by side, labelled in ms. */
export function latencyChart(
  arms: Record<Arm, Pick<ArmRow, 'latencyMs' | 'version'>>,
  size: Layout = { width: 520, height: 240 },
): BarChart {
  const of = (q: LatencyQuantiles | null) => (q ? LATENCY_QUANTILES.map((k) => q[k]) : null);
  const chart = groupedBars(
    size,
    LATENCY_QUANTILES,
    { control: of(arms.control.latencyMs), candidate: of(arms.candidate.latencyMs) },
    (_arm, _q, v) => formatMs(v),
    (arm, q, v) => `${arm} ${arms[arm].version} ${q}: ${formatMs(v)} ms`,
    (v) => String(v),
  );
  const gw = (chart.plot.right - chart.plot.left) / LATENCY_QUANTILES.length;
  chart.xTicks = LATENCY_QUANTILES.map((q, i) => ({ pos: chart.plot.left + gw * (i + 0.5), label: q }));
  return chart;
}

/** Each bin's share of the arm's inferences, in percent; null for no counts. */
export function confidenceShares(bins: readonly number[] | null): number[] | null {
  if (!bins) return null;
  const counts = Array.from({ length: CONFIDENCE_BINS }, (_, i) => Math.max(0, bins[i] ?? 0));
  const total = counts.reduce((a, b) => a + b, 0);
  return total > 0 ? counts.map((c) => (100 * c) / total) : null;
}

/**
 * The confidence histograms of both arms, 10 bins of width 0.1 side by side, each bin as its share
 * of the arm's inferences (the arms differ in size, so counts would not compare).
 */
export function confidenceChart(
  arms: Record<Arm, Pick<ArmRow, 'confidence' | 'version'>>,
  size: Layout = { width: 520, height: 220 },
): BarChart {
  const keys = Array.from({ length: CONFIDENCE_BINS }, (_, i) => (i / CONFIDENCE_BINS).toFixed(1));
  const shares = {
    control: confidenceShares(arms.control.confidence),
    candidate: confidenceShares(arms.candidate.confidence),
  };
  const chart = groupedBars(
    size,
    keys,
    shares,
    () => null,
    (arm, key, v) => {
      const i = keys.indexOf(key);
      const count = arms[arm].confidence?.[i] ?? 0;
      return `${arm} ${arms[arm].version} confidence ${key}–${((i + 1) / CONFIDENCE_BINS).toFixed(1)}: ${v.toFixed(1)}% (${count})`;
    },
    (v) => `${v}%`,
  );
  const w = chart.plot.right - chart.plot.left;
  chart.xTicks = [0, 2, 4, 6, 8, 10].map((i) => ({
    pos: chart.plot.left + (w * i) / CONFIDENCE_BINS,
    label: String(i / CONFIDENCE_BINS),
  }));
  return chart;
}

export interface IntervalGeometry {
  width: number;
  height: number;
  /** x of a difference of 0, of the threshold and of the estimate. */
  zero: number;
  threshold: number;
  estimate: number;
  /** The interval; null while too few devices give one of its bounds. */
  interval: { x1: number; x2: number } | null;
  /** The side beyond the threshold (what the limit does not allow). */
  bad: { x: number; width: number };
  /** The same in words, for the screen reader. */
  label: string;
}

/**
 * A metric's difference as a small horizontal bar: the interval, the estimate, zero and the
 * threshold, on a scale that holds them all with a margin. Null without a difference.
 */
export function intervalGeometry(
  m: Pick<MetricRow, 'difference' | 'threshold' | 'direction' | 'metric'>,
  size: Layout = { width: 160, height: 22 },
): IntervalGeometry | null {
  const d = m.difference;
  if (!d) return null;
  const t = m.threshold.value;
  const points = [0, t, d.estimate, ...(d.low === null ? [] : [d.low]), ...(d.high === null ? [] : [d.high])].filter(
    Number.isFinite,
  );
  const lo = Math.min(...points);
  const hi = Math.max(...points);
  const span = hi - lo || Math.abs(t) || 1;
  const d0 = lo - span * 0.1;
  const d1 = hi + span * 0.1;
  const x = (v: number) => clean((size.width * (Math.min(d1, Math.max(d0, v)) - d0)) / (d1 - d0));
  const tx = x(t);
  const bad = m.direction === 'lower_is_better' ? { x: tx, width: size.width - tx } : { x: 0, width: tx };
  const f = (v: number | null) => (v === null ? '?' : formatDifference(v, m));
  return {
    width: size.width,
    height: size.height,
    zero: x(0),
    threshold: tx,
    estimate: x(d.estimate),
    interval: d.low === null || d.high === null ? null : { x1: x(d.low), x2: x(d.high) },
    bad,
    label: `difference ${f(d.estimate)}, interval [${f(d.low)}, ${f(d.high)}], limit ${limitText(m)}`,
  };
}
