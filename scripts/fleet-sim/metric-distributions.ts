import { CONFIDENCE_BINS, confidenceBin } from '../../shared/metrics/limits.js';
import { fitBins, fromLibrarySketch, newAccumulator } from '../../shared/metrics/sketch.js';

/**
 * The set distributions simulated devices draw their inferences from (the fleet simulator's
 * metrics summaries, and the seeded experiment simulations of test/experiment-simulation.test.ts).
 * Built with the same sketch library and fitting as the agent (agent/metrics/window-aggregator.ts),
 * so a simulated summary is what an agent would send for the same inferences.
 */
export interface Distribution {
  /** Median latency in ms; latency is log-normal around it. */
  medianMs: number;
  /** Sigma of log latency (0.35: p99 about 2.3x the median). */
  sigma: number;
  /** Chance that an inference is an error. */
  errorRate: number;
  /** Confidence is 1 - u^shape for u uniform in [0, 1): larger shapes sit nearer 1. */
  confidenceShape: number;
}

export const DEFAULT_DISTRIBUTION: Distribution = { medianMs: 10, sigma: 0.35, errorRate: 0.01, confidenceShape: 3 };

/** A standard normal sample (Box-Muller). */
export function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** One series of a summary: `observations` inferences drawn from `d`. */
export function simulatedSeries(
  model: string,
  version: string,
  observations: number,
  random: () => number,
  d: Distribution = DEFAULT_DISTRIBUTION,
) {
  const latency = newAccumulator();
  const confidence = new Array<number>(CONFIDENCE_BINS).fill(0);
  let errors = 0;
  for (let i = 0; i < observations; i++) {
    latency.accept(d.medianMs * Math.exp(d.sigma * normal(random)));
    const c = 1 - random() ** d.confidenceShape;
    confidence[confidenceBin(c)] = (confidence[confidenceBin(c)] as number) + 1;
    if (random() < d.errorRate) errors++;
  }
  return {
    model,
    version,
    source: 'app' as const,
    count: observations,
    errors,
    latencyMs: fitBins(fromLibrarySketch(latency), 160),
    confidence,
  };
}

/**
 * The fleet simulator's distribution of a version: a median of 8 ms plus 1 ms per character code
 * sum mod 8 (versions differ, the same version is the same everywhere).
 */
export function versionDistribution(version: string): Distribution {
  let code = 0;
  for (let i = 0; i < version.length; i++) code += version.charCodeAt(i);
  return { ...DEFAULT_DISTRIBUTION, medianMs: 8 + (code % 8) };
}
