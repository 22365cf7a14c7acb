import type { ListedDevice } from '../../shared/device-row.js';
import type { AuditEvent, FleetSummary, Reported, RolloutSummary, Status } from '../../shared/messages.js';

/**
 * Everything the dashboard knows, as one plain object the views read (no DOM here: the node tests
 * drive it directly). It is filled from two sources: command replies (snapshots: a page of `device.find`,
 * `release.ls`, `channel.ls`, `audit.ls`, `rollout.status`) and the live topics (`rollouts/+`,
 * `audit`, the coordinator's `fleet` summary, and `devices/<id>/reported` and `status` of the
 * devices on screen only: the `watched` set). A live message is always at least as new as a
 * snapshot row, so what a report or status says wins over the snapshot's copy of it.
 *
 * Why not every device's reports: a 9,000-device wave is 45,000 of them, and a page that takes
 * them all makes the broker encode and send each one again and the browser parse it, to draw 50
 * rows (BENCHMARKS.md, bench:dashboard). Counts come from the coordinator's summaries instead.
 *
 * Every record keyed by an id is a Map: a device may be called `constructor`.
 */

/** A row of `device.ls` and `device.find`. */
export type DeviceRow = ListedDevice;

export interface ErrorInfo {
  code: string;
  message: string;
}

/** A row of `release.ls`. */
export interface ReleaseRow {
  id: string;
  model: string;
  version: string;
  size: number;
  sha256: string;
  publishedBy: string;
  publishedAt: string;
  signedBy?: string[];
  revoked: boolean;
  revokedReason: string | null;
}

/** A row of `channel.ls`. */
export interface ChannelRow {
  id: string;
  model: string;
  channel: string;
  releaseId: string;
  updatedAt: string;
}

/** At most this many audit events are kept for the live tail; older ones stay in the coordinator. */
export const AUDIT_TAIL = 2000;
/** Report-to-screen delays kept for the benchmark (the newest ones). */
const LATENCY_SAMPLES = 20_000;

export type LiveMessage =
  | { kind: 'reported'; deviceId: string }
  | { kind: 'status'; deviceId: string }
  | { kind: 'rollout'; rolloutId: string }
  | { kind: 'fleet' }
  | { kind: 'audit'; event: AuditEvent }
  | { kind: 'ignored'; why: string };

type TopicKind = Exclude<LiveMessage, { kind: 'audit' }> | { kind: 'audit' };

export class FleetState {
  /** Bumped on every change: the renderer compares it to decide whether to draw. */
  version = 0;
  devices = new Map<string, DeviceRow>();
  reports = new Map<string, Reported>();
  statuses = new Map<string, Status>();
  rollouts = new Map<string, RolloutSummary>();
  /** The coordinator's fleet summary (`fleet`, retained); null until it arrives. */
  fleet: FleetSummary | null = null;
  /** The devices whose own topics the page subscribes to (those on screen); see setWatched. */
  watched: ReadonlySet<string> = new Set();
  /**
   * The live tail, ascending by seq, without duplicates (a subscription may deliver twice): the
   * last AUDIT_TAIL events at least (up to half as many more between trims).
   */
  audit: AuditEvent[] = [];
  releases: ReleaseRow[] = [];
  channels: ChannelRow[] = [];
  /** Reports applied since the last render: their device timestamps (ms), for the delay figures. */
  unrendered: number[] = [];
  /** Report-to-screen delays in ms (bounded): what bench:dashboard reads. */
  latencies: number[] = [];
  /** Messages that could not be read (a coordinator of another version, a bug): counted, never fatal. */
  unreadable = 0;

  constructor(readonly prefix: string) {}

  private changed(): void {
    this.version++;
  }

  /**
   * Applies one message of a live topic. `text` is the payload; an empty one clears a retained
   * topic. `retained`: the broker's stored copy, sent because the page just subscribed (a row that
   * came on screen): shown like any other, but it is not a report arriving, so it is no delay sample.
   */
  applyMessage(topic: string, text: string, retained = false): LiveMessage {
    const kind = this.classify(topic);
    if (kind.kind === 'ignored') return kind;
    if ((kind.kind === 'reported' || kind.kind === 'status') && !this.watched.has(kind.deviceId)) {
      // Left the screen: what was in flight when it was unsubscribed would otherwise stay here,
      // and go stale in front of the fresher snapshot row.
      return { kind: 'ignored', why: `not watched: ${kind.deviceId}` };
    }
    if (kind.kind === 'audit' && text === '') return { kind: 'ignored', why: 'empty audit message' };
    if (text === '') {
      // An empty retained message: the device was removed, or the rollout summary cleared.
      if (kind.kind === 'reported') {
        this.reports.delete(kind.deviceId);
        this.devices.delete(kind.deviceId);
      } else if (kind.kind === 'status') this.statuses.delete(kind.deviceId);
      else if (kind.kind === 'rollout') this.rollouts.delete(kind.rolloutId);
      else if (kind.kind === 'fleet') this.fleet = null;
      this.changed();
      return kind as LiveMessage;
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      this.unreadable++;
      return { kind: 'ignored', why: 'not JSON' };
    }
    if (typeof body !== 'object' || body === null) {
      this.unreadable++;
      return { kind: 'ignored', why: 'not an object' };
    }
    switch (kind.kind) {
      // In the order they arrive: MQTT keeps one topic's messages in order (3.1.1 section 4.6),
      // and the page subscribes to each topic once. Not by timestamp: a device's will
      // (`online: false`) carries the time it connected, older than its `online: true`, and a
      // device's clock may step back.
      case 'reported': {
        const report = body as Reported;
        this.reports.set(kind.deviceId, report);
        const ts = Date.parse(report.ts);
        if (Number.isFinite(ts) && !retained) this.unrendered.push(ts);
        break;
      }
      case 'status':
        this.statuses.set(kind.deviceId, body as Status);
        break;
      case 'rollout':
        this.rollouts.set(kind.rolloutId, body as RolloutSummary);
        break;
      case 'fleet':
        this.fleet = body as FleetSummary;
        break;
      case 'audit': {
        const event = body as AuditEvent;
        this.addAudit([event]);
        return { kind: 'audit', event };
      }
    }
    this.changed();
    return kind;
  }

