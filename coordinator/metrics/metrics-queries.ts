import { OtaError } from '../../shared/errors.js';
import type { MetricSource } from '../../shared/metrics/limits.js';
import type { MetricsQueryArgs } from './query-args.js';

/** What the metrics store answers a query from (the recorder's `query`). */
export interface MetricsReader<R> {
  query(q: {
    model: string;
    version?: string;
    source: MetricSource;
    since: Date;
    until: Date;
    by: 'version' | 'device';
    group?: { name: string; members: ReadonlySet<string> };
    devices?: string[];
  }): R;
}

export interface MetricsQueriesDeps<R> {
  reader: MetricsReader<R>;
  now: () => Date;
  /** Devices whose newest report names the model: whose device-hours a query reads. */
  modelDevices: (model: string) => number;
  /** A group's members now, or the device list checked: names that do not resolve are an error. */
  resolveTarget: (target: { group?: string; devices?: string[] }) => string[];
}

/**
 * What one query may read. Queries run on the coordinator's one thread (better-sqlite3 is
 * synchronous), so a query over too many rows holds up every device's acknowledgements and, past
 * the keepalive, their connections. Rates from bench:metrics on a 2-core machine: counting the
 * devices of a range reads ~1.5 M device-hour index entries a second; merging rows (the
 * per-device view, a device list's raw windows) ~50,000 a second. A query is refused before it
 * reads anything when its estimate is over budget, with the numbers and how to narrow it.
 */
export const COUNT_ROW_BUDGET = 2_000_000;
export const MERGE_ROW_BUDGET = 60_000;

function budgetError(what: string, rows: number, budget: number, how: string): OtaError {
  return new OtaError(
    'E_USAGE',
    `this query would read about ${rows.toLocaleString('en-US')} ${what}, more than the ${budget.toLocaleString('en-US')} one query may read without holding up the coordinator; ${how}`,
  );
}

/** How many hours fit the budget for this many devices, said as a fix (or none fits: narrow the devices). */
function shorter(budget: number, devices: number, narrower: string): string {
  const hours = Math.floor(budget / Math.max(1, devices)) - 1;
  return hours >= 1
    ? `use a shorter --since (at most ${hours} hours here)${narrower ? `, ${narrower}` : ''}`
    : narrower;
}

/**
 * The estimate of what a query reads, for devices that each send one summary a minute of one
 * version; throws E_USAGE when it is over budget. `modelDevices`: the devices that report the
 * model (the device-hour table is read for all of them, a group's members are picked from
 * those); `scopeDevices`: the group's members, or the model's devices without a group.
 */
export function checkQueryBudget(args: MetricsQueryArgs, modelDevices: number, scopeDevices: number): void {
  const hours = Math.ceil(args.sinceSeconds / 3600) + 1;
  if (args.devices !== undefined) {
    const minutes = Math.ceil(args.sinceSeconds / 60);
    const rows = args.devices.length * minutes;
    if (rows > MERGE_ROW_BUDGET)
      throw budgetError(
        `windows (${args.devices.length} devices x ${minutes} minutes)`,
        rows,
        MERGE_ROW_BUDGET,
        'name fewer devices or a shorter --since, or use a group (its rollups answer without reading windows)',
      );
    return;
  }
  const scanned = modelDevices * hours;
  if (scanned > COUNT_ROW_BUDGET)
    throw budgetError(
      `device-hours to count devices (${modelDevices} devices report ${args.model}, x ${hours} hours)`,
      scanned,
      COUNT_ROW_BUDGET,
      shorter(COUNT_ROW_BUDGET, modelDevices, ''),
    );
  const merged = scopeDevices * hours;
  const where = args.group !== undefined ? `group ${args.group}'s ${scopeDevices}` : `${scopeDevices}`;
  if (args.by === 'device' && merged > MERGE_ROW_BUDGET)
    throw budgetError(
      `device-hours (${where} devices x ${hours} hours)`,
      merged,
      MERGE_ROW_BUDGET,
      shorter(MERGE_ROW_BUDGET, scopeDevices, 'a smaller --group, or --devices'),
    );
}

/**
 * `metrics.query`: the command's arguments as a query over [now - since, now]. A group is resolved
 * to its members now and a device list checked against the fleet, with the errors rollouts give
 * (a name that does not resolve is named), so a typo is not an empty answer.
 */
export function metricsQueries<R>(deps: MetricsQueriesDeps<R>): { query(args: MetricsQueryArgs): R } {
  return {
    query(args) {
      const until = deps.now();
      const since = new Date(until.getTime() - args.sinceSeconds * 1000);
      const group =
        args.group !== undefined
          ? { name: args.group, members: new Set(deps.resolveTarget({ group: args.group })) }
          : undefined;
      const devices = args.devices !== undefined ? deps.resolveTarget({ devices: args.devices }) : undefined;
      const modelDevices = deps.modelDevices(args.model);
      checkQueryBudget(args, modelDevices, group ? group.members.size : modelDevices);
      return deps.reader.query({
        model: args.model,
        ...(args.version !== undefined ? { version: args.version } : {}),
        source: args.source,
        since,
        until,
        by: args.by,
        ...(group ? { group } : {}),
        ...(devices ? { devices } : {}),
      });
    },
  };
}
