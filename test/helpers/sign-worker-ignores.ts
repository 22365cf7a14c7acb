import { parentPort } from 'node:worker_threads';

/**
 * A signing worker that answers the readiness ping and then never takes a job: one that fell
 * behind, or hangs outside a job (test/parallel-signer.test.ts).
 */
parentPort?.on('message', (message: unknown) => {
  if (message === 'ping') parentPort?.postMessage('pong');
});
