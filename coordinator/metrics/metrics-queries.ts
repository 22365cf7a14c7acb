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
  /** A group's members now, or the device list checked: names that do not resolve are an error. */
  resolveTarget: (target: { group?: string; devices?: string[] }) => string[];
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
