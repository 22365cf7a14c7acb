import type { Reported } from '../../shared/messages.js';

/** The model the in-process store benches report (bench:report-writes, bench:device-list). */
export const SAMPLE_MODEL = 'bench-model';

/** A report of the shape the fleet simulator sends after a rollout: one model, healthy. */
export function sampleReport(deviceId: string, seq: number, at: string): Reported {
  return {
    deviceId,
    seq,
    ts: at,
    models: {
      [SAMPLE_MODEL]: {
        state: 'healthy',
        version: '4.0.0',
        current: '4.0.0',
        previousVersion: '2.0.0',
        rolloutId: 'ro-bench-0001',
        progress: null,
        attempt: 0,
        error: null,
        updatedAt: at,
      },
    },
    rejected: null,
  } as Reported;
}
