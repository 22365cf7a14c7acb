import { ownEntry } from '../../shared/id-record.js';
import type { AuditEvent } from '../../shared/messages.js';
import type { GroupRecord } from '../store/records.js';

export interface DeviceGroupsDeps {
  listGroups: () => GroupRecord[];
  /** A device's labels, or null when it is not enrolled. */
  labelsOf: (deviceId: string) => Readonly<Record<string, string>> | null;
}

/**
 * The groups a device belongs to, for the per-group metric rollups kept as summaries arrive
 * (coordinator/metrics). A group is a device list or a label selector; neither a group nor a
 * device's labels change after they are created (there is no command for it), so the answer is
 * cached per device and dropped only when a group is created or a device enrolled or removed,
 * which the audit events of committed plans say (`onAudit`).
 */
export class DeviceGroups {
  private groups: GroupRecord[] | null = null;
  private readonly cache = new Map<string, readonly string[]>();
  /**
   * One array per distinct answer, shared by the devices that give it: a fleet has a few
   * (usually the same one or two groups for thousands of devices), and an array per device was
   * ~120 bytes of it, 6 MB at 50,000 (BENCHMARKS.md, 2026-12-07 "memory at 50,000").
   */
  private readonly answers = new Map<string, readonly string[]>();

  constructor(private readonly deps: DeviceGroupsDeps) {}

  groupsOf(deviceId: string): readonly string[] {
    const cached = this.cache.get(deviceId);
    if (cached) return cached;
    const labels = this.deps.labelsOf(deviceId);
    if (labels === null) return [];
    this.groups ??= this.deps.listGroups();
    const names = this.groups
      .filter((g) =>
        g.devices
          ? g.devices.includes(deviceId)
          : Object.entries(g.selector ?? {}).every(([k, v]) => ownEntry(labels, k) === v),
      )
      .map((g) => g.name);
    // Group names are ids (no NUL in them), so the joined names name the answer.
    const key = names.join('\0');
    let shared = this.answers.get(key);
    if (!shared) {
      shared = Object.freeze(names);
      this.answers.set(key, shared);
    }
    this.cache.set(deviceId, shared);
    return shared;
  }

  /** Drops what a committed change made stale. */
  onAudit(events: readonly AuditEvent[]): void {
    for (const e of events) {
      if (e.action === 'group.created') {
        this.groups = null;
        this.cache.clear();
        this.answers.clear();
      } else if (
        (e.action === 'device.enrolled' || e.action === 'device.removed') &&
        e.subject?.startsWith('device:')
      ) {
        this.cache.delete(e.subject.slice('device:'.length));
      }
    }
  }
}
