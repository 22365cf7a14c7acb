import type { ModelState, Reported } from '../../shared/messages.js';

export type ModelSpec = { state: ModelState; current: string | null };

/**
 * A report naming exactly `models`, each at its `current` version (a null-prototype record, as
 * the schema parses it: a model may be named `constructor`).
 */
export function reportOf(deviceId: string, models: Record<string, ModelSpec>, ts: string, seq = 1): Reported {
  const out = Object.create(null) as Reported['models'];
  for (const name of Object.keys(models)) {
    const m = models[name] as ModelSpec;
    out[name] = {
      state: m.state,
      version: m.current,
      current: m.current,
      previousVersion: null,
      rolloutId: null,
      progress: null,
      attempt: 0,
      error: null,
      updatedAt: ts,
    };
  }
  return { deviceId, seq, ts, models: out, rejected: null };
}
