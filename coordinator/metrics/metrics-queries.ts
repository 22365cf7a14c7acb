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
  /** Enrolled devices: the scope of a query without a group or device list. */
  fleetSize: () => number;
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

/**
 * The estimate of what a query reads, for devices that each send one summary a minute of one
 * version: throws E_USAGE when it is over budget.
 */
export function checkQueryBudget(args: MetricsQueryArgs, scopeDevices: number): void {
  const hours = Math.ceil(args.sinceSeconds / 3600) + 1;
  if (args.devices !== undefined) {
    const rows = args.devices.length * Math.ceil(args.sinceSeconds / 60);
    if (rows > MERGE_ROW_BUDGET)
      throw budgetError(
        `windows (${args.devices.length} devices x ${Math.ceil(args.sinceSeconds / 60)} minutes)`,
        rows,
        MERGE_ROW_BUDGET,
        'name fewer devices or a shorter --since, or use a group (its rollups answer without reading windows)',
      );
    return;
  }
  const deviceHours = scopeDevices * hours;
  const where = args.group !== undefined ? `group ${args.group}'s ${scopeDevices}` : `${scopeDevices}`;
  if (args.by === 'device' && deviceHours > MERGE_ROW_BUDGET)
    throw budgetError(
      `device-hours (${where} devices x ${hours} hours)`,
      deviceHours,
      MERGE_ROW_BUDGET,
      `use a shorter --since (at most ${Math.max(1, Math.floor(MERGE_ROW_BUDGET / Math.max(1, scopeDevices)) - 1)} hours here), a smaller --group, or --devices`,
    );
  if (deviceHours > COUNT_ROW_BUDGET)
    throw budgetError(
      `device-hours to count devices (${where} devices x ${hours} hours)`,
      deviceHours,
      COUNT_ROW_BUDGET,
      `use a shorter --since (at most ${Math.max(1, Math.floor(COUNT_ROW_BUDGET / Math.max(1, scopeDevices)) - 1)} hours here) or a --group`,
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
      checkQueryBudget(args, group ? group.members.size : deps.fleetSize());
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
