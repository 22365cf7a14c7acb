import { FAILED_STATES, isOutcome, ROLLOUT_DEVICE_STATES } from '../../shared/states.js';
import { StringPool } from '../string-pool.js';
import type { RolloutDevice, RolloutDeviceState } from './types.js';

/**
 * A rollout's device rows with running tallies per wave, so that the questions the engine asks
 * after every batch of reports (is the current wave complete? what is the failure rate? what
 * does the summary count?) cost O(waves) instead of a scan of every device. At 10,000 devices
 * the scans were 78% of the coordinator's CPU during a wave (BENCHMARKS.md).
 */
export interface WaveTally {
  /** Devices planned into this wave. */
  members: number;
  /** Devices of this wave per rollout device state. */
  counts: Record<RolloutDeviceState, number>;
  /** Online devices of this wave that are assigned or in progress: they keep the wave open. */
  blocking: number;
  /** Devices of this wave whose desired state an abort with revert set back. */
  reverted: number;
}

export interface DeviceIndex {
  readonly byId: ReadonlyMap<string, RolloutDevice>;
  /** Device ids per wave, in row order (what startWave assigns). */
  readonly waveMembers: readonly (readonly string[])[];
  readonly waves: readonly WaveTally[];
}

/** The design's "keeps its wave open": online, its wave started, and no outcome yet (section 6). */
function blocks(d: RolloutDevice): boolean {
  return d.online && d.state !== 'pending' && !isOutcome(d.state);
}

export function emptyTally(): WaveTally {
  const counts = {} as Record<RolloutDeviceState, number>;
  for (const s of ROLLOUT_DEVICE_STATES) counts[s] = 0;
  return { members: 0, counts, blocking: 0, reverted: 0 };
}

export function cloneTallies(waves: readonly WaveTally[]): WaveTally[] {
  return waves.map((w) => ({
    members: w.members,
    counts: { ...w.counts },
    blocking: w.blocking,
    reverted: w.reverted,
  }));
}

/** Adds (sign 1) or removes (sign -1) one device's contribution to the tallies. */
export function count(waves: WaveTally[], d: RolloutDevice, sign: 1 | -1): void {
  let tally = waves[d.wave];
  if (!tally) {
    // A wave index past the strategy (a corrupt row) still counts, so no device is ever lost.
    for (let i = waves.length; i <= d.wave; i++) waves.push(emptyTally());
    tally = waves[d.wave] as WaveTally;
  }
  tally.members += sign;
  tally.counts[d.state] += sign;
  if (blocks(d)) tally.blocking += sign;
  if (d.revertedTo) tally.reverted += sign;
}

/** A mutable index, owned by the shell: built at load, kept in step with every committed row. */
export class LiveDeviceIndex implements DeviceIndex {
  private readonly rows = new Map<string, RolloutDevice>();
  private readonly members: string[][] = [];
  private readonly tallies: WaveTally[];
  private readonly pool = new StringPool(256);

  constructor(devices: Iterable<RolloutDevice>, waveCount: number) {
    this.tallies = Array.from({ length: waveCount }, emptyTally);
    for (const row of devices) {
      const d = this.compact(row);
      this.rows.set(d.deviceId, d);
      let list = this.members[d.wave];
      if (!list) {
        for (let i = this.members.length; i <= d.wave; i++) this.members.push([]);
        list = this.members[d.wave] as string[];
      }
      list.push(d.deviceId);
      count(this.tallies, d, 1);
    }
    for (let i = this.members.length; i < waveCount; i++) this.members.push([]);
  }

  get byId(): ReadonlyMap<string, RolloutDevice> {
    return this.rows;
  }

  get waveMembers(): readonly (readonly string[])[] {
    return this.members;
  }

  get waves(): readonly WaveTally[] {
    return this.tallies;
  }

  /** Replaces rows by committed ones (same device ids and waves; other fields may differ). */
  apply(changed: readonly RolloutDevice[]): void {
    for (const row of changed) {
      const old = this.rows.get(row.deviceId);
      if (!old) continue; // rows are created with the rollout, never later
      const d = this.compact(row);
      count(this.tallies, old, -1);
      count(this.tallies, d, 1);
      this.rows.set(d.deviceId, d);
    }
  }

  /**
   * A copy of the row in one fixed-shape object, its previous release id pooled. The rows a plan builds
   * (a spread of the row before and its changes) keep some fields outside the object, and a
   * release id read from SQLite is a new string per row: ~0.1 KB a device more, 5 MB of a
   * 50,000-device rollout (BENCHMARKS.md, 2026-12-07 "the wave in its own lane").
   */
  private compact(d: RolloutDevice): RolloutDevice {
    return {
      deviceId: d.deviceId,
      wave: d.wave,
      state: d.state,
      online: d.online,
      previousReleaseId: this.pool.intern(d.previousReleaseId),
      revertedTo: d.revertedTo,
      assignedAt: d.assignedAt,
      finishedAt: d.finishedAt,
      error: d.error,
    };
  }

  values(): RolloutDevice[] {
    return [...this.rows.values()];
  }
}

/** An index over a plain list (tests, one-off callers): O(devices) to build. */
export function indexDevices(devices: readonly RolloutDevice[], waveCount: number): DeviceIndex {
  return new LiveDeviceIndex(devices, waveCount);
}

export interface FailureTotals {
  /** Devices in rolled_back or failed. */
  failed: number;
  /** Devices whose wave started (not pending). */
  assigned: number;
}

export function failureTotals(waves: readonly WaveTally[]): FailureTotals {
  let failed = 0;
  let assigned = 0;
  for (const w of waves) {
    for (const state of FAILED_STATES) failed += w.counts[state];
    assigned += w.members - w.counts.pending;
  }
  return { failed, assigned };
}

/** True when no online device of the waves up to index currentWave (0-based) is still without an outcome. */
export function wavesComplete(waves: readonly WaveTally[], currentWave: number): boolean {
  for (let i = 0; i <= currentWave && i < waves.length; i++) {
    if ((waves[i] as WaveTally).blocking > 0) return false;
  }
  return true;
}
