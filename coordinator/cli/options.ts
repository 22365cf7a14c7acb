import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../../shared/duration.js';
import { OtaError } from '../../shared/errors.js';

/** Option parsers for commander: a bad value is a usage error (exit 2) that names the option. */

export function nonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('expected a non-negative integer');
  }
  return Number(value);
}

export function positiveInt(value: string): number {
  const n = nonNegativeInt(value);
  if (n < 1) throw new InvalidArgumentError('expected an integer of at least 1');
  return n;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function isoDate(value: string): string {
  const t = Date.parse(value);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}T/.test(value)) {
    throw new InvalidArgumentError('expected an ISO 8601 date-time such as 2027-01-31T00:00:00Z');
  }
  return new Date(t).toISOString();
}

/** "90d", "12h", "30m", "45s" -> milliseconds. */
export function duration(value: string): number {
  const ms = parseDuration(value);
  if (ms === null) throw new InvalidArgumentError('expected a duration such as 90d, 12h, 30m or 45s');
  if (ms <= 0) throw new InvalidArgumentError('the duration must be positive');
  return ms;
}

const LABEL = /^([A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63})=(.{1,128})$/;

/** Repeatable `k=v` (also `k=v,k2=v2`) into a record; a later key wins. */
export function labelPairs(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const out = { ...(previous ?? {}) };
  for (const part of value.split(',')) {
    const m = LABEL.exec(part.trim());
    if (!m) {
      throw new InvalidArgumentError(
        `expected key=value (key: letters, digits, ".", "_", "-"; value: 1-128 characters), got ${JSON.stringify(part)}`,
      );
    }
    out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** Repeatable comma-separated list (`a,b,c`), duplicates dropped, order kept. */
export function commaList(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list, e.g. cam-1,cam-2');
  return [...new Set([...(previous ?? []), ...items])];
}

/** A failure tolerance in [0, 1). */
export function failureRate(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 1) {
    throw new InvalidArgumentError('expected a number in [0, 1), e.g. 0.05 (0: the first failure halts)');
  }
  return n;
}

/**
 * The `expiresAt` of a signed document (a release manifest, a trust document) from
 * `--expires-at` or `--expires-in`, relative to `now`; undefined without either. A date already
 * past is a usage error: nothing signed with it could ever be accepted.
 */
export function expiryOf(opts: { expiresAt?: string; expiresIn?: number }, now: Date): string | undefined {
  const expiresMs = opts.expiresAt
    ? Date.parse(opts.expiresAt)
    : opts.expiresIn
      ? now.getTime() + opts.expiresIn
      : undefined;
  if (expiresMs === undefined) return undefined;
  if (expiresMs <= now.getTime()) throw new OtaError('E_USAGE', `--expires-at ${opts.expiresAt} is in the past`);
  return new Date(expiresMs).toISOString();
}
