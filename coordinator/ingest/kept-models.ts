import { idRecord } from '../../shared/id-record.js';
import type { ReportedModel, ReportedModels } from '../../shared/messages.js';
import type { StringPool } from '../string-pool.js';

/**
 * One model of a device's newest report, as the coordinator keeps it in memory: every field of
 * ReportedModel in one fixed-shape object (~0.1 KB), its shared strings pooled.
 *
 * Why not the parsed report's own objects: a report's models are an id record without a
 * prototype, which V8 keeps as a dictionary (~0.2 KB), and each model object has its fields
 * added one by one, past its in-object slots. Kept as parsed, one model of 50,000 devices took
 * 21 MB; kept like this ~9 MB (BENCHMARKS.md, 2026-12-07 "the wave in its own lane").
 */
export class KeptModel {
  readonly state: ReportedModel['state'];
  readonly version: string | null;
  readonly current: string | null;
  readonly previousVersion: string | null;
  readonly rolloutId: string | null;
  readonly progress: ReportedModel['progress'];
  readonly attempt: number;
  readonly error: ReportedModel['error'];
  readonly updatedAt: string;

  constructor(
    readonly name: string,
    m: ReportedModel,
    pool: StringPool,
  ) {
    this.state = m.state;
    this.version = pool.intern(m.version);
    this.current = pool.intern(m.current);
    this.previousVersion = pool.intern(m.previousVersion);
    this.rolloutId = pool.intern(m.rolloutId);
    this.progress = m.progress;
    this.attempt = m.attempt;
    this.error = m.error;
    this.updatedAt = m.updatedAt;
  }

  /** As the report had it: a fresh object, sharing `progress` and `error` (readers never change a report). */
  toReported(): ReportedModel {
    return {
      state: this.state,
      version: this.version,
      current: this.current,
      previousVersion: this.previousVersion,
      rolloutId: this.rolloutId,
      progress: this.progress,
      attempt: this.attempt,
      error: this.error,
      updatedAt: this.updatedAt,
    };
  }
}

/** A device's kept models: one (nearly every device), or several. */
export type KeptModels = KeptModel | readonly KeptModel[];

/** No models: a device enrolled that has not reported one (shared: it is never changed). */
export const NO_MODELS: KeptModels = Object.freeze([]);

/** What to keep of a report's models. */
export function keepModels(models: ReportedModels, pool: StringPool): KeptModels {
  const kept: KeptModel[] = [];
  // for-in with an own-key check: no array per report. The record has no prototype, but a
  // stored row is read back as plain JSON.
  for (const name in models) {
    if (!Object.hasOwn(models, name)) continue;
    kept.push(new KeptModel(pool.intern(name), models[name] as ReportedModel, pool));
  }
  return kept.length === 1 ? (kept[0] as KeptModel) : kept.length === 0 ? NO_MODELS : kept;
}

/** The kept model named `name`, or undefined. */
export function keptModel(kept: KeptModels, name: string): KeptModel | undefined {
  if (kept instanceof KeptModel) return kept.name === name ? kept : undefined;
  return kept.find((m) => m.name === name);
}

/**
 * Whether `m` says nothing new about its model against `before`: the same state, versions,
 * rollout, attempt and error. A download's progress and the time are not news: the agent reports
 * its progress 4 times a second (agent/download/http-download.ts), each with a new `updatedAt`.
 */
export function sameModelState(before: Omit<ReportedModel, 'progress' | 'updatedAt'>, m: ReportedModel): boolean {
  return (
    before.state === m.state &&
    before.version === m.version &&
    before.current === m.current &&
    before.previousVersion === m.previousVersion &&
    before.rolloutId === m.rolloutId &&
    before.attempt === m.attempt &&
    (before.error === m.error ||
      (before.error !== null &&
        m.error !== null &&
        before.error.code === m.error.code &&
        before.error.message === m.error.message))
  );
}

/** The models as a report has them: an id record (shared/id-record.ts), built anew on each call. */
export function reportedModels(kept: KeptModels): ReportedModels {
  const out = idRecord<ReportedModel>();
  for (const m of kept instanceof KeptModel ? [kept] : kept) out[m.name] = m.toReported();
  return out;
}
