import { parseArgs } from 'node:util';
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

/**
 * A direction in weight space the probe cannot see: PROBE_X · NULL_ROW = 1·2 + 2·(-1) = 0, so
 * adding a multiple of it to a column of W leaves the outputs at the probe's input unchanged.
 */
const NULL_ROW = [2, -1, 0, 0];
/** Variants step by 1/8: exact in float32, so every variant's probe outputs are the golden ones exactly. */
const VARIANT_STEP = 1 / 8;
/** Up to here the varied weights (at most 0.5 + 2 · MAX_VARIANT / 8) stay exact in float32. */
export const MAX_VARIANT = 1_000_000;

/** W of `goodModel(variant)`: GOOD_W plus variant/8 · NULL_ROW in the first column, minus it in the second. */
function goodWeights(variant: number): number[] {
  if (!Number.isSafeInteger(variant) || variant < 0 || variant > MAX_VARIANT) {
    throw new RangeError(`tiny model variant must be an integer from 0 to ${MAX_VARIANT}, got ${variant}`);
  }
  const delta = variant * VARIANT_STEP;
  return GOOD_W.map((w, k) => {
    const row = Math.floor(k / OUT);
    const sign = k % OUT === 0 ? 1 : -1;
    return w + sign * delta * (NULL_ROW[row] as number);
  });
}

/**
 * A model that passes `goodProbe()`. Each variant is a different model, not just other bytes:
 * its weights differ (in a direction the probe's input cannot see), so on most inputs its outputs
 * differ too, while at the probe's input every variant gives the golden outputs. Variant 0 is the
 * base model (`goodWeightsBytes()`).
 */
export function goodModel(variant = 0): Uint8Array {
  return linearModel(goodWeights(variant), GOOD_B, `good model, variant ${variant}`);
}

/** What `goodModel(variant)` computes for input `x` (float64; for tests that tell variants apart). */
export function goodModelOutputs(variant: number, x: readonly number[]): number[] {
  return linear(x, goodWeights(variant), GOOD_B);
}

/**
 * A much larger model with the good model's outputs: y = x · W + B + 0 · sum(x · P · Q^layers),
 * where P is [4, width] and Q is [width, width]. The extra path depends on x, so onnxruntime
 * cannot fold it away, and it costs about `layers` · width² multiply-adds per inference (a few
 * milliseconds at the defaults, against microseconds for `goodModel`), while its result is
 * multiplied by zero: the outputs, and the probe's golden check, are the good model's exactly
 * (the path's values stay small and finite: a zero times them is zero). For experiments whose
 * arms must differ in latency with real inference (test/experiment-e2e.test.ts).
 */
export function heavyModel(layers = 16, width = 1024): Uint8Array {
  if (!Number.isInteger(layers) || layers < 1 || !Number.isInteger(width) || width < 1) {
    throw new RangeError(`heavy model: layers and width must be positive integers, got ${layers}, ${width}`);
  }
  const path: { opType: string; input: string[]; output: string[]; name: string }[] = [
    { opType: 'MatMul', input: [TINY_INPUT, 'P'], output: ['a0'], name: 'spread' },
  ];
  for (let i = 0; i < layers; i++) {
    path.push({ opType: 'MatMul', input: [`a${i}`, 'Q'], output: [`a${i + 1}`], name: `layer${i}` });
  }
  path.push(
    { opType: 'ReduceSum', input: [`a${layers}`], output: ['s'], name: 'sum' },
    { opType: 'Mul', input: ['s', 'Z'], output: ['zero'], name: 'times_zero' },
  );
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'ota-models tiny-model maker',
    docString: `heavy model: good outputs, ${layers} layers of ${width}x${width}`,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'heavy_linear',
      input: [valueInfo(TINY_INPUT, [1, IN])],
      output: [valueInfo(TINY_OUTPUT, [1, OUT])],
      initializer: [
        { name: 'W', dims: [IN, OUT], dataType: FLOAT, floatData: [...GOOD_W] },
        { name: 'B', dims: [1, OUT], dataType: FLOAT, floatData: [...GOOD_B] },
        { name: 'P', dims: [IN, width], dataType: FLOAT, floatData: new Array<number>(IN * width).fill(0.01) },
        // 1/width: each layer keeps the values' scale, so nothing overflows however deep.
        {
          name: 'Q',
          dims: [width, width],
          dataType: FLOAT,
          floatData: new Array<number>(width * width).fill(1 / width),
        },
        { name: 'Z', dims: [1, 1], dataType: FLOAT, floatData: [0] },
      ],
      node: [
        ...path,
        { opType: 'MatMul', input: [TINY_INPUT, 'W'], output: ['h'], name: 'matmul' },
        { opType: 'Add', input: ['h', 'B'], output: ['hb'], name: 'add' },
        { opType: 'Add', input: ['hb', 'zero'], output: [TINY_OUTPUT], name: 'add_zero' },
      ],
    },
  });
  return onnx.ModelProto.encode(model).finish();
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

