import type { FleetSummary, Reported } from '../../shared/messages.js';
import { MODEL_STATES } from '../../shared/states.js';

/** A model as one device last reported it: what it runs and in which state (an index into MODEL_STATES). */
interface ModelSlot {
  model: string;
  current: string | null;
  state: number;
  /** The report that last named it (FleetTally.stamp): a model a newer report left out is dropped. */
  seen: number;
}

/**
 * Its models in an array, not a Map: a device reports one model, rarely a few (at most 32), and
 * a Map per device cost ~300 bytes, 15 MB of a 50,000-device fleet; a short array is as fast to
 * search. Names are compared as strings, never looked up on an object (a model may be `constructor`).
 */
interface DeviceSlot {
  online: boolean;
  models: ModelSlot[];
}

/** One model's counts over the fleet. */
interface ModelCounts {
  devices: number;
  /** Devices per `current` version (null: none yet); entries at 0 are deleted. */
  running: Map<string | null, number>;
  /** Devices per state, indexed like MODEL_STATES. */
  states: number[];
}

const STATE_INDEX: ReadonlyMap<string, number> = new Map(MODEL_STATES.map((s, i) => [s, i]));
const DEVICE_SUBJECT = 'device:';

/**
 * What the whole fleet runs (FleetSummarySchema), counted as it changes: per enrolled device
 * whether it is online and, per model of its newest report, its `current` version and state.
 *
 * Why incremental: reports arrive at up to 15,000 a second in a wave; each one adjusts the counts
 * of its own models only (at most 32, usually one), never a scan of the fleet, and a report that
 * changes no count (a download's progress) changes nothing at all. Pure: no I/O, no timers, no
 * clock; the caller publishes the summary (fleet-summary-publisher.ts) and passes the time in.
 * Everything keyed by a name is a `Map` (a model may be named `constructor`).
 */
export class FleetTally {
  private readonly devices = new Map<string, DeviceSlot>();
  private readonly models = new Map<string, ModelCounts>();
  private onlineCount = 0;
  /** Increments with every report handled; see ModelSlot.seen. */
  private stamp = 0;
  private changes = 0;
  private summarizedAt = -1;
  private updatedAt = '';

  /**
   * A tally of the stored fleet at start: every device with its stored last report, all offline
   * (nobody is connected to a broker that just started; the coordinator marks them so too).
   */
  static seeded(devices: Iterable<{ id: string; lastReport: Reported | null }>): FleetTally {
    const tally = new FleetTally();
    for (const d of devices) {
      tally.enrolled(d.id);
      if (d.lastReport) tally.report(d.id, d.lastReport);
    }
    return tally;
  }

  /** Whether device `id` is enrolled now. */
  has(id: string): boolean {
    return this.devices.has(id);
  }

  /** Devices whose newest report names `model`. */
  modelDeviceCount(model: string): number {
    return this.models.get(model)?.devices ?? 0;
  }

  /**
   * Increases with every change that altered a count: a publisher compares it with the one it
   * last published.
   */
  get version(): number {
    return this.changes;
  }

  /**
   * A device was enrolled: counted, offline, no models yet. An id already counted starts again
   * from nothing (as the store's new row does).
   */
  enrolled(id: string): true {
    this.removed(id);
    this.devices.set(id, { online: false, models: [] });
    this.changes++;
    return true;
  }

  /** A device was removed: it and its models leave the counts. False when it was not counted. */
  removed(id: string): boolean {
    const device = this.devices.get(id);
    if (!device) return false;
    this.devices.delete(id);
    if (device.online) this.onlineCount--;
    for (const slot of device.models) this.drop(slot.model, slot);
    this.changes++;
    return true;
  }

  /** A device connected or went away. True when that changed a count (not for a device not enrolled). */
  presence(id: string, online: boolean): boolean {
    const device = this.devices.get(id);
    if (!device || device.online === online) return false;
    device.online = online;
    this.onlineCount += online ? 1 : -1;
    this.changes++;
    return true;
  }

