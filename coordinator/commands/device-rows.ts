import {
  type DeviceFilter,
  type FilterableDevice,
  matchesDeviceFilter,
  textNeedle,
} from '../../shared/device-filter.js';
import { type ListedDevice, listedDevice } from '../../shared/device-row.js';
import type { ReportedModel, ReportedModels } from '../../shared/messages.js';
import type { DeviceSummary } from '../store/records.js';

/** A row of `device.ls` and `device.find` (also what the dashboard's device list shows). */
export type DeviceListRow = ListedDevice<ReportedModel>;

/** A device as `device ls` shows it: the last reported state of each model. */
export function deviceRow(d: DeviceSummary, reported: ReportedModels | null | undefined): DeviceListRow {
  return listedDevice(d, reported);
}

/** The most rows one `device.find` returns (a page of the dashboard is 50). */
export const MAX_FIND_LIMIT = 500;
export const DEFAULT_FIND_LIMIT = 50;

export interface DeviceFindResult {
  /** Devices matching the filter, over all pages. */
  total: number;
  offset: number;
  /** The matching devices from `offset` on, at most `limit`, in id order. */
  devices: DeviceListRow[];
  /** The models and versions the whole fleet reports now: what the filter may be set to. */
  choices: { models: string[]; versions: string[] };
}

/**
 * One page of the devices matching `filter`, in id order, with how many match in all, from one
 * pass over the fleet (`devices`, streamed from the store; their models from memory).
 *
 * Why on the coordinator: the dashboard once fetched the whole fleet (`device.ls`) and filtered it
 * in the page, a 12.6 MB reply at 50,000 devices every 5 s while a filter was on, and past ~250,000
 * devices more than an MQTT packet may carry (docs/scale.md). Pure: the caller passes the rows in.
 */
export function findDevices(
  devices: Iterable<DeviceSummary>,
  lastModels: (deviceId: string) => ReportedModels | null | undefined,
  filter: DeviceFilter,
  page: { offset: number; limit: number },
): DeviceFindResult {
  const needle = textNeedle(filter.text);
  const models = new Set<string>();
  const versions = new Set<string>();
  const rows: DeviceListRow[] = [];
  let total = 0;
  for (const d of devices) {
    const reported = lastModels(d.id) ?? {};
    const list: FilterableDevice['models'][number][] = [];
    for (const [model, m] of Object.entries(reported)) {
      list.push({ model, state: m.state, version: m.version, current: m.current });
      models.add(model);
      if (m.current !== null) versions.add(m.current);
      if (m.version !== null) versions.add(m.version);
    }
    if (!matchesDeviceFilter({ id: d.id, labels: d.labels, online: d.online, models: list }, filter, needle)) continue;
    if (total >= page.offset && rows.length < page.limit) rows.push(deviceRow(d, reported));
    total++;
  }
  return {
    total,
    offset: page.offset,
    devices: rows,
    choices: { models: [...models].sort(), versions: [...versions].sort() },
  };
}
