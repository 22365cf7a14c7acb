import type { AuditEvent, RolloutSummary } from '../../shared/messages.js';
import {
  ACTIVE_ROLLOUT_STATUSES,
  IN_PROGRESS_STATES,
  isFailure,
  MODEL_STATES,
  ROLLOUT_DEVICE_STATES,
  type RolloutDeviceState,
} from '../../shared/states.js';
import type { DeviceRow, ErrorInfo, FleetState } from './fleet-state.js';

/**
 * What each view shows, computed from FleetState by pure functions (the node tests check them;
 * the views only lay them out). Each runs in O(devices) at most, once per rendered frame.
 */

export interface DeviceModelView {
  model: string;
  state: string;
  version: string | null;
  current: string | null;
  previousVersion: string | null;
  rolloutId: string | null;
  progress: { bytes: number; total: number } | null;
  error: ErrorInfo | null;
  updatedAt: string | null;
}

export interface DeviceView {
  id: string;
  labels: Record<string, string>;
  channel: string | null;
  online: boolean;
  lastSeen: string | null;
  agentVersion: string | null;
  models: DeviceModelView[];
}

/** One device as the page shows it: the snapshot row, overridden by its live report and status. */
export function deviceView(state: FleetState, id: string): DeviceView | null {
  const row = state.devices.get(id);
  const report = state.reports.get(id);
  const status = state.statuses.get(id);
  if (!row && !report) return null;
  const models: DeviceModelView[] = [];
  if (report) {
    for (const [model, m] of Object.entries(report.models)) {
      models.push({
        model,
        state: m.state,
        version: m.version,
        current: m.current,
        previousVersion: m.previousVersion,
        rolloutId: m.rolloutId,
        progress: m.progress,
        error: m.error,
        updatedAt: m.updatedAt,
      });
    }
  } else if (row) {
    for (const [model, m] of Object.entries(row.models)) {
      models.push({
        model,
        state: m.state,
        version: m.version,
        current: m.current,
        previousVersion: null,
        rolloutId: null,
        progress: null,
        error: m.error,
        updatedAt: null,
      });
    }
  }
  models.sort((a, b) => (a.model < b.model ? -1 : 1));
  return {
    id,
    labels: row?.labels ?? {},
    channel: row?.channel ?? null,
    online: status ? status.online : (row?.online ?? false),
    lastSeen: latest(row?.lastSeen ?? null, status?.ts ?? null, report?.ts ?? null),
    agentVersion: status?.agentVersion ?? row?.agentVersion ?? null,
    models,
  };
}

function latest(...stamps: (string | null)[]): string | null {
  let best: string | null = null;
  for (const s of stamps) if (s !== null && (best === null || s > best)) best = s;
  return best;
}

/** Every device id the page knows: enrolled (device.ls) or heard from since. */
export function allDeviceIds(state: FleetState): string[] {
  const ids = new Set(state.devices.keys());
  for (const id of state.reports.keys()) ids.add(id);
  return [...ids].sort();
}

// ---- fleet overview ----

export interface FleetOverview {
  devices: number;
  online: number;
  offline: number;
  /** Per model: how many devices run each version (`current`), most common first. */
  models: { model: string; versions: { version: string; devices: number }[]; failing: number; updating: number }[];
  activeRollouts: RolloutSummary[];
}

export function fleetOverview(state: FleetState): FleetOverview {
  const ids = allDeviceIds(state);
  let online = 0;
  const perModel = new Map<string, { versions: Map<string, number>; failing: number; updating: number }>();
  for (const id of ids) {
    const d = deviceView(state, id);
    if (!d) continue;
    if (d.online) online++;
    for (const m of d.models) {
      let entry = perModel.get(m.model);
      if (!entry) {
        entry = { versions: new Map(), failing: 0, updating: 0 };
        perModel.set(m.model, entry);
      }
      const running = m.current ?? 'none';
      entry.versions.set(running, (entry.versions.get(running) ?? 0) + 1);
      if (isFailure(m.state)) entry.failing++;
      if ((IN_PROGRESS_STATES as readonly string[]).includes(m.state)) entry.updating++;
    }
  }
  return {
    devices: ids.length,
    online,
    offline: ids.length - online,
    models: [...perModel]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([model, e]) => ({
        model,
        versions: [...e.versions]
          .map(([version, devices]) => ({ version, devices }))
          .sort((a, b) => b.devices - a.devices || (a.version < b.version ? -1 : 1)),
        failing: e.failing,
        updating: e.updating,
      })),
    activeRollouts: sortedRollouts(state).filter((r) => isActiveRollout(r.status)),
  };
}

