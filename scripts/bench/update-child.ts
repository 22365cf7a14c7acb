#!/usr/bin/env node
import { performance } from 'node:perf_hooks';
import type { Target } from '../../agent/core/agent-state.js';
import { downloadArtifact } from '../../agent/download/http-download.js';
import { youngGenerationGc } from '../../agent/download/scavenge.js';
import { ModelStore } from '../../agent/install/model-store.js';
import { signManifest } from '../../shared/envelope.js';
import { digestFile } from '../../shared/file-digest.js';
import { generateKey } from '../../shared/keys.js';
import { signerFor } from '../../shared/signatures.js';
import { procStats } from './common.js';
import { benchManifest } from './release.js';

/**
 * One run of the agent's update path, in its own process so its peak RSS (VmHWM) is the
 * path's alone: the agent's own functions, as agent/runtime/agent-runtime.ts calls them, minus
 * the inference probe and the ONNX inspection (the padded file is not a model):
 *
 *   download  downloadArtifact() into staging/<sha256>.part over HTTP (streaming sha256, fsync)
 *   verify    the download's streaming digest vs the manifest (the agent's `hash_staged` step;
 *             it re-reads the staged file with digestFile() only after a restart, or BENCH_REHASH=1)
 *   install   ModelStore.install(): rename into models/<name>/<version>/, envelope, fsync file + dirs
 *   swap      ModelStore.setLinks(): atomic symlink swap of current/previous, fsync dir
 *
 * argv: JSON { url, size, sha256, stateDir }. Prints one JSON line with the timings.
 */

interface ChildArgs {
  url: string;
  size: number;
  sha256: string;
  stateDir: string;
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '{}') as ChildArgs;
  const baseline = procStats('self');
  const model = 'bench-model';
  const version = '2.0.0';
  const envelope = signManifest(benchManifest({ sha256: a.sha256, size: a.size }, { model, version, counter: 1 }), [
    signerFor(generateKey()),
  ]);
  const target: Target = { version, sha256: a.sha256, size: a.size, counter: 1, floor: 0, rolloutId: null, envelope };
  const store = new ModelStore(a.stateDir);
  await store.init();

  // RSS sampled every 5 ms: the peak of each step (VmHWM only gives the peak of the process).
  let stepPeak = 0;
  const sampler = setInterval(() => {
    stepPeak = Math.max(stepPeak, procStats('self').rssMB);
  }, 5);
  const peaks: Record<string, number> = {};
  const endStep = (name: string) => {
    peaks[name] = Math.max(stepPeak, procStats('self').rssMB);
    stepPeak = 0;
  };

  const scavenge = youngGenerationGc(); // as agent/runtime/start-agent.ts does
  const t0 = performance.now();
  const dl = await downloadArtifact({
    ...(scavenge ? { scavenge } : {}),
    url: a.url,
    partFile: store.stagedFile(a.sha256),
    expectedSize: a.size,
    deadlineMs: 600_000,
    stallTimeoutMs: 60_000,
  });
  const t1 = performance.now();
  endStep('download');
  // As the agent does: the digest computed while downloading is the staged file's (a second
  // read with digestFile happens only after a restart, which this path does not include).
  const digest =
    process.env.BENCH_REHASH === '1' ? await digestFile(await store.artifactFile(model, target), a.size + 1) : dl;
  if (digest.sha256 !== a.sha256 || digest.size !== a.size || dl.sha256 !== a.sha256) {
    throw new Error(`digest mismatch: ${digest.sha256}/${digest.size}, expected ${a.sha256}/${a.size}`);
  }
  const t2 = performance.now();
  endStep('verify');
  await store.install(model, target);
  const t3 = performance.now();
  await store.setLinks(model, { current: version, previous: null }, 'previous');
  const t4 = performance.now();
  endStep('install');
  clearInterval(sampler);
  const end = procStats('self');
  process.stdout.write(
    `${JSON.stringify({
      downloadMs: t1 - t0,
      verifyMs: t2 - t1,
      installMs: t3 - t2,
      swapMs: t4 - t3,
      totalMs: t4 - t0,
      baselineRssMB: baseline.rssMB,
      peakRssMB: end.peakRssMB,
      stepPeakRssMB: peaks,
    })}\n`,
  );
}

main().catch((err: Error) => {
  process.stderr.write(`update-child: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
