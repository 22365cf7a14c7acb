import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import t, { type Test } from 'tap';
import { externalDataRefs, externalLocationProblem } from '../agent/probe/external-data.js';
import { runExtraProbe } from '../agent/probe/extra-probes.js';
import { type ProbeRequest, type ProbeResult, runProbe } from '../agent/probe/run-probe.js';
import {
  dynamicBatchModel,
  externalDataModel,
  goodModel,
  goodProbe,
  goodWeightsBytes,
  invalidModel,
  nanModel,
  slowModel,
  wrongOutputsModel,
} from '../scripts/tiny-models.js';
import { isOtaError } from '../shared/errors.js';
import { type ProbeSpecInput, ProbeSpecSchema } from '../shared/probe-spec.js';

/**
 * The inference health probe end to end: real onnxruntime in real forked children, a real HTTP
 * server, real programs. Every probe also checks that its child is gone once runProbe returns.
 * Under tap the child runs TypeScript through the loader, so starting it takes about a second
 * here (compiled, about 0.2 s); timeouts below leave room for that.
 */

const { onnx } = onnxProto;
// The agent defaults of these probes (the ones without a spec run under them). The timeout is a
// bound on a hung probe, not the subject: on a loaded 2-core machine starting the child under the
// TypeScript loader and loading the model once took more than 20 s (attempts 0, E_PROBE_TIMEOUT),
// so it is generous. The tests of the timeout itself set their own.
const DEFAULTS = { timeoutMs: 120_000, attempts: 1, initialDelayMs: 0 };

interface Probed {
  result: ProbeResult;
  pid: number | undefined;
  ms: number;
}

/** Writes `bytes` as model.onnx in a fresh directory (plus `files`) and probes it. */
async function probe(
  t: Test,
  bytes: Uint8Array,
  spec: ProbeSpecInput | null,
  options: Partial<ProbeRequest> & { files?: Record<string, unknown> } = {},
): Promise<Probed> {
  const { files, ...request } = options;
  const dir = t.testdir({ 'model.onnx': Buffer.from(bytes), ...files });
  let pid: number | undefined;
  const started = performance.now();
  const result = await runProbe({
    modelFile: path.join(dir, 'model.onnx'),
    manifest: { inputs: [], outputs: [], probe: spec === null ? null : ProbeSpecSchema.parse(spec) },
    defaults: DEFAULTS,
    execAllowlist: [],
    onChild: (p) => {
      pid = p;
    },
    ...request,
  });
  const ms = performance.now() - started;
  if (pid !== undefined) assertGone(t, pid);
  return { result, pid, ms };
}

/**
 * Resolves once `pid` has exited (no such process, or a zombie waiting for a parent to reap it:
 * an orphan's parent is PID 1, which may reap late or never in a container). Rejects after 30 s,
 * a limit only for a process that was never killed (the ones here would live 1000 s).
 */
