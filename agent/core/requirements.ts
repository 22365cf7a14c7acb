import type { Requirements } from '../../shared/manifest.js';
import type { DeviceFacts } from '../../shared/messages.js';

/**
 * Checks a release's `requires` against this device's facts (design section 5, verify phase).
 * Pure; returns the first unmet requirement in words, or null when the device qualifies.
 */
export function unmetRequirement(requires: Requirements, facts: DeviceFacts): string | null {
  if (requires.arch && !requires.arch.includes(facts.arch)) {
    return `the release needs architecture ${requires.arch.join(' or ')}, this device is ${facts.arch}`;
  }
  if (requires.minMemoryMB !== undefined && facts.memoryMB < requires.minMemoryMB) {
    return `the release needs ${requires.minMemoryMB} MB of memory, this device has ${facts.memoryMB} MB`;
  }
  if (requires.minFreeDiskMB !== undefined && facts.freeDiskMB < requires.minFreeDiskMB) {
    return `the release needs ${requires.minFreeDiskMB} MB of free disk, this device has ${facts.freeDiskMB} MB`;
  }
  for (const accelerator of requires.accelerators ?? []) {
    const lower = accelerator.toLowerCase();
    if (!facts.accelerators.some((a) => a.toLowerCase().includes(lower))) {
      return `the release needs the accelerator ${accelerator}, this device has ${facts.accelerators.join(', ') || 'none'}`;
    }
  }
  return null;
}
