import { DEVICE_FILTER_STATES, type DeviceFilter, EMPTY_DEVICE_FILTER } from '../../shared/device-filter.js';
import type { AuditEvent, Reported, RolloutSummary, Status } from '../../shared/messages.js';
import {
  ACTIVE_ROLLOUT_STATUSES,
  IN_PROGRESS_STATES,
  isFailure,
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

// ---- fleet overview ----

export interface FleetOverview {
  /** Null until the coordinator's fleet summary arrives: the page never counts the fleet itself. */
  devices: number | null;
  online: number | null;
  offline: number | null;
  /** Per model: how many devices run each version (`current`), most common first. */
  models: { model: string; versions: { version: string; devices: number }[]; failing: number; updating: number }[];
  activeRollouts: RolloutSummary[];
}

/**
 * The fleet at a glance: from the coordinator's `fleet` summary (counted as every report arrives,
 * the page does not receive them all). Until it arrives (at each connect, a moment after
 * subscribing: it is retained) the counts are unknown, not counted from the few devices the page
 * has rows for (a page of the devices list), which would be a wrong number.
 */
export function fleetOverview(state: FleetState): FleetOverview {
  const activeRollouts = sortedRollouts(state).filter((r) => isActiveRollout(r.status));
  const summary = state.fleet;
  if (!summary) return { devices: null, online: null, offline: null, models: [], activeRollouts };
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

/** The filter is the coordinator's (`device.find` applies it to the whole fleet). */
export type { DeviceFilter } from '../../shared/device-filter.js';
export const EMPTY_FILTER: DeviceFilter = EMPTY_DEVICE_FILTER;
export const PAGE_SIZE = 50;

/** What `device.find` answers (coordinator/commands/device-rows.ts, checked at typecheck). */
export interface DeviceFindReply {
  total: number;
  offset: number;
  devices: DeviceRow[];
  choices: { models: string[]; versions: string[] };
}

export interface DevicePage {
  rows: DeviceView[];
  total: number;
  page: number;
  pages: number;
}

/** `device.find`'s arguments for one page of the filter (the empty parts left out). */
export function deviceFindArgs(f: DeviceFilter, page: number, pageSize = PAGE_SIZE): Record<string, string | number> {
  const args: Record<string, string | number> = {
    offset: (Math.max(1, Math.floor(page) || 1) - 1) * pageSize,
    limit: pageSize,
  };
  const text = f.text.trim();
  if (text !== '') args.text = text;
  if (f.state !== '') args.state = f.state;
  if (f.model !== '') args.model = f.model;
  if (f.version !== '') args.version = f.version;
  return args;
}

/**
 * The page `reply` answered, its rows live: each as its own topics say now (the page follows the
 * rows on screen), else as the reply had it. Which devices match is the coordinator's answer, as
 * of the reply (asked again when the fleet moves: views/dashboard.ts).
 */
export function devicePage(state: FleetState, reply: DeviceFindReply, pageSize = PAGE_SIZE): DevicePage {
  const pages = Math.max(1, Math.ceil(reply.total / pageSize));
  const rows = reply.devices.map((d) => deviceView(state, d.id)).filter((d): d is DeviceView => d !== null);
  return { rows, total: reply.total, page: Math.floor(reply.offset / pageSize) + 1, pages };
}

/** The filter choices: presence and the model states, and the models and versions the fleet reports. */
export function filterChoices(reply: DeviceFindReply | null): {
  states: string[];
  models: string[];
  versions: string[];
} {
  return {
    states: [...DEVICE_FILTER_STATES],
    models: reply?.choices.models ?? [],
    versions: reply?.choices.versions ?? [],
  };
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