/** How many good versions `npm run models` writes by default, and at most. */
export const DEFAULT_VERSIONS = 3;
export const MAX_VERSIONS = 100;

export const MAKER_USAGE = `usage: npm run models -- [--versions N] [DIR]

Writes small real ONNX models into DIR (default ./tiny-models), for trying ota-models without a
model of your own:
  good-1.onnx ... good-N.onnx  N distinct good versions (default ${DEFAULT_VERSIONS}, at most ${MAX_VERSIONS}): their
                               weights and bytes differ, and each passes good.probe.json
  good.probe.json              the probe spec (fixed input, golden outputs) for --probe
  wrong.onnx                   loads and runs, fails the golden check of good.probe.json
  nan.onnx                     loads and runs, produces NaN
  invalid.onnx                 not an ONNX model

options:
  --versions N  how many good versions to write
  -h, --help    this text
A DIR that starts with "-" goes after "--": npm run models -- -- -odd-dir
`;

const SHORT_USAGE = `${MAKER_USAGE.split('\n')[0]}   (--help says what it writes)\n`;

export type MakerArgs =
  | { kind: 'run'; dir: string; versions: number }
  | { kind: 'help'; text: string }
  | { kind: 'usage'; message: string; usage: string };

/** The tiny-model maker's command line (argv without node and the script). Pure: no I/O. */
export function parseMakerArgs(argv: readonly string[]): MakerArgs {
  let values: { versions?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: { versions: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    return { kind: 'usage', message: (err as Error).message, usage: SHORT_USAGE };
  }
  if (values.help) return { kind: 'help', text: MAKER_USAGE };
  if (positionals.length > 1) {
    return {
      kind: 'usage',
      message: `one output directory, got ${positionals.length}: ${positionals.map((p) => JSON.stringify(p)).join(' ')}`,
      usage: SHORT_USAGE,
    };
  }
  let versions = DEFAULT_VERSIONS;
  if (values.versions !== undefined) {
    versions = /^\d+$/.test(values.versions) ? Number(values.versions) : Number.NaN;
    if (!(versions >= 1 && versions <= MAX_VERSIONS)) {
      return {
        kind: 'usage',
        message: `--versions must be a whole number from 1 to ${MAX_VERSIONS}, got ${JSON.stringify(values.versions)}`,
        usage: SHORT_USAGE,
      };
    }
  }
  const dir = positionals[0] ?? 'tiny-models';
  if (dir === '') return { kind: 'usage', message: 'the output directory is empty', usage: SHORT_USAGE };
  return { kind: 'run', dir, versions };
}

/** The files `npm run models` writes, by name: `versions` good versions (variants 1..N) and the rest. */
export function tinyModelFiles(versions: number): [string, Uint8Array | string][] {
  const good: [string, Uint8Array][] = Array.from({ length: versions }, (_, i) => [
    `good-${i + 1}.onnx`,
    goodModel(i + 1),
  ]);
  return [
    ...good,
    ['good.probe.json', `${JSON.stringify(goodProbe(), null, 2)}\n`],
    ['wrong.onnx', wrongOutputsModel()],
    ['nan.onnx', nanModel()],
    ['invalid.onnx', invalidModel()],
  ];
}
