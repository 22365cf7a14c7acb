import type { AuditEvent, Reported, RolloutSummary, Status } from '../../shared/messages.js';
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
  return viewOf(id, state.devices.get(id), state.reports.get(id), state.statuses.get(id));
}

/**
 * One device as the last `device.ls` snapshot has it, without what its live topics said since:
 * what the devices list filters on, so a row on screen (whose reports the page follows) does not
 * leave the list and come back with every report (its snapshot row decides until the next one).
 */
export function snapshotDeviceView(state: FleetState, id: string): DeviceView | null {
  const row = state.devices.get(id);
  return row ? viewOf(id, row, undefined, undefined) : deviceView(state, id);
}

function viewOf(
  id: string,
  row: DeviceRow | undefined,
  report: Reported | undefined,
  status: Status | undefined,
): DeviceView | null {
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

/**
 * The fleet at a glance: from the coordinator's `fleet` summary (counted as every report arrives,
 * the page does not receive them all), or, until the first one arrives (a coordinator older than
 * the summary), from the `device.ls` snapshot and the reports the page has.
 */
export function fleetOverview(state: FleetState): FleetOverview {
  const activeRollouts = sortedRollouts(state).filter((r) => isActiveRollout(r.status));
  const summary = state.fleet;
  if (summary) {
    return {
      devices: summary.devices,
      online: summary.online,
      offline: Math.max(0, summary.devices - summary.online),
      models: summary.models.map((m) => {
        let failing = 0;
        let updating = 0;
        for (const s of m.states) {
          if (isFailure(s.state)) failing += s.devices;
          if ((IN_PROGRESS_STATES as readonly string[]).includes(s.state)) updating += s.devices;
        }
        return {
          model: m.model,
          versions: m.running.map((r) => ({ version: r.version ?? 'none', devices: r.devices })),
          failing,
          updating,
        };
      }),
      activeRollouts,
    };
  }
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
    activeRollouts,
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

/**
 * One page of the devices matching `f`, sorted by id; `page` is clamped to what exists. Which
 * devices match is read from the snapshot (snapshotDeviceView); the rows show them live.
 */
export function filterDevices(state: FleetState, f: DeviceFilter, page: number, pageSize = PAGE_SIZE): DevicePage {
  const matched: string[] = [];
  for (const id of allDeviceIds(state)) {
    const d = snapshotDeviceView(state, id);
    if (d && matchesFilter(d, f)) matched.push(id);
  }
  const pages = Math.max(1, Math.ceil(matched.length / pageSize));
  const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
  const rows = matched
    .slice((p - 1) * pageSize, p * pageSize)
    .map((id) => deviceView(state, id))
    .filter((d): d is DeviceView => d !== null);
  return { rows, total: matched.length, page: p, pages };
}

/** The filter choices: states, models and versions the fleet has now. */
export function filterChoices(state: FleetState): { states: string[]; models: string[]; versions: string[] } {
  const models = new Set<string>();
  const versions = new Set<string>();
  for (const id of allDeviceIds(state)) {
    for (const m of snapshotDeviceView(state, id)?.models ?? []) {
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
  /** Where an abort with revert set it back (`version` null: its entry removed, it keeps what it runs). */
  revertedTo?: { version: string | null } | null;
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
  revertedTo: { version: string | null } | null;
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

/** A wave's devices per state, from the summary (current whatever the page follows); null for no such wave. */
export function waveStateCounts(summary: RolloutSummary, wave: number): Map<string, number> | null {
  const w = summary.waves.find((x) => x.wave === wave);
  if (!w) return null;
  const counts = new Map<string, number>();
  for (const state of BAR_ORDER) {
    const n = w.counts[state] ?? 0;
    if (n > 0) counts.set(state, n);
  }
  return counts;
}

export interface RolloutDeviceList {
  /** The wave shown (0: all of them). */
  wave: number;
  /** Devices of that wave, from the summary. */
  inWave: number;
  /** Per state, from the summary: the wave's counts, or every wave's summed. */
  counts: Map<string, number>;
  /** Devices matching the state filter, over all pages (the last `rollout.status`'s total). */
  matching: number;
  page: number;
  pages: number;
  /** The page's rows, live: the devices the page follows. */
  onScreen: LiveRolloutDevice[];
}

/** One page of a rollout's devices as `rollout.status` answered it (its wave and state filter applied there). */
export interface RolloutDevicePage {
  rows: readonly RolloutDeviceRow[];
  /** `devicesTotal`: the devices matching the filter, over all pages. */
  total: number;
}

/** The wave a rollout's device list shows: the one chosen, else the current one (0: every wave). */
export function shownRolloutWave(summary: Pick<RolloutSummary, 'currentWave'>, wave: number | null): number {
  return wave ?? summary.currentWave;
}

/**
 * The `rollout.status` arguments for the page the view shows: the coordinator filters and pages,
 * so a rollout of 50,000 devices is a reply of one page, not ~15 MB.
 */
export function rolloutPageArgs(
  id: string,
  wave: number,
  stateFilter: string,
  page: number,
  pageSize = PAGE_SIZE,
): { id: string; wave?: number; state?: string; offset: number; limit: number } {
  return {
    id,
    ...(wave > 0 ? { wave } : {}),
    ...(stateFilter ? { state: stateFilter } : {}),
    offset: (Math.max(1, Math.floor(page) || 1) - 1) * pageSize,
    limit: pageSize,
  };
}

/**
 * A rollout's device list as the view shows it. Which devices match the state filter is the
 * coordinator's answer to the last `rollout.status` (fetched again as the counts move), not the
 * live reports: a row on screen whose device moves on must not leave the page (and its live
 * topics) and come back with every report. The rows on screen show the live state; the counts are
 * the summary's.
 */
export function rolloutDeviceList(
  state: FleetState,
  summary: RolloutSummary,
  fetched: RolloutDevicePage,
  selection: { wave: number | null; page: number },
  pageSize = PAGE_SIZE,
): RolloutDeviceList {
  const wave = shownRolloutWave(summary, selection.wave);
  const waves = wave === 0 ? summary.waves : summary.waves.filter((w) => w.wave === wave);
  const counts = new Map<string, number>();
  for (const w of waves) {
    for (const [s, n] of waveStateCounts(summary, w.wave) ?? []) counts.set(s, (counts.get(s) ?? 0) + n);
  }
  const pages = Math.max(1, Math.ceil(fetched.total / pageSize));
  const page = Math.min(Math.max(1, Math.floor(selection.page) || 1), pages);
  return {
    wave,
    inWave: waves.reduce((n, w) => n + w.devices, 0),
    counts: new Map([...BAR_ORDER].filter((s) => counts.has(s)).map((s) => [s, counts.get(s) as number])),
    matching: fetched.total,
    page,
    pages,
    onScreen: liveRolloutDevices(state, summary, fetched.rows),
  };
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
        effect: `${s.failures.count === 1 ? 'The 1 failure so far is' : `The ${s.failures.count} failures so far are`} acknowledged and no longer counted against the ${pct(s.maxFailureRate)} tolerance; wave ${s.currentWave} continues.`,
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

/** A rate as a percentage: whole numbers as such (`5%`), others to one decimal (`2.5%`). */
export function pct(rate: number): string {
  const v = Math.round(rate * 1000) / 10;
  return `${Number.isInteger(v) ? v : v.toFixed(1)}%`;
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

/**
 * Whether an audit event is about this rollout: its subject is `rollout:<id>` (as the coordinator
 * writes subjects, `<kind>:<id>`), or its details name the rollout.
 */
export function isRolloutEvent(e: AuditEvent, rolloutId: string): boolean {
  return e.subject === `rollout:${rolloutId}` || (e.details as { rolloutId?: unknown }).rolloutId === rolloutId;
}

/**
 * A rollout's timeline, newest first: the events fetched when its page opened (`audit.ls` with
 * `rolloutId`) and those that arrived since on the live tail, each once; at most `limit` of them.
 */
export function rolloutTimeline(
  loaded: readonly AuditEvent[],
  tail: readonly AuditEvent[],
  rolloutId: string,
  limit = 200,
): { events: AuditEvent[]; total: number } {
  const bySeq = new Map<number, AuditEvent>();
  for (const e of loaded) bySeq.set(e.seq, e);
  for (const e of tail) if (isRolloutEvent(e, rolloutId)) bySeq.set(e.seq, e);
  const all = [...bySeq.values()].sort((a, b) => b.seq - a.seq);
  return { events: all.slice(0, limit), total: all.length };
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
