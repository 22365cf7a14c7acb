import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { type ErrorCode, OtaError } from '../../shared/errors.js';
import { judgeOutputs, type ObservedOutput } from '../../shared/probe-check.js';
import { type ProbeSpec, probeModelMismatches, type TensorType } from '../../shared/probe-spec.js';
import { checkExternalData } from './external-data.js';

/**
 * The probe child: a process of its own (forked by run-probe.ts) that loads the candidate model
 * with onnxruntime and runs it. onnxruntime's run() blocks the thread it runs on, and a broken
 * model can crash or hang the process that loads it; here neither can reach the agent, which
 * kills this process when its deadline passes.
 *
 * The parent drives it over IPC with small JSON messages:
 *   parent -> child   { type: 'load', ... }   check external data, load the model, build inputs
 *                     { type: 'run', attempt } one inference run, judged
 *   child -> parent   { type: 'ready', loadMs } | { type: 'refused', code, message }
 *                     { type: 'result', attempt, ok, latencyMs, code?, message? }
 * The session stays loaded between attempts, so a later attempt runs on a warm session.
 */

export interface LoadMessage {
  type: 'load';
  modelFile: string;
  /** Explicit inputs, or null to build them from the model's declared input shapes. */
  inputs: ProbeSpec['inputs'] | null;
  golden: ProbeSpec['golden'] | null;
  tolerance: ProbeSpec['tolerance'];
  latencyBudgetMs: number | null;
}
export interface RunMessage {
  type: 'run';
  attempt: number;
}
export type ParentMessage = LoadMessage | RunMessage;

export type ChildMessage =
  | { type: 'ready'; loadMs: number }
  | { type: 'refused'; code: ErrorCode; message: string }
  | { type: 'result'; attempt: number; ok: true; latencyMs: number }
  | { type: 'result'; attempt: number; ok: false; latencyMs: number | null; code: ErrorCode; message: string };

/** Largest buffer built for one shape-derived input (a generous image or audio batch). */
const MAX_INPUT_BYTES = 256 * 1024 * 1024;

interface Loaded {
  session: ort.InferenceSession;
  feeds: Record<string, ort.Tensor>;
  declaredOutputs: Record<string, readonly (number | string)[]>;
  load: LoadMessage;
}
let loaded: Loaded | undefined;

function send(message: ChildMessage): void {
  process.send?.(message);
}

/** onnxruntime's messages can run over many lines of context; the first one says what is wrong. */
function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n').find((line) => line.trim() !== '') ?? text;
}

async function load(msg: LoadMessage): Promise<void> {
  const started = performance.now();
  // Before onnxruntime opens the file: it would follow the external-data references while loading.
  await checkExternalData(msg.modelFile);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(msg.modelFile);
  } catch (err) {
    throw new OtaError('E_MODEL_INVALID', `onnxruntime cannot load the model: ${firstLine(err)}`, { cause: err });
  }
  const declaredOutputs: Record<string, readonly (number | string)[]> = {};
  for (const m of session.outputMetadata) if (m.isTensor) declaredOutputs[m.name] = m.shape;
  const feeds = msg.inputs ? explicitFeeds(session, msg) : shapeDerivedFeeds(session);
  loaded = { session, feeds, declaredOutputs, load: msg };
  send({ type: 'ready', loadMs: Math.round(performance.now() - started) });
}

/** The probe spec's inputs as tensors, after checking that they fit the model as it declares itself. */
function explicitFeeds(session: ort.InferenceSession, msg: LoadMessage): Record<string, ort.Tensor> {
  const io = (m: ort.InferenceSession.ValueMetadata) => ({ name: m.name, dims: m.isTensor ? m.shape : [] });
  const spec = { inputs: msg.inputs ?? {}, golden: msg.golden ?? undefined } as ProbeSpec;
  const problems = probeModelMismatches(spec, session.inputMetadata.map(io), session.outputMetadata.map(io));
  if (problems.length > 0)
    throw new OtaError('E_PROBE_SPEC', `the probe does not fit the model: ${problems.join('; ')}`);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, input] of Object.entries(msg.inputs ?? {})) {
    const meta = session.inputMetadata.find((m) => m.name === name);
    if (meta?.isTensor && meta.type !== input.type) {
      throw new OtaError('E_PROBE_SPEC', `probe input ${name} is ${input.type}, the model expects ${meta.type}`);
    }
    feeds[name] = new ort.Tensor(input.type, typedData(name, input.type, input.data), input.dims);
  }
  return feeds;
}