  private classify(topic: string): TopicKind {
    if (!topic.startsWith(`${this.prefix}/`)) return { kind: 'ignored', why: 'another prefix' };
    const parts = topic.slice(this.prefix.length + 1).split('/');
    if (parts.length === 1 && parts[0] === 'audit') return { kind: 'audit' };
    if (parts.length === 1 && parts[0] === 'fleet') return { kind: 'fleet' };
    if (parts.length === 2 && parts[0] === 'rollouts') return { kind: 'rollout', rolloutId: parts[1] as string };
    if (parts.length === 3 && parts[0] === 'devices') {
      if (parts[2] === 'reported') return { kind: 'reported', deviceId: parts[1] as string };
      if (parts[2] === 'status') return { kind: 'status', deviceId: parts[1] as string };
    }
    return { kind: 'ignored', why: `not a topic the dashboard reads: ${topic}` };
  }

  /**
   * At each (re)connect, before subscribing: what the live topics said is dropped, and their
   * retained messages fill it again. After a coordinator restart the broker's retained messages
   * are gone (they live in memory): a device that did not come back must not stay "online" from
   * a status seen before; the device rows (`device.find`, asked again) cover it.
   */
  resetLive(): void {
    this.reports.clear();
    this.statuses.clear();
    this.rollouts.clear();
    this.fleet = null;
    this.unrendered = [];
    this.changed();
  }

  /**
   * The devices on screen now. Reports and statuses of the others are dropped (their snapshot rows
   * show them) and ignored if one still arrives. Returns the ids to subscribe to and to leave.
   */
  setWatched(ids: Iterable<string>): { added: string[]; removed: string[] } {
    const next = new Set(ids);
    const added = [...next].filter((id) => !this.watched.has(id));
    const removed = [...this.watched].filter((id) => !next.has(id));
    for (const id of removed) {
      this.reports.delete(id);
      this.statuses.delete(id);
    }
    this.watched = next;
    if (added.length > 0 || removed.length > 0) this.changed();
    return { added, removed };
  }

  /**
   * The device rows the coordinator sent last (a page of `device.find`): what the rows on screen
   * show until their own topics say more. Only those: the page never holds the whole fleet.
   */
  setDevices(rows: readonly DeviceRow[]): void {
    this.devices = new Map(rows.map((r) => [r.id, r]));
    this.changed();
  }

  /** One device's row, added or replaced (`device.show` of a device opened by its address). */
  putDevice(row: DeviceRow): void {
    this.devices.set(row.id, row);
    this.changed();
  }

  /**
   * Bumped when the device rows may be out of date (a device enrolled, removed or moved, the
   * fleet summary moving while the list filters on it): the devices view asks for its page again.
   * A reconnect reaches that view through its `live` prop, not through this.
   */
  devicesEpoch = 0;

  staleDevices(): void {
    this.devicesEpoch++;
    this.changed();
  }

  setReleases(rows: readonly ReleaseRow[]): void {
    this.releases = [...rows];
    this.changed();
  }

  setChannels(rows: readonly ChannelRow[]): void {
    this.channels = [...rows];
    this.changed();
  }

  /** Merges audit events (from `audit.ls` or the live topic) into the tail, by seq. */
  addAudit(events: readonly AuditEvent[]): void {
    if (events.length === 0) return;
    // The live topic's common case, one event after the head: appended, no re-sort (a wave of
    // thousands of device outcomes arrives as thousands of single events).
    const only = events.length === 1 ? events[0] : undefined;
    if (only && typeof only.seq === 'number' && only.seq > this.auditHead) {
      this.audit.push(only);
      if (this.audit.length > AUDIT_TAIL * 1.5) this.audit = this.audit.slice(-AUDIT_TAIL);
      this.changed();
      return;
    }
    const bySeq = new Map<number, AuditEvent>(this.audit.map((e) => [e.seq, e]));
    for (const e of events) if (typeof e?.seq === 'number') bySeq.set(e.seq, e);
    this.audit = [...bySeq.values()].sort((a, b) => a.seq - b.seq).slice(-AUDIT_TAIL);
    this.changed();
  }

  /** The highest audit seq seen (0 before any): a reconnect asks for what came after it. */
  get auditHead(): number {
    return this.audit.at(-1)?.seq ?? 0;
  }

  /** Called once a render that includes the pending reports is on screen. */
  rendered(nowMs: number): void {
    for (const ts of this.unrendered) this.latencies.push(Math.max(0, nowMs - ts));
    this.unrendered = [];
    if (this.latencies.length > LATENCY_SAMPLES) this.latencies.splice(0, this.latencies.length - LATENCY_SAMPLES);
  }
}
