import { parentPort } from 'node:worker_threads';
import type { SignJob } from '../../coordinator/desired/sign-job.js';

/**
 * A signing worker that claims one text of each job and never signs it: a worker starved or hung
 * (test/parallel-signer.test.ts). It answers the readiness ping like the real one.
 */
parentPort?.on('message', (message: SignJob | 'ping') => {
  if (message === 'ping') {
    parentPort?.postMessage('pong');
    return;
  }
  Atomics.add(message.next, 0, 1); // claimed, and never signed
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // hangs until terminated
});
