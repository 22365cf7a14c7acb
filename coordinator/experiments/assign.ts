import { createHash } from 'node:crypto';
import type { Arm } from './types.js';

/**
 * Arm assignment (docs/experiments.md): a stable hash of (experiment id, device id), as
 * GrowthBook and Statsig assign users. The same device lands in the same arm on every
 * coordinator and after every restart (the result is also stored), devices of different
 * experiments are split independently (the experiment id salts the hash), and nothing about a
 * device (its name, its labels, when it enrolled) decides its arm.
 */
export function armOf(experimentId: string, deviceId: string, candidatePercent: number): Arm {
  const digest = createHash('sha256').update(experimentId).update('\u0000').update(deviceId).digest();
  // The first 32 bits as a fraction in [0, 1): uniform for SHA-256 output.
  const bucket = digest.readUInt32BE(0) / 2 ** 32;
  return bucket < candidatePercent / 100 ? 'candidate' : 'control';
}
