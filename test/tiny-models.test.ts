import ort from 'onnxruntime-node';
import t from 'tap';
import {
  goodModel,
  goodProbe,
  invalidModel,
  nanModel,
  TINY_INPUT,
  TINY_OUTPUT,
  wrongOutputsModel,
} from '../scripts/tiny-models.js';
import { judgeOutputs, type ObservedOutput } from '../shared/probe-check.js';
import { ProbeSpecSchema, probeModelMismatches } from '../shared/probe-spec.js';

const probe = ProbeSpecSchema.parse(goodProbe());

/** Runs a model in onnxruntime-node with the probe's inputs and returns its outputs. */
async function run(bytes: Uint8Array): Promise<Record<string, ObservedOutput>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, input] of Object.entries(probe.inputs ?? {})) {
      feeds[name] = new ort.Tensor('float32', Float32Array.from(input.data), input.dims);
    }
    const results = await session.run(feeds);
    return Object.fromEntries(
      Object.entries(results).map(([name, tensor]) => [name, { dims: tensor.dims, data: tensor.data as Float32Array }]),
    );
  } finally {
    await session.release();
  }
}

t.test('the good model loads, declares its I/O, and passes its own probe', async (t) => {
  const session = await ort.InferenceSession.create(goodModel());
  t.same(session.inputNames, [TINY_INPUT]);
  t.same(session.outputNames, [TINY_OUTPUT]);
  const io = (m: (typeof session.inputMetadata)[number]) => ({ name: m.name, dims: m.isTensor ? [...m.shape] : [] });
  t.same(probeModelMismatches(probe, session.inputMetadata.map(io), session.outputMetadata.map(io)), []);
  await session.release();
  const outputs = await run(goodModel());
  t.same(outputs[TINY_OUTPUT]?.dims, [1, 2]);
  t.same(judgeOutputs(outputs, probe, { [TINY_OUTPUT]: [1, 2] }), { ok: true });
  // Variants differ in bytes (so versions have distinct digests) but not in outputs.
  t.not(Buffer.from(goodModel(1)).toString('hex'), Buffer.from(goodModel(2)).toString('hex'));
  t.same(judgeOutputs(await run(goodModel(3)), probe), { ok: true });
});

t.test('the wrong-outputs model runs but fails the golden check', async (t) => {
  const verdict = judgeOutputs(await run(wrongOutputsModel()), probe);
  t.equal(verdict.ok, false);
  t.match(verdict, { code: 'E_PROBE_FAILED', message: /output y\[0\] is .*golden 4\.85/ });
});

t.test('the NaN model runs and is caught as non-finite', async (t) => {
  t.match(judgeOutputs(await run(nanModel()), probe), { ok: false, code: 'E_PROBE_NONFINITE', message: /NaN/ });
});

t.test('the invalid file is refused by onnxruntime', async (t) => {
  await t.rejects(ort.InferenceSession.create(invalidModel()));
});

t.test('judgeOutputs: shapes, missing outputs, tolerance edges', async (t) => {
  const spec = { golden: { y: { dims: [2], data: [1, 100] } }, tolerance: { abs: 0.01, rel: 0.01 } };
  t.same(judgeOutputs({ y: { dims: [2], data: [1.01, 101] } }, spec), { ok: true }, 'within abs + rel*|golden|');
  t.match(judgeOutputs({ y: { dims: [2], data: [1.03, 100] } }, spec), { code: 'E_PROBE_FAILED' });
  t.match(judgeOutputs({ y: { dims: [1, 2], data: [1, 100] } }, spec), { code: 'E_PROBE_FAILED', message: /shape/ });
  t.match(judgeOutputs({ z: { dims: [2], data: [1, 100] } }, spec), {
    code: 'E_PROBE_FAILED',
    message: /no output named y/,
  });
  t.match(judgeOutputs({ y: { dims: [2], data: [1, Number.POSITIVE_INFINITY] } }, spec), { code: 'E_PROBE_NONFINITE' });
  // Without golden outputs: finite values of the declared shape pass; symbolic dims match anything.
  const none = { tolerance: { abs: 0, rel: 0 } };
  t.same(judgeOutputs({ y: { dims: [4, 2], data: new Float32Array(8) } }, none, { y: ['batch', 2] }), { ok: true });
  t.match(judgeOutputs({ y: { dims: [4, 3], data: new Float32Array(12) } }, none, { y: ['batch', 2] }), {
    code: 'E_PROBE_FAILED',
  });
  t.match(judgeOutputs({ y: { dims: [4], data: new Float32Array(4) } }, none, { y: ['batch', 2] }), {
    code: 'E_PROBE_FAILED',
  });
  t.same(judgeOutputs({ y: { dims: [3], data: [1n, 2n, 3n] } }, none, { y: [] }), { ok: true }, 'int64 outputs');
});

t.test('probeModelMismatches names every mismatch', async (t) => {
  const inputs = [{ name: 'x', dims: ['batch', 4] }];
  const outputs = [{ name: 'y', dims: ['batch', 2] }];
  const spec = ProbeSpecSchema.parse({
    inputs: { x: { dims: [1, 5], data: [1, 2, 3, 4, 5] }, extra: { dims: [1], data: [0] } },
    golden: { y: { dims: [1, 3], data: [1, 2, 3] }, z: { dims: [1], data: [1] } },
  });
  const problems = probeModelMismatches(spec, inputs, outputs);
  t.match(problems.join('\n'), /probe input x has dims \[1,5\]/);
  t.match(problems.join('\n'), /probe input extra is not an input/);
  t.match(problems.join('\n'), /golden output y has dims \[1,3\]/);
  t.match(problems.join('\n'), /golden output z is not an output/);
  const missing = ProbeSpecSchema.parse({ inputs: {} });
  t.match(probeModelMismatches(missing, inputs, outputs).join('\n'), /model input x has no value/);
});
