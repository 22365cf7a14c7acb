import { OtaError } from '../../shared/errors.js';
import { validateAnalysis } from './analysis-spec.js';
import type { Approval, Strategy, WaveSpec } from './types.js';

/**
 * Rollout strategies (design section 6): waves of strictly increasing cumulative percents ending
 * at 100, each gated `auto` or `manual`, and a `maxFailureRate` in [0, 1). Every refusal is an
 * `E_STRATEGY` error whose message names what is wrong and how to fix it.
 */

export const MAX_WAVES = 100;
export const DEFAULT_MAX_FAILURE_RATE = 0;

const EXAMPLE = 'e.g. --waves 1,10:manual,50,100';
const PERCENT_TEXT = /^([+-]?\d+(?:\.\d+)?)%?$/;

function fail(message: string): never {
  throw new OtaError('E_STRATEGY', message);
}

/**
 * Parses the CLI syntax `1,10:manual,50,100`: cumulative percents, each optionally followed by
 * `:manual` or `:auto` (default `auto`, the gate before the wave) and `:analysis` (a metric gate
 * after it: `5:analysis,25,100`). The result is validated like `validateStrategy` does.
 */
export function parseWaves(text: string): WaveSpec[] {
  const trimmed = text.trim();
  if (trimmed === '') fail(`--waves is empty: give cumulative percents ending at 100, ${EXAMPLE}`);
  const waves = trimmed.split(',').map((raw, index): WaveSpec => {
    const i = index + 1; // waves are numbered from 1 in every message
    const item = raw.trim();
    if (item === '') fail(`wave ${i} of --waves "${text}" is empty (two commas in a row?): ${EXAMPLE}`);
    const parts = item.split(':');
    const percentText = (parts[0] ?? '').trim();
    const match = PERCENT_TEXT.exec(percentText);
    if (!match) {
      fail(`percent of wave ${i} "${percentText}" is not a number: write a number in (0, 100], ${EXAMPLE}`);
    }
    // After the percent: at most one of manual/auto (the gate before this wave) and `analysis`
    // (a metric gate after it, before the next wave).
    let approval: Approval = 'auto';
    let analysis = false;
    const seen = new Set<string>();
    for (const raw of parts.slice(1)) {
      const flag = raw.trim().toLowerCase();
      if (flag !== 'auto' && flag !== 'manual' && flag !== 'analysis') {
        fail(`wave ${i} "${item}" has an unknown flag "${raw}": use ":manual", ":auto" or ":analysis", ${EXAMPLE}`);
      }
      const kind = flag === 'analysis' ? 'analysis' : 'approval';
      if (seen.has(kind))
        fail(`wave ${i} "${item}" gives ${kind === 'analysis' ? '":analysis"' : 'its approval'} twice`);
      seen.add(kind);
      if (flag === 'analysis') analysis = true;
      else approval = flag as Approval;
    }
    return analysis ? { percent: Number(match[1]), approval, analysis } : { percent: Number(match[1]), approval };
  });
  return validateWaves(waves);
}

/** Checks an untrusted strategy (command payload, stored row) and returns a normalized copy. */
export function validateStrategy(s: unknown): Strategy {
  if (typeof s !== 'object' || s === null || Array.isArray(s)) {
    fail('the strategy must be an object { waves: [{ percent, approval }], maxFailureRate }');
  }
  const record = s as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== 'waves' && key !== 'maxFailureRate' && key !== 'analysis') {
      fail(`the strategy has an unknown field "${key}": only "waves", "maxFailureRate" and "analysis" are allowed`);
    }
  }
  const waves = validateWaves(record.waves);
  const maxFailureRate = validateMaxFailureRate(record.maxFailureRate);
  const gated = waves.some((w) => w.analysis);
  if (record.analysis === undefined) {
    if (gated) {
      fail('a wave has an analysis gate but no analysis says what to check: give --analysis FILE (docs/rollouts.md)');
    }
    return { waves, maxFailureRate };
  }
  if (!gated) fail('--analysis is given but no wave has a gate: mark one, e.g. --waves 5:analysis,25,100');
  return { waves, maxFailureRate, analysis: validateAnalysis(record.analysis) };
}