async function waitUntilGone(pid: number): Promise<void> {
  const gone = async () => {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    return /^\d+ \(.*\) Z/.test(stat);
  };
  for (let i = 0; i < 1_500; i++) {
    if (await gone()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} is still running`);
}

function assertGone(t: Test, pid: number): void {
  t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `the probe child ${pid} is gone`);
}

/** goodProbe() with a single attempt, plus `more`. */
function spec(more: Partial<ProbeSpecInput> = {}): ProbeSpecInput {
  return { ...goodProbe(), attempts: 1, ...more };
}

/** The wall time of a whole passing probe here: child start-up included (measured by the first test). */
let goodProbeMs = 1_500;

t.test('the good model passes its probe', async (t) => {
  const { result, pid, ms } = await probe(t, goodModel(), goodProbe());
  t.match(result, { ok: true, attempts: 1, latencyMs: Number });
  t.ok(pid, 'a child was started');
  // Per inference run, not the whole probe (which includes the child's start and the model load).
  if (result.ok) t.ok(result.latencyMs >= 0 && result.latencyMs < ms, 'latency measured per run');
  goodProbeMs = ms;
  t.comment(`a whole probe takes ${Math.round(ms)} ms here`);
});

t.test('without a probe spec: inputs from the declared shapes, agent defaults', async (t) => {
  t.match((await probe(t, goodModel(), null)).result, { ok: true, attempts: 1 });
  // A symbolic batch dimension becomes 1, and the output's symbolic dimension matches it.
  t.match((await probe(t, dynamicBatchModel(), null)).result, { ok: true, attempts: 1 });
});

t.test('wrong outputs fail the golden check, after every attempt', async (t) => {
  // goodProbe() asks for 2 attempts.
  const { result } = await probe(t, wrongOutputsModel(), goodProbe());
  t.match(result, { ok: false, attempts: 2, code: 'E_PROBE_FAILED', message: /output y\[0\] is .*golden 4\.85/ });
});

t.test('NaN outputs are reported as non-finite', async (t) => {
  const { result } = await probe(t, nanModel(), spec());
  t.match(result, { ok: false, attempts: 1, code: 'E_PROBE_NONFINITE', message: /NaN/ });
});

t.test('a file onnxruntime cannot load is E_MODEL_INVALID, before any attempt', async (t) => {
  const { result } = await probe(t, invalidModel(), goodProbe());
  t.match(result, { ok: false, attempts: 0, code: 'E_MODEL_INVALID' });
  // A protobuf that decodes but is no valid graph: onnxruntime's own refusal, first line only.
  const noGraph = onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 8 })).finish();
  const second = await probe(t, noGraph, goodProbe());
  t.match(second.result, { ok: false, attempts: 0, code: 'E_MODEL_INVALID', message: /onnxruntime cannot load/ });
  if (!second.result.ok) t.notMatch(second.result.message, /\n/);
});

t.test('a probe that does not fit the model is E_PROBE_SPEC', async (t) => {
  const wrongType = spec({ inputs: { x: { type: 'int64', dims: [1, 4], data: [1, 2, 3, 4] } }, golden: undefined });
  t.match((await probe(t, goodModel(), wrongType)).result, {
    ok: false,
    code: 'E_PROBE_SPEC',
    message: /x is int64, the model expects float32/,
  });
  const wrongName = spec({ inputs: { z: { dims: [1, 4], data: [1, 2, 3, 4] } }, golden: undefined });
  t.match((await probe(t, goodModel(), wrongName)).result, {
    ok: false,
    code: 'E_PROBE_SPEC',
    message: /z is not an input/,
  });
});

t.test('a slow model is killed at the timeout', async (t) => {
  // The slow model's run takes minutes: a timeout that did not fire would leave the probe
  // running past the test's own limit. The code says the timeout fired; probe() checks the
  // child is gone.
  const { result, pid } = await probe(t, slowModel(), spec({ golden: undefined, timeoutMs: 500 }));
  t.match(result, { ok: false, code: 'E_PROBE_TIMEOUT', message: /within 500 ms/ });
  t.ok(pid, 'a child was started');
});

t.test('a child blocked in run() is killed at the timeout', async (t) => {
  // Long enough for the child to start and load here, far too short for the slow model's run.
  // Generous: on a loaded machine loading once took more than twice the good probe's time plus a
  // second, and the child was killed while loading (attempts 0). The run is made long enough to
  // outlast any such timeout: 1,000,000 iterations is about 20 minutes on a fast 2-core machine
  // (the default 8,000, ~10 s there, once finished under a timeout stretched by a loaded machine).
  const timeoutMs = Math.ceil(goodProbeMs * 4 + 5_000);
  const { result, pid } = await probe(t, slowModel(1_000_000), spec({ golden: undefined, timeoutMs }));
  t.match(result, { ok: false, attempts: 1, code: 'E_PROBE_TIMEOUT', message: /running inference, attempt 1/ });
  t.ok(pid, 'a child was started (probe() checks it is gone)');
});

t.test('a child that dies without a verdict is E_PROBE_FAILED, saying how', async (t) => {
  // As the kernel's OOM killer would do it.
  const { result } = await probe(t, slowModel(), spec({ golden: undefined }), {
    onChild: (pid) => {
      setTimeout(() => process.kill(pid, 'SIGKILL'), goodProbeMs + 300);
    },
  });
  t.match(result, { ok: false, code: 'E_PROBE_FAILED', message: /^the probe child was killed by SIGKILL while / });
});

t.test('over the latency budget is E_PROBE_LATENCY', async (t) => {
  // 50 iterations of a 512x512 MatMul: tens of milliseconds on any CPU, never under 1 ms.
  const { result } = await probe(t, slowModel(50), spec({ golden: undefined, latencyBudgetMs: 1 }));
  t.match(result, { ok: false, attempts: 1, code: 'E_PROBE_LATENCY', message: /over the latency budget of 1 ms/ });
  // The same model within a generous budget passes, golden values included: y = mean(x).
  const golden = { y: { dims: [1, 2], data: [2.5, 2.5] } };
  t.match((await probe(t, slowModel(50), spec({ golden, latencyBudgetMs: 10_000 }))).result, { ok: true });
});

t.test('the initial delay comes before the first attempt', async (t) => {
  const initialDelayMs = Math.ceil(goodProbeMs + 500);
  const { result, ms } = await probe(t, goodModel(), spec({ initialDelayMs }));
  t.match(result, { ok: true });
  t.ok(ms >= initialDelayMs, `took ${Math.round(ms)} ms, initial delay ${initialDelayMs} ms`);
});

t.test('external data outside the model directory is refused before loading', async (t) => {
  // More locations are covered by the externalLocationProblem cases below.
  const { result } = await probe(t, externalDataModel('../../etc/passwd'), goodProbe());
  t.match(result, {
    ok: false,
    attempts: 0,
    code: 'E_EXTERNAL_DATA',
    message: 'tensor "W" of the model has external data that points outside the model directory (../../etc/passwd)',
  });
  // A symlink next to the model that leads out is refused too.
  const viaLink = await probe(t, externalDataModel('w.bin'), goodProbe(), {
    files: { 'w.bin': t.fixture('symlink', '/etc/passwd') },
  });
  t.match(viaLink.result, { ok: false, code: 'E_EXTERNAL_DATA', message: /resolves outside the model directory/ });
  // External data inside the directory is legitimate and loads.
  const inside = await probe(t, externalDataModel('w.bin'), goodProbe(), {
    files: { 'w.bin': Buffer.from(goodWeightsBytes()) },
  });
  t.match(inside.result, { ok: true });
});

t.test('external data references are found at any depth', async (t) => {
  const external = (location: string) => ({
    name: `t_${location}`,
    dims: [1],
    dataType: onnx.TensorProto.DataType.FLOAT,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [{ key: 'location', value: location }],
  });
  const { GRAPH, TENSOR } = onnx.AttributeProto.AttributeType;
  const constant = (location: string) => ({
    opType: 'Constant',
    output: ['c'],
    attribute: [{ name: 'value', type: TENSOR, t: external(location) }],
  });
  const model = onnx.ModelProto.create({
    graph: {
      initializer: [external('top.bin')],
      sparseInitializer: [{ values: external('sparse.bin'), indices: { name: 'i', dims: [1] } }],
      node: [
        {
          opType: 'If',
          attribute: [
            { name: 'then_branch', type: GRAPH, g: { node: [constant('then.bin')] } },
            // A subgraph in a subgraph.
            {
              name: 'else_branch',
              type: GRAPH,
              g: {
                node: [{ opType: 'Loop', attribute: [{ name: 'body', g: { initializer: [external('deep.bin')] } }] }],
              },
            },
          ],
        },
      ],
    },
    functions: [{ name: 'f', node: [constant('function.bin')] }],
  });
  const decoded = onnx.ModelProto.decode(onnx.ModelProto.encode(model).finish());
  t.same(
    externalDataRefs(decoded)
      .map((r) => r.location)
      .sort(),
    ['deep.bin', 'function.bin', 'sparse.bin', 'then.bin', 'top.bin'],
  );
  // externalData entries without the EXTERNAL flag count too; a missing location is reported.
  const flagless = onnx.ModelProto.create({
    graph: { initializer: [{ name: 'a', externalData: [{ key: 'offset', value: '0' }] }] },
  });
  t.same(externalDataRefs(flagless), [{ tensor: 'a', location: undefined }]);

  const dir = '/var/lib/ota-agent/models/m/1';
  for (const ok of ['w.bin', 'sub/w.bin', 'sub/../w.bin', './w.bin']) {
    t.equal(externalLocationProblem(ok, dir), undefined, ok);
  }
  for (const bad of ['', '.', '..', '../w.bin', '/etc/passwd', 'sub/../../w.bin', 'a\\b', 'w\0.bin']) {
    t.type(externalLocationProblem(bad, dir), 'string', JSON.stringify(bad));
  }
  t.equal(externalLocationProblem(undefined, dir), 'has no location');
});

t.test('extra probes', async (t) => {
  /** Called when a request for /hang arrives (the probe deadline test passes its deadline then). */
  let onHang: (() => void) | undefined;
  const server = http.createServer((req, res) => {
    if (req.url === '/hang') {
      onHang?.();
      return; // never answers
    }
    res.statusCode = req.url === '/healthz' ? 200 : 500;
    res.end(res.statusCode === 200 ? 'ok' : 'broken');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dir = t.testdir({ ready: 'yes', empty: '' });

  t.test('http: 2xx passes, anything else is E_PROBE_EXTRA naming the URL', async (t) => {
    const ok = await probe(t, goodModel(), spec({ extra: [{ kind: 'http', url: `${base}/healthz` }] }));
    t.match(ok.result, { ok: true, attempts: 1 });
    const failing = await probe(t, goodModel(), goodProbe(), {
      manifest: {
        inputs: [],
        outputs: [],
        probe: ProbeSpecSchema.parse({ ...goodProbe(), extra: [{ kind: 'http', url: `${base}/broken` }] }),
      },
    });
    t.match(failing.result, {
      ok: false,
      attempts: 2, // the whole probe is attempted again, inference included
      code: 'E_PROBE_EXTRA',
      message: `extra probe http ${base}/broken answered HTTP 500`,
    });
  });

  t.test('the probe deadline covers the extra probes', async (t) => {
    // The extra probe alone would wait 10 minutes: E_PROBE_TIMEOUT naming the extra probes is
    // the probe's deadline firing. The deadline is made to pass once the extra probe's request
    // has arrived, so how long loading takes on a busy machine does not matter (a timer of twice a
    // good probe plus a second once passed while the model was still loading).
    const timeoutMs = 45_000;
    const hang = spec({ timeoutMs, extra: [{ kind: 'http', url: `${base}/hang`, timeoutMs: 600_000 }] });
    const started: number[] = [];
    let cancelled = 0;
    const { result } = await probe(t, goodModel(), hang, {
      startDeadline: (ms, expire) => {
        started.push(ms);
        onHang = expire;
        return () => {
          cancelled++;
        };
      },
    });
    onHang = undefined;
    t.same(started, [timeoutMs], 'one deadline, of the spec timeoutMs');
    t.equal(cancelled, 1, 'the deadline is cancelled when the run ends');
    t.match(result, {
      ok: false,
      attempts: 1,
      code: 'E_PROBE_TIMEOUT',
      message: `the probe did not finish within ${timeoutMs} ms (it was running the extra probes, attempt 1); the probe child was killed`,
    });
  });

  t.test('http: no answer within its timeout, nothing listening', async (t) => {
    const ctx = { execAllowlist: [] };
    t.match(await runExtraProbe({ kind: 'http', url: `${base}/hang`, timeoutMs: 200 }, ctx), {
      ok: false,
      code: 'E_PROBE_EXTRA',
      message: /did not answer within 200 ms/,
    });
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    t.match(await runExtraProbe({ kind: 'http', url: `http://127.0.0.1:${port}/`, timeoutMs: 2000 }, ctx), {
      ok: false,
      code: 'E_PROBE_EXTRA',
      message: /ECONNREFUSED/,
    });
  });

  t.test('file: exists and is not empty', async (t) => {
    const present = await probe(t, goodModel(), spec({ extra: [{ kind: 'file', path: path.join(dir, 'ready') }] }));
    t.match(present.result, { ok: true });
    const missing = path.join(dir, 'missing');
    t.match((await probe(t, goodModel(), spec({ extra: [{ kind: 'file', path: missing }] }))).result, {
      ok: false,
      code: 'E_PROBE_EXTRA',
      message: `extra probe file ${missing} does not exist`,
    });
    const ctx = { execAllowlist: [] };
    t.match(await runExtraProbe({ kind: 'file', path: path.join(dir, 'empty') }, ctx), { message: /is empty/ });
    t.match(await runExtraProbe({ kind: 'file', path: dir }, ctx), { message: /not a regular file/ });
  });

  t.test('exec: allowlisted programs only, exit 0 passes', async (t) => {
    const allow = { execAllowlist: ['/bin/true', '/bin/false', '/bin/sh'] };
    const ok = await probe(t, goodModel(), spec({ extra: [{ kind: 'exec', path: '/bin/true' }] }), allow);
    t.match(ok.result, { ok: true });
    const failing = await probe(t, goodModel(), spec({ extra: [{ kind: 'exec', path: '/bin/false' }] }), allow);
    t.match(failing.result, {
      ok: false,
      code: 'E_PROBE_EXTRA',
      message: 'extra probe exec /bin/false exited with code 1',
    });
    // Not on the allowlist: refused before a child is even started.
    const denied = await probe(t, goodModel(), spec({ extra: [{ kind: 'exec', path: '/bin/true' }] }), {
      execAllowlist: ['/usr/bin/true'],
    });
    t.match(denied.result, { ok: false, attempts: 0, code: 'E_NOT_ALLOWED', message: /\/bin\/true is not on/ });
    t.equal(denied.pid, undefined, 'no probe child');
    // Fixed argv, no shell: the argument reaches the program as one string; stderr explains a failure.
    const argv = ['-c', 'echo "broken: $0" >&2; exit 3', '$(touch /tmp/nope);x'];
    t.match(await runExtraProbe({ kind: 'exec', path: '/bin/sh', argv, timeoutMs: 5000 }, allow), {
      ok: false,
      code: 'E_PROBE_EXTRA',
      message: /exited with code 3: broken: \$\(touch \/tmp\/nope\);x$/,
    });
    // Stopped from outside (deadline, shutdown): rejects with the reason, the program is killed.
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error('deadline')), 100);
    const stopped = runExtraProbe(
      { kind: 'exec', path: '/bin/sh', argv: ['-c', 'sleep 30'], timeoutMs: 60_000 },
      { ...allow, signal: stop.signal },
    );
    await t.rejects(stopped, { message: 'deadline' });
    // A program past its timeout is killed, with what it started (its process group). Both
    // sleeps outlive the test: waiting for the program, or for the child holding its stdout,
    // would time the test out; the background sleep's pid shows that it was killed too.
    const pidFile = path.join(dir, 'background.pid');
    const slow = await runExtraProbe(
      {
        kind: 'exec',
        path: '/bin/sh',
        argv: ['-c', `sleep 1000 & echo $! > '${pidFile}'; sleep 1000`],
        timeoutMs: 300,
      },
      allow,
    );
    t.match(slow, { ok: false, code: 'E_PROBE_EXTRA', message: /did not finish within 300 ms/ });
    const background = Number(await fs.readFile(pidFile, 'utf8'));
    await t.resolves(waitUntilGone(background), `the program's own child ${background} was killed`);
  });
});

