import { z } from 'zod';

/**
 * Records keyed by ids (model names, device ids, group, channel and rollout names, label keys).
 * An id is any name the id rule allows (shared/names.ts), `constructor`, `toString`, `valueOf`
 * and `hasOwnProperty` included. In a plain `{}`, looking up such a key that the record does not
 * hold finds Object.prototype's function instead of undefined (issue 12 item 4: a release of a
 * model named `constructor` was never installed). So a record keyed by ids either has no
 * prototype (`idRecord`, and `idRecordSchema` for parsed ones) or is read with `ownEntry`.
 * (`__proto__` never is an id: it starts with `_`; zod drops such a key when parsing a record.)
 */

/** A record without a prototype: `record[id]` and `id in record` see its own entries only. */
export function idRecord<T>(entries?: Readonly<Record<string, T>> | null): Record<string, T> {
  const out = Object.create(null) as Record<string, T>;
  if (entries) for (const [key, value] of Object.entries(entries)) out[key] = value;
  return out;
}

/** The record's own entry for `key`, or undefined: safe on a plain object too (a parsed JSON row). */
export function ownEntry<T>(record: Readonly<Record<string, T>> | null | undefined, key: string): T | undefined {
  return record != null && Object.hasOwn(record, key) ? record[key] : undefined;
}

/** `z.record(key, value)`, parsed into an idRecord (zod builds a plain `{}`). Same JSON Schema. */
export function idRecordSchema<K extends z.core.$ZodRecordKey, V extends z.ZodType>(key: K, value: V) {
  return z.record(key, value).overwrite((parsed) => idRecord(parsed) as typeof parsed);
}
