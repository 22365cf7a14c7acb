import { parentPort, workerData } from 'node:worker_threads';
import { createFastSigner } from '../../shared/ed25519.js';
import { type SignJob, signClaimed } from './sign-job.js';

/**
 * A signing worker of the coordinator (parallel-signer.ts): takes its share of every job it is
 * sent, with the coordinator's key, which it was given at start, and counts the jobs it is done
 * with in `finished` (shared memory), which the coordinator reads without waiting for a message.
 */
const { seed, number, finished } = workerData as { seed: Uint8Array; number: number; finished: Int32Array };
const sign = createFastSigner(seed);
parentPort?.on('message', (message: SignJob | 'ping') => {
  if (message === 'ping') {
    parentPort?.postMessage('pong');
    return;
  }
  signClaimed(message, sign, number + 2);
  Atomics.add(finished, 0, 1);
});