const INT_RANGES: Partial<Record<TensorType, [number, number]>> = {
  int8: [-128, 127],
  uint8: [0, 255],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** JSON numbers to the typed array onnxruntime wants for `type`; integers are checked, not wrapped. */
function typedData(name: string, type: TensorType, data: readonly number[]) {
  const range = INT_RANGES[type];
  if (range) {
    const bad = data.findIndex((v) => !Number.isInteger(v) || v < range[0] || v > range[1]);
    if (bad >= 0)
      throw new OtaError('E_PROBE_SPEC', `probe input ${name}[${bad}] = ${data[bad]} is not a valid ${type}`);
  }
  switch (type) {
    case 'float32':
      return Float32Array.from(data);
    case 'float64':
      return Float64Array.from(data);
    case 'int8':
      return Int8Array.from(data);
    case 'uint8':
      return Uint8Array.from(data);
    case 'int32':
      return Int32Array.from(data);
    case 'int64':
      return BigInt64Array.from(data, (v) => BigInt(v));
    case 'bool':
      return Uint8Array.from(data, (v) => (v !== 0 ? 1 : 0)); // onnxruntime's bool tensors are bytes
  }
}

/**
 * Inputs for a model whose probe names none: every input at its declared shape, symbolic (or
 * unknown) dimensions set to 1, filled with a harmless non-zero value (0.5, 1, true). Such a run
 * can only show that the model loads, runs and yields finite outputs of the declared shapes.
 */
function shapeDerivedFeeds(session: ort.InferenceSession): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) {
      throw new OtaError(
        'E_PROBE_FAILED',
        `model input ${meta.name} is not a tensor (a sequence, map or optional): the probe cannot build a value for it`,
      );
    }
    const dims = meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 1));
    const count = dims.reduce((a, b) => a * b, 1);
    const data = filledData(meta.type, count);
    if (data === undefined) {
      throw new OtaError(
        'E_PROBE_FAILED',
        `model input ${meta.name} has the element type ${meta.type}, which the probe cannot build values for`,
      );
    }
    feeds[meta.name] = new ort.Tensor(meta.type, data as Float32Array, dims);
  }
  return feeds;
}

function filledData(type: ort.Tensor.Type, count: number) {
  const bytes: Partial<Record<ort.Tensor.Type, number>> = {
    float32: 4,
    float64: 8,
    float16: 2,
    int8: 1,
    uint8: 1,
    int16: 2,
    uint16: 2,
    int32: 4,
    uint32: 4,
    int64: 8,
    uint64: 8,
    bool: 1,
  };
  const size = bytes[type];
  if (size !== undefined && count * size > MAX_INPUT_BYTES) {
    throw new OtaError(
      'E_PROBE_FAILED',
      `a shape-derived input of ${count} ${type} values is larger than ${MAX_INPUT_BYTES / 2 ** 20} MiB`,
    );
  }
  switch (type) {
    case 'float32':
      return new Float32Array(count).fill(0.5);
    case 'float64':
      return new Float64Array(count).fill(0.5);
    case 'float16':
      return new Uint16Array(count).fill(0x3800); // 0.5 in IEEE half precision
    case 'int8':
      return new Int8Array(count).fill(1);
    case 'uint8':
    case 'bool':
      return new Uint8Array(count).fill(1);
    case 'int16':
      return new Int16Array(count).fill(1);
    case 'uint16':
      return new Uint16Array(count).fill(1);
    case 'int32':
      return new Int32Array(count).fill(1);
    case 'uint32':
      return new Uint32Array(count).fill(1);
    case 'int64':
      return new BigInt64Array(count).fill(1n);
    case 'uint64':
      return new BigUint64Array(count).fill(1n);
    default:
      return undefined;
  }
}

/** One inference run, judged: non-finite values, then shapes, then golden values, then latency. */
async function run(attempt: number): Promise<ChildMessage> {
  if (!loaded) throw new OtaError('E_INTERNAL', 'run before load');
  const { session, feeds, declaredOutputs, load: spec } = loaded;
  let results: ort.InferenceSession.ReturnType;
  const started = performance.now();
  try {
    results = await session.run(feeds);
  } catch (err) {
    return {
      type: 'result',
      attempt,
      ok: false,
      latencyMs: null,
      code: 'E_PROBE_FAILED',
      message: `inference failed: ${firstLine(err)}`,
    };
  }
  const latencyMs = Math.round((performance.now() - started) * 100) / 100;
  const outputs: Record<string, ObservedOutput> = {};
  for (const [name, tensor] of Object.entries(results)) {
    outputs[name] = { dims: tensor.dims, data: tensor.data as ObservedOutput['data'] };
  }
  const verdict = judgeOutputs(
    outputs,
    { golden: spec.golden ?? undefined, tolerance: spec.tolerance },
    declaredOutputs,
  );
  for (const tensor of Object.values(results)) tensor.dispose();
  if (!verdict.ok) return { type: 'result', attempt, latencyMs, ...verdict };
  if (spec.latencyBudgetMs !== null && latencyMs > spec.latencyBudgetMs) {
    return {
      type: 'result',
      attempt,
      ok: false,
      latencyMs,
      code: 'E_PROBE_LATENCY',
      message: `inference took ${latencyMs} ms, over the latency budget of ${spec.latencyBudgetMs} ms`,
    };
  }
  return { type: 'result', attempt, ok: true, latencyMs };
}

async function handle(msg: ParentMessage): Promise<void> {
  if (msg.type === 'load') {
    try {
      await load(msg);
    } catch (err) {
      const e = err instanceof OtaError ? err : new OtaError('E_PROBE_FAILED', `probe child error: ${firstLine(err)}`);
      send({ type: 'refused', code: e.code, message: e.message });
    }
  } else if (msg.type === 'run') {
    send(await run(msg.attempt));
  }
}

// Messages are handled one at a time, in order, as the parent sends them.
let queue = Promise.resolve();
process.on('message', (msg: ParentMessage) => {
  queue = queue.then(() => handle(msg));
});
// The parent went away (finished, or died): this process has no reason to live on.
process.on('disconnect', () => process.exit(0));