t.test('aborting (agent shutdown) kills the child and rejects', async (t) => {
  const dir = t.testdir({ 'model.onnx': Buffer.from(slowModel()) });
  const controller = new AbortController();
  let pid: number | undefined;
  const pending = runProbe({
    modelFile: path.join(dir, 'model.onnx'),
    manifest: { inputs: [], outputs: [], probe: null },
    defaults: { ...DEFAULTS, timeoutMs: 60_000 },
    execAllowlist: [],
    signal: controller.signal,
    onChild: (p) => {
      pid = p;
      setTimeout(() => controller.abort(new Error('agent stopping')), goodProbeMs + 500);
    },
  });
  // Aborted, not E_PROBE_TIMEOUT at the 60 s limit: the abort stopped the run at once.
  await t.rejects(pending, { code: 'E_PROBE_FAILED', message: /aborted.*agent stopping/ });
  if (pid !== undefined) assertGone(t, pid);
  // Already aborted: no child at all.
  let forked = false;
  const again = await runProbe({
    modelFile: path.join(dir, 'model.onnx'),
    manifest: { inputs: [], outputs: [], probe: null },
    defaults: DEFAULTS,
    execAllowlist: [],
    signal: AbortSignal.abort(),
    onChild: () => {
      forked = true;
    },
  }).catch((err: unknown) => err);
  t.ok(isOtaError(again, 'E_PROBE_FAILED'));
  t.notOk(forked);
});
