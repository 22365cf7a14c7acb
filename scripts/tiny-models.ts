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

/**
 * Same I/O as the good model (x: float32[1,4] -> y: float32[1,2]) but slow to run: x is
 * broadcast to a 512x512 activation that a Loop multiplies `iterations` times by one shared
 * 512x512 weight. The file stays about 1 MB and loads fast whatever the run time; each iteration
 * costs 134 M multiply-adds (about 0.5 ms on a 2-core AVX-512 server, several times that on
 * smaller CPUs), so the default 8,000 runs for 4 s or more. A Loop and not a chain of nodes, because
 * onnxruntime's session creation grows with the node count (2 s for 10,000 MatMul nodes).
 * Every weight is 1/512, which keeps the values equal to the mean of x (finite, so a probe
 * fails on time and not on NaN): y = [mean(x), mean(x)].
 */
export function slowModel(iterations = 8000): Uint8Array {
  const N = 512;
  const { INT64, BOOL } = onnx.TensorProto.DataType;
  const filled = (count: number, value: number) => new Uint8Array(new Float32Array(count).fill(value).buffer);
  const scalar = (name: string, elemType: number) => ({
    name,
    type: { tensorType: { elemType, shape: { dim: [] } } },
  });
  const square = (name: string) => ({
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimValue: N }, { dimValue: N }] } } },
  });
  // One loop iteration: h = h x W (W comes from the outer graph), keep looping.
  const body = {
    name: 'slow_body',
    input: [scalar('i', INT64), scalar('cond_in', BOOL), square('h_in')],
    output: [scalar('cond_out', BOOL), square('h_out')],
    node: [
      { opType: 'Identity', input: ['cond_in'], output: ['cond_out'], name: 'keep_going' },
      { opType: 'MatMul', input: ['h_in', 'W'], output: ['h_out'], name: 'matmul' },
    ],
  };
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'ota-models tiny-model maker',
    docString: `slow model, ${iterations} iterations of a 512x512 MatMul`,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'tiny_slow',
      input: [valueInfo(TINY_INPUT, [1, IN])],
      output: [valueInfo(TINY_OUTPUT, [1, OUT])],
      initializer: [
        { name: 'expand_shape', dims: [2], dataType: INT64, int64Data: [N, IN] },
        { name: 'trip_count', dims: [], dataType: INT64, int64Data: [iterations] },
        { name: 'W_in', dims: [IN, N], dataType: FLOAT, rawData: filled(IN * N, 1 / IN) },
        { name: 'W', dims: [N, N], dataType: FLOAT, rawData: filled(N * N, 1 / N) },
        { name: 'W_out', dims: [N, OUT], dataType: FLOAT, rawData: filled(N * OUT, 1 / N) },
      ],
      node: [
        // [1,4] -> [512,4] -> [512,512]: an input-dependent activation onnxruntime cannot fold away.
        { opType: 'Expand', input: [TINY_INPUT, 'expand_shape'], output: ['e'], name: 'expand' },
        { opType: 'MatMul', input: ['e', 'W_in'], output: ['h0'], name: 'matmul_in' },
        {
          opType: 'Loop',
          input: ['trip_count', '', 'h0'],
          output: ['h'],
          name: 'loop',
          attribute: [{ name: 'body', type: onnx.AttributeProto.AttributeType.GRAPH, g: body }],
        },
        { opType: 'MatMul', input: ['h', 'W_out'], output: ['o'], name: 'matmul_out' },
        {
          opType: 'ReduceMean',
          input: ['o'],
          output: [TINY_OUTPUT],
          name: 'mean',
          attribute: [
            { name: 'axes', type: onnx.AttributeProto.AttributeType.INTS, ints: [0] },
            { name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 1 },
          ],
        },
      ],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * The good model with its weight W stored as external data at `location` (relative to the model's
 * directory, as ONNX defines it). With a location such as '../../etc/passwd' it is the attack a
 * device must refuse before onnxruntime opens anything; with a file name next to the model that
 * holds the 32 bytes of W (`goodWeightsBytes()`), it is a legitimate external-data model.
 */
export function externalDataModel(location: string): Uint8Array {
  const model = onnx.ModelProto.decode(goodModel());
  const w = model.graph?.initializer?.find((t) => t.name === 'W');
  if (!w) throw new Error('the good model has no W initializer');
  w.floatData = [];
  w.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  w.externalData = [
    { key: 'location', value: location },
    { key: 'offset', value: '0' },
    { key: 'length', value: String(GOOD_W.length * 4) },
  ];
  return onnx.ModelProto.encode(model).finish();
}

/** The raw little-endian float32 bytes of the good model's W, for a legitimate `externalDataModel()` file. */
export function goodWeightsBytes(): Uint8Array {
  return new Uint8Array(Float32Array.from(GOOD_W).buffer);
}

/**
 * The good model's weights with a symbolic batch dimension: x: float32['batch',4] ->
 * y: float32['batch',2], for probes that build their inputs from the declared shapes.
 */
export function dynamicBatchModel(): Uint8Array {
  const model = onnx.ModelProto.decode(goodModel());
  const graph = model.graph;
  for (const io of [...(graph?.input ?? []), ...(graph?.output ?? [])]) {
    const first = io.type?.tensorType?.shape?.dim?.[0];
    if (first) {
      first.dimValue = null;
      first.dimParam = 'batch';
    }
  }
  if (graph) graph.name = 'tiny_linear_dynamic_batch';
  model.docString = 'good model with a symbolic batch dimension';
  return onnx.ModelProto.encode(model).finish();
}
