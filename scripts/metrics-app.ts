import { readlink } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { MetricsClient } from '../shared/metrics/client.js';
import { TINY_INPUT, TINY_OUTPUT } from './tiny-models.js';

/**
 * An example inference application (the demo's, and the metrics end-to-end test's): loads the
 * device's current model the way an application does (models/<name>/current/model.onnx under
 * the agent's state directory), runs inferences on made-up inputs, and reports each one to the
 * agent's metrics socket: the version it actually ran (the `current` link's target, read when
 * it loaded the model), the latency it measured, a confidence and an error flag. Nothing of the
 * inputs or outputs is sent.
 *
 *   node dist/scripts/metrics-app.js --state-dir DIR --model NAME --socket PATH --count N
 *
 * Prints one JSON line at the end: { version, latencies: [...] } (the exact values, which the
 * test compares the coordinator's quantiles against).
 */

function softmaxTop(values: Float32Array): number {
  const max = Math.max(...values);
  const exps = [...values].map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return Math.max(...exps) / sum;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'state-dir': { type: 'string' },
      model: { type: 'string' },
      socket: { type: 'string' },
      count: { type: 'string', default: '200' },
      'error-every': { type: 'string', default: '0' },
    },
  });
  const stateDir = values['state-dir'];
  const model = values.model;
  const socketPath = values.socket;
  if (!stateDir || !model || !socketPath) {
    process.stderr.write(
      'usage: metrics-app --state-dir DIR --model NAME --socket PATH [--count N] [--error-every K]\n',
    );
    process.exit(2);
  }
  const count = Number(values.count);
  const errorEvery = Number(values['error-every']);
  const current = path.join(stateDir, 'models', model, 'current');
  // The version is the name of the directory `current` points to (agent/install/model-store.ts).
  const version = path.basename(await readlink(current));
  const session = await ort.InferenceSession.create(path.join(current, 'model.onnx'));
  const client = new MetricsClient({ socketPath });
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const x = Float32Array.from({ length: 4 }, (_, j) => Math.sin(i + j));
    const started = performance.now();
    const out = await session.run({ [TINY_INPUT]: new ort.Tensor('float32', x, [1, 4]) });
    const latencyMs = performance.now() - started;
    latencies.push(latencyMs);
    const y = out[TINY_OUTPUT]?.data as Float32Array;
    client.report({
      model,
      version,
      latencyMs,
      confidence: softmaxTop(y),
      error: errorEvery > 0 && i % errorEvery === errorEvery - 1,
    });
  }
  await client.flush();
  await client.close();
  await session.release();
  process.stdout.write(`${JSON.stringify({ version, latencies, stats: client.stats })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`metrics-app: ${(err as Error).message}\n`);
  process.exit(1);
});
