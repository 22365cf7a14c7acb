import { z } from 'zod';
import { METRIC_SOURCES } from '../../shared/metrics/limits.js';
import { idArg, versionArg } from '../commands/arg-schemas.js';
import { MAX_QUERY_DEVICES } from './query.js';

const id = idArg;

/** The longest look back a query may ask for (retention may be set up to this). */
export const MAX_QUERY_SECONDS = 366 * 86_400;

/** `metrics.query` (otactl metrics): which model's summaries, of which devices, over which time. */
export const MetricsQueryArgsSchema = z
  .strictObject({
    model: id,
    version: versionArg.optional(),
    group: id.optional(),
    devices: z.array(id).min(1).max(MAX_QUERY_DEVICES).optional(),
    /** From this many seconds ago until now. */
    sinceSeconds: z
      .number()
      .int()
      .min(60, 'at least 60 seconds: summaries cover a minute each (--since 1m or more)')
      .max(MAX_QUERY_SECONDS, 'at most 366 days (--since 366d); retention keeps less by default (14 days)')
      .default(3_600),
    by: z.enum(['version', 'device']).default('version'),
    source: z.enum(METRIC_SOURCES).default('app'),
  })
  .refine((a) => a.group === undefined || a.devices === undefined, 'name a group or a device list, not both');
export type MetricsQueryArgs = z.infer<typeof MetricsQueryArgsSchema>;
