import type { ErrorCode } from './errors.js';
import { ownEntry } from './id-record.js';
import type { GoldenOutput, ProbeSpec } from './probe-spec.js';

/** An output as the probe child reads it from onnxruntime: its shape and its values. */
export interface ObservedOutput {
  dims: readonly number[];
  data: ArrayLike<number | bigint | boolean>;
}

export type ProbeVerdict = { ok: true } | { ok: false; code: ErrorCode; message: string };

/**
 * Judges one inference run against the probe spec; pure, so the rules are unit-tested without a
 * model. Order matters for the reported reason: a NaN output is reported as non-finite, not as a
 * golden mismatch.
 */
export function judgeOutputs(
  outputs: Record<string, ObservedOutput>,
  spec: Pick<ProbeSpec, 'golden' | 'tolerance'>,
  declaredDims?: Record<string, readonly (number | string)[]>,
): ProbeVerdict {
  for (const [name, out] of Object.entries(outputs)) {
    for (let i = 0; i < out.data.length; i++) {
      const v = out.data[i];
      if (typeof v === 'number' && !Number.isFinite(v)) {
        return { ok: false, code: 'E_PROBE_NONFINITE', message: `output ${name}[${i}] is ${v}` };
      }
    }
    const declared = ownEntry(declaredDims, name);
    if (declared && !shapeMatches(out.dims, declared)) {
      return {
        ok: false,
        code: 'E_PROBE_FAILED',
        message: `output ${name} has shape ${JSON.stringify(out.dims)}, the model declares ${JSON.stringify(declared)}`,
      };
    }
  }
  for (const [name, golden] of Object.entries(spec.golden ?? {})) {
    const out = ownEntry(outputs, name);
    if (!out) return { ok: false, code: 'E_PROBE_FAILED', message: `the model produced no output named ${name}` };
    const mismatch = compareToGolden(name, out, golden, spec.tolerance);
    if (mismatch) return { ok: false, code: 'E_PROBE_FAILED', message: mismatch };
  }
  return { ok: true };
}

function shapeMatches(actual: readonly number[], declared: readonly (number | string)[]): boolean {
  if (declared.length === 0) return true; // shape unknown to the model: nothing to check
  if (actual.length !== declared.length) return false;
  // Symbolic dimensions (strings, or -1 in some exporters) match any size.
  return declared.every((d, i) => typeof d === 'string' || d < 0 || d === actual[i]);
}

function compareToGolden(
  name: string,
  out: ObservedOutput,
  golden: GoldenOutput,
  tolerance: ProbeSpec['tolerance'],
): string | undefined {
  if (out.dims.length !== golden.dims.length || out.dims.some((d, i) => d !== golden.dims[i])) {
    return `output ${name} has shape ${JSON.stringify(out.dims)}, golden is ${JSON.stringify(golden.dims)}`;
  }
  for (let i = 0; i < golden.data.length; i++) {
    const expected = golden.data[i] as number;
    const actual = Number(out.data[i]);
    // numpy.isclose's rule: |a - e| <= abs + rel * |e|
    if (!(Math.abs(actual - expected) <= tolerance.abs + tolerance.rel * Math.abs(expected))) {
      return `output ${name}[${i}] is ${actual}, golden ${expected} (tolerance abs ${tolerance.abs}, rel ${tolerance.rel})`;
    }
  }
  return undefined;
}
