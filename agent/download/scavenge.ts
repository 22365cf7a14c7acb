import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * A synchronous young-generation GC (V8 "scavenge"), or undefined when this V8 does not offer
 * one. Why: every socket read of a download is a new 64 KiB Buffer outside the V8 heap. Nothing
 * keeps them alive after they are copied into the write buffer, but V8 only collects when its
 * external memory grew by about 64 MB, so a download lifted the agent's RSS by ~45 MB whatever
 * the model size. A scavenge every few MiB frees them while they are young (~1 ms each; measured
 * at no cost to the download's throughput, BENCHMARKS.md agent memory).
 *
 * `--expose-gc` is set at run time (v8.setFlagsFromString) so the systemd unit and tests do not
 * need a node flag; the function is read from a fresh context, where the flag makes V8 define it.
 */
export function youngGenerationGc(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    if (typeof gc !== 'function') return undefined;
    return () => (gc as (options: { type: string; execution: string }) => void)({ type: 'minor', execution: 'sync' });
  } catch {
    return undefined;
  }
}
