import type { AgentLimits, StepContext } from '../../agent/core/machine.js';
import type { DeviceFacts } from '../../shared/messages.js';
import type { TestSigners } from './signing.js';

/** The clock the agent-core tables run at. */
export const MACHINE_NOW = new Date('2026-11-26T12:00:00.000Z');

export const MACHINE_FACTS: DeviceFacts = {
  arch: 'arm64',
  cpuCores: 4,
  memoryMB: 2048,
  freeDiskMB: 10_000,
  os: 'Debian 12',
  kernel: '6.1',
  accelerators: [],
};

/** The StepContext of the agent-core table tests: the test signers' keys trusted, small limits. */
export function machineContext(signers: TestSigners, limits: Partial<AgentLimits> = {}): StepContext {
  return {
    now: MACHINE_NOW,
    deviceId: 'cam-1',
    releaseTrust: { keys: [signers.releaseKey], threshold: 1 },
    coordinatorTrust: { keys: [signers.coordinatorKey], threshold: 1 },
    facts: MACHINE_FACTS,
    limits: {
      maxAttempts: 3,
      backoffBaseMs: 1000,
      backoffMaxMs: 8000,
      maxStarts: 2,
      maxArtifactBytes: 1_000_000,
      diskReserveBytes: 100,
      outboxLimit: 5,
      ...limits,
    },
  };
}