export function isActiveRollout(status: string): boolean {
  return (ACTIVE_ROLLOUT_STATUSES as readonly string[]).includes(status);
}

/** Active rollouts first, then the most recently changed. */
export function sortedRollouts(state: FleetState): RolloutSummary[] {
  return [...state.rollouts.values()].sort((a, b) => {
    const active = Number(isActiveRollout(b.status)) - Number(isActiveRollout(a.status));
    return active || (a.updatedAt < b.updatedAt ? 1 : a.updatedAt > b.updatedAt ? -1 : 0);
  });
}

// ---- devices list ----

export interface DeviceFilter {
  /** Matches the id, a label value, or `key=value` of a label. */
  text: string;
  /** A model state (`healthy`, `failed`...), `online`, `offline`, or '' for any. */
  state: string;
  model: string;
  /** A version any model runs or is installing, or ''. */
  version: string;
}

export const EMPTY_FILTER: DeviceFilter = { text: '', state: '', model: '', version: '' };
export const PAGE_SIZE = 50;

export interface DevicePage {
  rows: DeviceView[];
  total: number;
  page: number;
  pages: number;
}

function matchesText(d: DeviceView, text: string): boolean {
  if (text === '') return true;
  const needle = text.toLowerCase();
  if (d.id.toLowerCase().includes(needle)) return true;
  const eq = needle.indexOf('=');
  for (const [k, v] of Object.entries(d.labels)) {
    if (eq > 0) {
      if (k.toLowerCase() === needle.slice(0, eq).trim() && v.toLowerCase() === needle.slice(eq + 1).trim())
        return true;
    } else if (v.toLowerCase().includes(needle)) return true;
  }
  return false;
}

export function matchesFilter(d: DeviceView, f: DeviceFilter): boolean {
  if (!matchesText(d, f.text.trim())) return false;
  const models = f.model === '' ? d.models : d.models.filter((m) => m.model === f.model);
  if (f.model !== '' && models.length === 0) return false;
  if (f.state === 'online' && !d.online) return false;
  if (f.state === 'offline' && d.online) return false;
  if (f.state !== '' && f.state !== 'online' && f.state !== 'offline' && !models.some((m) => m.state === f.state)) {
    return false;
  }
  if (f.version !== '' && !models.some((m) => m.current === f.version || m.version === f.version)) return false;
  return true;
}

/** One page of the devices matching `f`, sorted by id; `page` is clamped to what exists. */
export function filterDevices(state: FleetState, f: DeviceFilter, page: number, pageSize = PAGE_SIZE): DevicePage {
  const matched: DeviceView[] = [];
  for (const id of allDeviceIds(state)) {
    const d = deviceView(state, id);
    if (d && matchesFilter(d, f)) matched.push(d);
  }
  const pages = Math.max(1, Math.ceil(matched.length / pageSize));
  const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
  return { rows: matched.slice((p - 1) * pageSize, p * pageSize), total: matched.length, page: p, pages };
}

/** The filter choices: states, models and versions the fleet has now. */
export function filterChoices(state: FleetState): { states: string[]; models: string[]; versions: string[] } {
  const models = new Set<string>();
  const versions = new Set<string>();
  for (const id of allDeviceIds(state)) {
    for (const m of deviceView(state, id)?.models ?? []) {
      models.add(m.model);
      if (m.current) versions.add(m.current);
      if (m.version) versions.add(m.version);
    }
  }
  return { states: ['online', 'offline', ...MODEL_STATES], models: [...models].sort(), versions: [...versions].sort() };
}

// ---- a rollout ----

/** The order of a wave bar's segments: finished states first, then the pipeline, then waiting. */
export const BAR_ORDER: readonly RolloutDeviceState[] = [
  'healthy',
  'rolled_back',
  'failed',
  'probing',
  'applying',
  'verifying',
  'downloading',
  'assigned',
  'pending',
];

