import type { MetricSeries, Metrics } from '../../shared/messages.js';
import {
  CONFIDENCE_BINS,
  confidenceBin,
  MAX_SERIES,
  MAX_VALUE_NAMES,
  MESSAGE_BUDGET_BYTES,
  type MetricSource,
} from '../../shared/metrics/limits.js';
import { fromLibrarySketch, newAccumulator, type WireSketch } from '../../shared/metrics/sketch.js';
import { fitToBudget } from './fit-budget.js';
import type { Observation } from './observation.js';

/**
 * The current window of device metrics: per (model, version, source), a count, an error count, a
 * latency sketch, confidence counts per bin and a sketch per custom value. Memory is bounded
 * whatever an application sends: at most MAX_SERIES series per source (more are dropped and
 * counted), at most MAX_VALUE_NAMES values per series, and each sketch has a bounded number of bins
 * (newAccumulator: the library collapses the lowest ones beyond it). `close` turns the window into one summary
 * message that fits MESSAGE_BUDGET_BYTES and starts the next window.
 */

type LibrarySketch = ReturnType<typeof newAccumulator>;

interface SeriesState {
  model: string;
  version: string;
  source: MetricSource;
  count: number;
  errors: number;
  latency: LibrarySketch;
  confidence: number[] | null;
  values: Map<string, LibrarySketch>;
}

export interface WindowAggregatorOptions {
  /** Series per source per window (default MAX_SERIES). */
  maxSeries?: number;
  /** Bytes of a closed window's message (default MESSAGE_BUDGET_BYTES). */
  budgetBytes?: number;
}

export class WindowAggregator {
  private series = new Map<string, SeriesState>();
  private seriesPerSource = new Map<MetricSource, number>();
  private dropped = 0;
  private observed = 0;
  private readonly maxSeries: number;
  private readonly budgetBytes: number;

  constructor(options: WindowAggregatorOptions = {}) {
    this.maxSeries = options.maxSeries ?? MAX_SERIES;
    this.budgetBytes = options.budgetBytes ?? MESSAGE_BUDGET_BYTES;
  }

  /** Adds a valid observation (observation.ts); false when it was dropped (series cap, counted). */
  add(o: Observation, source: MetricSource = 'app'): boolean {
    const s = this.seriesFor(o.model, o.version, source);
    if (!s) {
      this.dropped++;
      return false;
    }
    s.count++;
    this.observed++;
    if (o.error === true) s.errors++;
    s.latency.accept(o.latencyMs);
    if (o.confidence !== undefined) {
      if (!s.confidence) s.confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
      const bin = confidenceBin(o.confidence);
      s.confidence[bin] = (s.confidence[bin] as number) + 1;
    }
    if (o.values)
      for (const name in o.values) {
        let sketch = s.values.get(name);
        if (!sketch) {
          // observation.ts admits declared names only, and the config declares at most
          // MAX_VALUE_NAMES: this cap only guards memory if a caller skipped that check.
          if (s.values.size >= MAX_VALUE_NAMES) continue;
          sketch = newAccumulator();
          s.values.set(name, sketch);
        }
        sketch.accept(o.values[name] as number);
      }
    return true;
  }

  /** The health probe's own inference latency (source `probe`). */
  recordProbe(model: string, version: string, latencyMs: number): void {
    this.add({ model, version, latencyMs }, 'probe');
  }

  /** Observations refused before they got here (bad lines, unknown models...): counted in the summary. */
  countDropped(n: number): void {
    if (n > 0) this.dropped += n;
  }

  /** Observations aggregated since the last close. */
  get observedSinceClose(): number {
    return this.observed;
  }

  /** Observations dropped since the last close (refused or over the series cap). */
  get droppedSinceClose(): number {
    return this.dropped;
  }

  private seriesFor(model: string, version: string, source: MetricSource): SeriesState | undefined {
    const key = `${model}\u0000${version}\u0000${source}`;
    let s = this.series.get(key);
    if (s) return s;
    const n = this.seriesPerSource.get(source) ?? 0;
    if (n >= this.maxSeries) return undefined;
    this.seriesPerSource.set(source, n + 1);
    s = { model, version, source, count: 0, errors: 0, latency: newAccumulator(), confidence: null, values: new Map() };
    this.series.set(key, s);
    return s;
  }

  /**
   * The summary of the window that started at `windowStart` (null when nothing was observed and
   * nothing dropped), then a new window. Fits the byte budget; if even the coarsest sketches do
   * not fit, the smallest series are left out and their observations counted as dropped.
   */
  close(windowStart: Date, now: Date, windowSeconds: number): Metrics | null {
    const states = [...this.series.values()];
    let dropped = this.dropped;
    this.series = new Map();
    this.seriesPerSource = new Map();
    this.dropped = 0;
    this.observed = 0;
    if (states.length === 0 && dropped === 0) return null;
    const series = states.map(toWire);
    let message: Metrics | null = null;
    for (;;) {
      message = fitToBudget(
        {
          ts: now.toISOString(),
          windowStart: windowStart.toISOString(),
          windowSeconds: Math.max(1, Math.round(windowSeconds)),
          windowsMerged: 1,
          series,
          dropped: { observations: dropped, windows: 0 },
        },
        this.budgetBytes,
      );
      if (message || series.length === 0) break;
      // Unreachable with the default limits (tested): a last resort that keeps close() total.
      let smallest = 0;
      for (let i = 1; i < series.length; i++)
        if ((series[i] as MetricSeries).count < (series[smallest] as MetricSeries).count) smallest = i;
      dropped += (series.splice(smallest, 1)[0] as MetricSeries).count;
    }
    return message;
  }
}

function toWire(s: SeriesState): MetricSeries {
  const out: MetricSeries = {
    model: s.model,
    version: s.version,
    source: s.source,
    count: s.count,
    errors: s.errors,
    latencyMs: fromLibrarySketch(s.latency),
  };
  if (s.confidence) out.confidence = s.confidence;
  if (s.values.size > 0) {
    const values = Object.create(null) as Record<string, WireSketch>;
    for (const [name, sketch] of s.values) values[name] = fromLibrarySketch(sketch);
    out.values = values;
  }
  return out;
}
