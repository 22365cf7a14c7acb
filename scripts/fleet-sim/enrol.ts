import type { CommandClient } from '../../coordinator/client/command-client.js';
import { mapLimit, wallMs } from '../bench/common.js';
import type { SimCredentials } from './ipc.js';

export interface EnrolResult {
  devices: SimCredentials[];
  ms: number;
  perSecond: number;
  concurrency: number;
}

/** Device ids `${prefix}-00001` ... (fixed width, so they sort as numbers). */
export function deviceIds(prefix: string, n: number): string[] {
  const width = Math.max(5, String(n).length);
  return Array.from({ length: n }, (_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}`);
}

/**
 * Enrols devices through the command API (`device.add`, admin), `concurrency` requests in flight
 * at once, and returns each device's credentials (the token is shown once, in the reply).
 */
export async function enrolDevices(
  admin: CommandClient,
  ids: string[],
  options: { labels?: Record<string, string>; concurrency?: number; onProgress?: (done: number) => void } = {},
): Promise<EnrolResult> {
  const concurrency = options.concurrency ?? 64;
  const t0 = wallMs();
  let done = 0;
  const devices = await mapLimit(ids, concurrency, async (id) => {
    const result = await admin.call<{ token: string }>('device.add', {
      id,
      ...(options.labels ? { labels: options.labels } : {}),
    });
    done++;
    if (done % 1000 === 0) options.onProgress?.(done);
    return { id, token: result.token };
  });
  const ms = wallMs() - t0;
  return { devices, ms: Math.round(ms), perSecond: Math.round((ids.length / ms) * 1000), concurrency };
}
