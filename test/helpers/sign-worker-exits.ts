import { parentPort } from 'node:worker_threads';
import type { SignJob } from '../../coordinator/desired/sign-job.js';

/**
 * A signing worker that claims one text of its first job and ends its thread without signing it:
 * a worker that crashed mid-job (test/parallel-signer.test.ts). It answers the readiness ping like
 * the real one.
 */
parentPort?.on('message', (message: SignJob | 'ping') => {
  if (message === 'ping') {
    parentPort?.postMessage('pong');
    return;
  }
  Atomics.add(message.next, 0, 1);
  process.exit(3);
});