function validateMaxFailureRate(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_FAILURE_RATE;
  const fix = 'give a number in [0, 1), e.g. --max-failure-rate 0.05 (0: the first failure halts)';
  if (typeof value !== 'number' || Number.isNaN(value)) {
    fail(`maxFailureRate ${describe(value)} is not a number: ${fix}`);
  }
  if (!(value >= 0 && value < 1)) fail(`maxFailureRate ${value} is outside [0, 1): ${fix}`);
  return value;
}

function validateWaves(value: unknown): WaveSpec[] {
  if (!Array.isArray(value)) {
    fail(`waves ${describe(value)} is not a list: give cumulative percents ending at 100, ${EXAMPLE}`);
  }
  if (value.length === 0) fail(`waves is empty: give at least one wave, and the last at 100, ${EXAMPLE}`);
  if (value.length > MAX_WAVES) fail(`${value.length} waves is more than the maximum of ${MAX_WAVES}: merge waves`);
  const waves: WaveSpec[] = value.map((w: unknown, i) => validateWave(w, i + 1));
  for (let i = 1; i < waves.length; i++) {
    const prev = (waves[i - 1] as WaveSpec).percent;
    const cur = (waves[i] as WaveSpec).percent;
    if (cur <= prev) {
      fail(
        `wave percents must strictly increase (they are cumulative): wave ${i + 1} has ${cur} after ${prev} in wave ${i}; ${EXAMPLE}`,
      );
    }
  }
  const last = waves[waves.length - 1] as WaveSpec;
  if (last.percent !== 100) {
    fail(`the last wave must be 100 (the whole target), not ${last.percent}: append 100, ${EXAMPLE}`);
  }
  if (last.analysis) {
    fail(
      `the last wave cannot have an analysis gate: nothing comes after it to gate; put ":analysis" on an earlier wave, e.g. --waves 5:analysis,25,100`,
    );
  }
  if ((waves[0] as WaveSpec).approval === 'manual') {
    fail(
      'wave 1 cannot be manual: the first wave starts when the rollout is created; put ":manual" on a later wave to gate it, e.g. --waves 1,10:manual,100',
    );
  }
  return waves;
}

/** `i`: the wave's number, from 1. */
function validateWave(w: unknown, i: number): WaveSpec {
  if (typeof w !== 'object' || w === null || Array.isArray(w)) {
    fail(`wave ${i} ${describe(w)} is not an object { percent, approval }`);
  }
  const record = w as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== 'percent' && key !== 'approval' && key !== 'analysis') {
      fail(`wave ${i} has an unknown field "${key}": only "percent", "approval" and "analysis" are allowed`);
    }
  }
  const percent = record.percent;
  if (typeof percent !== 'number' || Number.isNaN(percent)) {
    fail(`percent of wave ${i} ${describe(percent)} is not a number: give a number in (0, 100]`);
  }
  if (!(percent > 0 && percent <= 100)) {
    fail(`percent of wave ${i} is ${percent}: it must be in (0, 100] (cumulative share of the target)`);
  }
  const approval = record.approval ?? 'auto';
  if (approval !== 'auto' && approval !== 'manual') {
    fail(`approval of wave ${i} ${describe(approval)} is unknown: use "auto" or "manual"`);
  }
  const analysis = record.analysis ?? false;
  if (typeof analysis !== 'boolean') fail(`analysis of wave ${i} ${describe(analysis)} must be true or false`);
  return analysis ? { percent, approval, analysis } : { percent, approval };
}

function describe(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (value === undefined) return '(missing)';
  try {
    const json = JSON.stringify(value);
    return json === undefined ? String(value) : json.length > 60 ? `${json.slice(0, 57)}...` : json;
  } catch {
    return String(value);
  }
}