export interface BarSegment {
  state: RolloutDeviceState;
  count: number;
  /** Share of the wave, 0-100. */
  percent: number;
}

export function waveSegments(wave: RolloutSummary['waves'][number]): BarSegment[] {
  const total = wave.devices;
  const out: BarSegment[] = [];
  for (const state of BAR_ORDER) {
    const count = wave.counts[state] ?? 0;
    if (count > 0) out.push({ state, count, percent: total > 0 ? (100 * count) / total : 0 });
  }
  return out;
}

/** A row of `rollout.status`'s devices. */
export interface RolloutDeviceRow {
  id: string;
  wave: number;
  state: string;
  online: boolean;
  error: ErrorInfo | null;
  revertedTo?: string | null;
  now?: unknown;
}

export interface LiveRolloutDevice {
  id: string;
  wave: number;
  state: string;
  online: boolean;
  error: ErrorInfo | null;
  progress: { bytes: number; total: number } | null;
  current: string | null;
  revertedTo: string | null;
}

/**
 * The rollout's devices as of now: the `rollout.status` rows, with what each device reported
 * since about this rollout's model (a report about another rollout, or before its wave, does not
 * change its state here).
 */
export function liveRolloutDevices(
  state: FleetState,
  summary: Pick<RolloutSummary, 'id' | 'model'>,
  rows: readonly RolloutDeviceRow[],
): LiveRolloutDevice[] {
  return rows.map((row) => {
    const report = state.reports.get(row.id);
    const m = report ? ownModel(report.models, summary.model) : undefined;
    const status = state.statuses.get(row.id);
    const live = m && m.rolloutId === summary.id && row.state !== 'pending';
    const st = live && m ? rolloutDeviceState(m.state) : row.state;
    return {
      id: row.id,
      wave: row.wave,
      state: st,
      online: status ? status.online : row.online,
      error: live && m ? m.error : row.error,
      progress: live && m && m.state === 'downloading' ? m.progress : null,
      current: m?.current ?? null,
      revertedTo: row.revertedTo ?? null,
    };
  });
}

function ownModel<T>(models: Record<string, T>, model: string): T | undefined {
  return Object.hasOwn(models, model) ? models[model] : undefined;
}

/** A model state as a rollout device state (`idle` about the candidate: assigned, nothing yet). */
function rolloutDeviceState(state: string): string {
  return (ROLLOUT_DEVICE_STATES as readonly string[]).includes(state) ? state : 'assigned';
}

/** Devices per state over rows (the filter chips of the rollout's device list). */
export function countByState(rows: readonly { state: string }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
  return counts;
}

// ---- actions ----

export type RolloutAction = 'approve' | 'promote' | 'halt' | 'resume' | 'abort-keep' | 'abort-revert';

/** The actions the rollout's status allows (the coordinator refuses the others, decide.ts). */
export function allowedActions(summary: RolloutSummary): RolloutAction[] {
  switch (summary.status) {
    case 'waiting_approval':
      return ['approve', 'promote', 'halt', 'abort-keep', 'abort-revert'];
    case 'running':
      return ['promote', 'halt', 'abort-keep', 'abort-revert'];
    case 'halted':
      return ['resume', 'abort-keep', 'abort-revert'];
    default:
      return [];
  }
}

