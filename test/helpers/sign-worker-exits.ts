import { parentPort } from 'node:worker_threads';

/**
 * A signing worker that ends its thread at its first job: a worker that crashed
 * (test/parallel-signer.test.ts). It answers the readiness ping like the real one.
 */
parentPort?.on('message', (message: unknown) => {
  if (message === 'ping') parentPort?.postMessage('pong');
  else process.exit(3);
});
