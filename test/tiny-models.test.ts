import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import t from 'tap';
import { runProbe } from '../agent/probe/run-probe.js';
import {
  goodModel,
  goodModelOutputs,
  goodProbe,
  invalidModel,
  MAX_VARIANT,
  nanModel,
  parseMakerArgs,
  TINY_INPUT,
  TINY_OUTPUT,
  wrongOutputsModel,
} from '../scripts/tiny-models.js';
import { judgeOutputs, type ObservedOutput } from '../shared/probe-check.js';
import { ProbeSpecSchema, probeModelMismatches } from '../shared/probe-spec.js';

const probe = ProbeSpecSchema.parse(goodProbe());

/** Runs a model in onnxruntime-node with the probe's inputs (or `x`) and returns its outputs. */
async function run(bytes: Uint8Array, x?: number[]): Promise<Record<string, ObservedOutput>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, input] of Object.entries(probe.inputs ?? {})) {
      feeds[name] = new ort.Tensor('float32', Float32Array.from(x ?? input.data), input.dims);
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
});

t.test('good variants are distinct models: other weights and outputs, the same probe passes', async (t) => {
  // An input the probe does not use: here the variants' outputs differ.
  const other = [1, 0, 0, 0];
  const seen = new Set<string>();
  for (const variant of [0, 1, 2, 3, MAX_VARIANT]) {
    const bytes = goodModel(variant);
    seen.add(createHash('sha256').update(bytes).digest('hex'));
    t.same(judgeOutputs(await run(bytes), probe), { ok: true }, `variant ${variant} passes the probe`);
    const y = (await run(bytes, other))[TINY_OUTPUT]?.data as Float32Array;
    const expected = goodModelOutputs(variant, other);
    t.ok(
      // float32 against float64: within float32's precision.
      y.every((v, i) => Math.abs(v - (expected[i] as number)) <= 1e-3 + 1e-6 * Math.abs(expected[i] as number)),
      `variant ${variant} computes its own weights: ${[...y]} ~ ${expected}`,
    );
    seen.add(`outputs ${[...y].map((v) => v.toFixed(3))}`);
  }
  t.equal(seen.size, 10, 'five variants: five digests and five different outputs off the probe input');
  for (const bad of [-1, 1.5, MAX_VARIANT + 1]) t.throws(() => goodModel(bad), RangeError, `variant ${bad}`);
});

// The maker as a user runs it (`npm run models -- ...` runs this compiled script; `npm test`
// builds first).
const MAKER = fileURLToPath(new URL('../dist/scripts/make-tiny-models.js', import.meta.url));

function maker(args: string[], cwd: string) {
  if (!existsSync(MAKER)) throw new Error(`${MAKER} is missing: run \`npm run build\` first`);
  const r = spawnSync(process.execPath, [MAKER, ...args], { cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('npm run models -- --help: prints usage, exit 0, writes nothing', async (t) => {
  for (const flag of ['--help', '-h']) {
    const cwd = t.testdir();
    const r = maker([flag], cwd);
    t.equal(r.code, 0, `${flag}: exit 0`);
    t.match(r.stdout, /^usage: npm run models -- \[--versions N\] \[DIR\]/);
    t.match(r.stdout, /good-1\.onnx \.\.\. good-N\.onnx/);
    t.same(await fs.readdir(cwd), [], `${flag}: no directory named ${flag} (or anything else) was created`);
  }
});

t.test('npm run models: usage errors exit 2 and name the problem, writing nothing', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--bogus'], /Unknown option '--bogus'/],
    [['a', 'b'], /one output directory, got 2: "a" "b"/],
    [['--versions', '0'], /--versions must be a whole number from 1 to 100, got "0"/],
    [['--versions', 'x'], /--versions must be a whole number from 1 to 100, got "x"/],
    [['--versions'], /--versions/],
  ];
  for (const [args, message] of cases) {
    const cwd = t.testdir();
    const r = maker(args, cwd);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, message);
    t.match(r.stderr, /usage: npm run models/);
    t.same(await fs.readdir(cwd), [], `${args.join(' ')}: nothing written`);
  }
  t.match(parseMakerArgs(['--', '-odd']), { kind: 'run', dir: '-odd', versions: 3 }, 'a dash directory after --');
});

t.test('npm run models -- --versions 3 DIR: distinct versions, each passes the agent health probe', async (t) => {
  const cwd = t.testdir();
  const r = maker(['--versions', '3', 'models'], cwd);
  t.equal(r.code, 0, r.stderr);
  const dir = path.join(cwd, 'models');
  t.same((await fs.readdir(dir)).sort(), [
    'good-1.onnx',
    'good-2.onnx',
    'good-3.onnx',
    'good.probe.json',
    'invalid.onnx',
    'nan.onnx',
    'wrong.onnx',
  ]);
  const spec = ProbeSpecSchema.parse(JSON.parse(await fs.readFile(path.join(dir, 'good.probe.json'), 'utf8')));
  const digests = new Set<string>();
  for (const name of ['good-1.onnx', 'good-2.onnx', 'good-3.onnx']) {
    const file = path.join(dir, name);
    digests.add(
      createHash('sha256')
        .update(await fs.readFile(file))
        .digest('hex'),
    );
    // The agent's own probe: a forked child loads the model in onnxruntime and judges its outputs.
    const result = await runProbe({
      modelFile: file,
      manifest: { inputs: [], outputs: [], probe: spec },
      defaults: { timeoutMs: 20_000, attempts: 1, initialDelayMs: 0 },
      execAllowlist: [],
    });
    t.match(result, { ok: true }, `${name} passes the health probe`);
  }
  t.equal(digests.size, 3, 'three versions, three digests');
  const wrong = await runProbe({
    modelFile: path.join(dir, 'wrong.onnx'),
    manifest: { inputs: [], outputs: [], probe: { ...spec, attempts: 1 } },
    defaults: { timeoutMs: 20_000, attempts: 1, initialDelayMs: 0 },
    execAllowlist: [],
  });
  t.match(wrong, { ok: false }, 'wrong.onnx fails it');
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