/** What an action will do, in numbers, for its confirmation dialog. */
export function describeAction(action: RolloutAction, s: RolloutSummary): { title: string; effect: string } {
  const next = s.waves[s.currentWave];
  const started = s.waves.slice(0, s.currentWave).reduce((n, w) => n + w.devices, 0);
  const remaining = s.waves.slice(s.currentWave).reduce((n, w) => n + w.devices, 0);
  const candidate = `${s.model} ${s.version}`;
  const plural = (n: number) => `${n} device${n === 1 ? '' : 's'}`;
  switch (action) {
    case 'approve':
      return {
        title: `Approve wave ${s.currentWave + 1} of ${s.id}`,
        effect: `${plural(next?.devices ?? 0)} of wave ${s.currentWave + 1} are sent ${candidate} now. Later manual gates still wait for approval.`,
      };
    case 'promote':
      return {
        title: `Promote ${s.id}`,
        effect: `Every remaining gate opens: the ${plural(remaining)} not yet started get ${candidate} wave after wave, without waiting for approval. The halt rule still applies.`,
      };
    case 'halt':
      return {
        title: `Halt ${s.id}`,
        effect: `No further device is sent ${candidate}. The ${plural(started)} already assigned keep what they run or are installing. Resume later, or abort.`,
      };
    case 'resume':
      return {
        title: `Resume ${s.id}`,
        effect: `The ${s.failures.count} failure${s.failures.count === 1 ? '' : 's'} so far are acknowledged and no longer count against the ${pct(s.maxFailureRate)} tolerance; wave ${s.currentWave} continues.`,
      };
    case 'abort-keep':
      return {
        title: `Abort ${s.id}, keep`,
        effect: `The rollout ends. Devices that took ${candidate} keep it; those that rolled back or failed are set back to what they ran; the ${plural(remaining)} not yet started keep what they have.`,
      };
    case 'abort-revert':
      return {
        title: `Abort ${s.id}, revert`,
        effect: `The rollout ends and all ${plural(started)} whose wave started are sent back to the version they last ran healthy (${s.model} before ${s.version}); the ${plural(remaining)} not yet started keep what they have.`,
      };
  }
}

export function pct(rate: number): string {
  return `${(rate * 100).toFixed(rate * 100 >= 10 || rate === 0 ? 0 : 1)}%`;
}

// ---- audit ----

export function auditMatches(e: AuditEvent, text: string): boolean {
  const needle = text.trim().toLowerCase();
  if (needle === '') return true;
  return (
    e.action.toLowerCase().includes(needle) ||
    e.actor.toLowerCase().includes(needle) ||
    (e.subject ?? '').toLowerCase().includes(needle)
  );
}

/** Whether an audit event is about this rollout (its subject, as the coordinator writes them). */
export function isRolloutEvent(e: AuditEvent, rolloutId: string): boolean {
  return e.subject === rolloutId || (e.details as { rolloutId?: unknown }).rolloutId === rolloutId;
}

/** A rollout's audit events, ascending by seq, each once (the snapshot and the live topic overlap). */
export class RolloutTimeline {
  private events: AuditEvent[] = [];
  private readonly seqs = new Set<number>();

  get size(): number {
    return this.events.length;
  }

  /** One live event: appended in O(1) when it is the newest (the usual case). */
  add(e: AuditEvent): void {
    if (this.seqs.has(e.seq)) return;
    this.seqs.add(e.seq);
    const last = this.events.at(-1);
    this.events.push(e);
    if (last && last.seq > e.seq) this.events.sort((a, b) => a.seq - b.seq);
  }

  /** A snapshot (`audit.ls`): merged with what the live topic delivered meanwhile. */
  merge(events: readonly AuditEvent[]): void {
    for (const e of events) {
      if (this.seqs.has(e.seq)) continue;
      this.seqs.add(e.seq);
      this.events.push(e);
    }
    this.events.sort((a, b) => a.seq - b.seq);
  }

  /** The newest `n` events, newest first. */
  newest(n: number): AuditEvent[] {
    return this.events.slice(-n).reverse();
  }
}

/** A short human summary of an audit event's details (numbers and reasons, not the whole JSON). */
export function auditSummary(e: AuditEvent): string {
  const d = e.details as Record<string, unknown>;
  const parts: string[] = [];
  for (const key of ['wave', 'devices', 'reason', 'policy', 'reverted', 'version', 'state', 'channel', 'code']) {
    const v = d[key];
    if (v === undefined || v === null || typeof v === 'object') continue;
    parts.push(`${key} ${String(v)}`);
  }
  const error = d.error as { code?: unknown } | undefined;
  if (error && typeof error.code === 'string') parts.push(error.code);
  return parts.join(' · ');
}

/** Byte counts for people: `1.5 MB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 10 ? 0 : 1)} ${units[i]}`;
}

/** `DeviceRow` is re-exported for views that build rows from a snapshot. */
export type { DeviceRow };