  /**
   * A device's newest report: it replaces the device's models entirely (a model it no longer
   * names is no longer counted for it). True when that changed a count; false for a device not
   * enrolled (removed while its report was under way) and for a report that changes nothing.
   */
  report(id: string, report: Reported): boolean {
    const device = this.devices.get(id);
    if (!device) return false;
    const stamp = ++this.stamp;
    const { models } = report;
    let changed = false;
    let named = 0;
    // for-in with an own-key check: no array per report (Object.entries would build one per model).
    for (const model in models) {
      if (!Object.hasOwn(models, model)) continue;
      const m = models[model] as Reported['models'][string];
      // Validated on the way in; a stored row from another version with a state unknown here is not counted.
      const state = STATE_INDEX.get(m.state);
      if (state === undefined) continue;
      named++;
      const current = m.current ?? null; // a stored row is JSON, not parsed again: never undefined here
      const slot = device.models.find((s) => s.model === model);
      if (!slot) {
        const added = { model, current, state, seen: stamp };
        // A device's first model in an array of exactly one: a push onto [] reserves 17 slots
        // (V8's growth rule), ~130 bytes a device, 6.5 MB of a 50,000-device fleet.
        if (device.models.length === 0) device.models = [added];
        else device.models.push(added);
        this.add(model, current, state);
        changed = true;
        continue;
      }
      slot.seen = stamp;
      if (slot.current === current && slot.state === state) continue;
      const counts = this.models.get(model) as ModelCounts;
      if (slot.current !== current) {
        decrement(counts.running, slot.current);
        counts.running.set(current, (counts.running.get(current) ?? 0) + 1);
        slot.current = current;
      }
      if (slot.state !== state) {
        (counts.states[slot.state] as number)--;
        (counts.states[state] as number)++;
        slot.state = state;
      }
      changed = true;
    }
    if (device.models.length > named) {
      device.models = device.models.filter((slot) => {
        if (slot.seen === stamp) return true;
        this.drop(slot.model, slot);
        changed = true;
        return false;
      });
    }
    if (changed) this.changes++;
    return changed;
  }

  /**
   * The summary as FleetSummarySchema has it: models by name, each model's versions with the
   * most devices first (then by version, none last), states in MODEL_STATES order, nothing at 0.
   * `updatedAt` is `nowIso` when a count changed since the previous summary, else the previous
   * one's: the time of the first summary after the last change (the publisher asks at most
   * about a second after it), with no clock read per report.
   */
  summary(nowIso: string): FleetSummary {
    if (this.summarizedAt !== this.changes) {
      this.summarizedAt = this.changes;
      this.updatedAt = nowIso;
    }
    const names = [...this.models.keys()].sort(compareText);
    return {
      devices: this.devices.size,
      online: this.onlineCount,
      models: names.map((model) => {
        const counts = this.models.get(model) as ModelCounts;
        const running = [...counts.running]
          .map(([version, devices]) => ({ version, devices }))
          .sort((a, b) => b.devices - a.devices || compareVersion(a.version, b.version));
        const states: FleetSummary['models'][number]['states'] = [];
        MODEL_STATES.forEach((state, i) => {
          const devices = counts.states[i] as number;
          if (devices > 0) states.push({ state, devices });
        });
        return { model, devices: counts.devices, running, states };
      }),
      updatedAt: this.updatedAt,
    };
  }

  private add(model: string, current: string | null, state: number): void {
    let counts = this.models.get(model);
    if (!counts) {
      counts = { devices: 0, running: new Map(), states: MODEL_STATES.map(() => 0) };
      this.models.set(model, counts);
    }
    counts.devices++;
    counts.running.set(current, (counts.running.get(current) ?? 0) + 1);
    (counts.states[state] as number)++;
  }

  /** One device no longer counts for `model` (as `slot` had it). */
  private drop(model: string, slot: ModelSlot): void {
    const counts = this.models.get(model) as ModelCounts;
    if (--counts.devices === 0) {
      this.models.delete(model);
      return;
    }
    decrement(counts.running, slot.current);
    (counts.states[slot.state] as number)--;
  }
}

/**
 * Applies the audit events of a committed plan that enrol or remove a device (their subject is
 * `device:<id>`, coordinator/fleet/plan-enrol.ts and fleet-service.ts). True when a count changed.
 */
export function tallyAudit(tally: FleetTally, events: readonly { action: string; subject: string | null }[]): boolean {
  let changed = false;
  for (const { id, enrolled } of deviceEnrolments(events)) {
    if (enrolled) changed = tally.enrolled(id) || changed;
    else changed = tally.removed(id) || changed;
  }
  return changed;
}

/** The devices a committed plan's audit events enrol (`enrolled`) or remove, in commit order. */
export function* deviceEnrolments(
  events: readonly { action: string; subject: string | null }[],
): Generator<{ id: string; enrolled: boolean }> {
  for (const e of events) {
    if (e.action !== 'device.enrolled' && e.action !== 'device.removed') continue;
    if (!e.subject?.startsWith(DEVICE_SUBJECT)) continue;
    yield { id: e.subject.slice(DEVICE_SUBJECT.length), enrolled: e.action === 'device.enrolled' };
  }
}

function decrement<K>(map: Map<K, number>, key: K): void {
  const n = (map.get(key) ?? 0) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

/** By UTF-16 code units, as Array.prototype.sort does by default: the same order everywhere. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareVersion(a: string | null, b: string | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  return compareText(a, b);
}
