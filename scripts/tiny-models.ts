import onnxProto from 'onnx-proto';
import type { ProbeSpecInput } from '../shared/probe-spec.js';

/**
 * Tiny, real ONNX models for tests and the demo (no model hub is reachable). Each is
 * y = x · W + B with x: float32[1,4], y: float32[1,2], built as protobuf with onnx-proto, so
 * onnxruntime loads and runs them like any exported model.
 */

const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;

export const TINY_INPUT = 'x';
export const TINY_OUTPUT = 'y';
const IN = 4;
const OUT = 2;

/** The good model's weights; the probe's golden outputs are computed from them. */
const GOOD_W = [0.5, -1.0, 0.25, 2.0, -0.75, 0.5, 1.5, -0.25]; // row-major [4,2]
const GOOD_B = [0.1, -0.2];
const PROBE_X = [1, 2, 3, 4];

function valueInfo(name: string, dims: number[]) {
  return {
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  };
}

function linearModel(w: readonly number[], b: readonly number[], docString: string): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'ota-models tiny-model maker',
    docString,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'tiny_linear',
      input: [valueInfo(TINY_INPUT, [1, IN])],
      output: [valueInfo(TINY_OUTPUT, [1, OUT])],
      initializer: [
        { name: 'W', dims: [IN, OUT], dataType: FLOAT, floatData: [...w] },
        { name: 'B', dims: [1, OUT], dataType: FLOAT, floatData: [...b] },
      ],
      node: [
        { opType: 'MatMul', input: [TINY_INPUT, 'W'], output: ['h'], name: 'matmul' },
        { opType: 'Add', input: ['h', 'B'], output: [TINY_OUTPUT], name: 'add' },
      ],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

function linear(x: readonly number[], w: readonly number[], b: readonly number[]): number[] {
  return Array.from({ length: OUT }, (_, j) => {
    let sum = b[j] as number;
    for (let i = 0; i < IN; i++) sum += (x[i] as number) * (w[i * OUT + j] as number);
    return sum;
  });
}

/** A model that passes `goodProbe()`. `variant` goes into the doc string, so versions differ in bytes but not in outputs. */
export function goodModel(variant = 0): Uint8Array {
  return linearModel(GOOD_W, GOOD_B, `good model, variant ${variant}`);
}

/** Loads and runs, but its outputs are wrong: fails the golden check of `goodProbe()`. */
export function wrongOutputsModel(): Uint8Array {
  return linearModel(
    GOOD_W.map((v) => -v),
    GOOD_B,
    'wrong outputs',
  );
}

/** Loads and runs, but every output is NaN. */
export function nanModel(): Uint8Array {
  return linearModel(GOOD_W, [Number.NaN, Number.NaN], 'NaN outputs');
}

/** Bytes that are not an ONNX model at all. */
export function invalidModel(): Uint8Array {
  return new TextEncoder().encode('this is not an ONNX model, onnxruntime must refuse to load it\n');
}

/** The probe spec the good model passes: fixed input, golden outputs, tolerance. */
export function goodProbe(): ProbeSpecInput {
  return {
    inputs: { [TINY_INPUT]: { type: 'float32', dims: [1, IN], data: PROBE_X } },
    golden: { [TINY_OUTPUT]: { dims: [1, OUT], data: linear(PROBE_X, GOOD_W, GOOD_B) } },
    tolerance: { abs: 1e-4, rel: 1e-4 },
    latencyBudgetMs: 1000,
    attempts: 2,
    timeoutMs: 15_000,
    initialDelayMs: 0,
  };
}
