import { MODEL_STATES } from './states.js';

/**
 * The devices list's filter (the dashboard's Devices view, `device.find`): one definition, applied
 * by the coordinator to its whole fleet, so that a page of 50 rows is all that crosses the wire.
 */
export interface DeviceFilter {
  /** Matches the id, a label value, or `key=value` of a label (case ignored; key=value exact). */
  text: string;
  /** A model state (`healthy`, `failed`...), `online`, `offline`, or '' for any. */
  state: string;
  model: string;
  /** A version any model runs or is installing, or ''. */
  version: string;
}

export const EMPTY_DEVICE_FILTER: DeviceFilter = Object.freeze({ text: '', state: '', model: '', version: '' });

/** What the state filter takes: presence, or a model's state. */
export const DEVICE_FILTER_STATES = ['online', 'offline', ...MODEL_STATES] as const;

/** What a device is filtered on. */
export interface FilterableDevice {
  id: string;
  labels: Readonly<Record<string, string>>;
  online: boolean;
  models: readonly { model: string; state: string; version: string | null; current: string | null }[];
}

/**
 * The search text, prepared once per query (not per device): lowercased and trimmed, split at its
 * first `=` when it is `key=value`.
 */
export interface TextNeedle {
  all: string;
  key: string | null;
  value: string;
}

export function textNeedle(text: string): TextNeedle {
  const all = text.trim().toLowerCase();
  const eq = all.indexOf('=');
  return eq > 0
    ? { all, key: all.slice(0, eq).trim(), value: all.slice(eq + 1).trim() }
    : { all, key: null, value: all };
}

function matchesText(d: FilterableDevice, n: TextNeedle): boolean {
  if (n.all === '') return true;
  if (d.id.toLowerCase().includes(n.all)) return true;
  for (const [k, v] of Object.entries(d.labels)) {
    if (n.key !== null) {
      if (k.toLowerCase() === n.key && v.toLowerCase() === n.value) return true;
    } else if (v.toLowerCase().includes(n.value)) return true;
  }
  return false;
}

export function matchesDeviceFilter(d: FilterableDevice, f: DeviceFilter, needle = textNeedle(f.text)): boolean {
  if (!matchesText(d, needle)) return false;
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
