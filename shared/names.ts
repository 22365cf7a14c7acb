import { OtaError } from './errors.js';

/**
 * Names that end up in file paths (model names and versions on the device) or in MQTT topics
 * (device ids, rollout ids, command ops). One conservative alphabet for all of them: it cannot
 * express a path separator, `..`, a NUL, or the MQTT wildcards `+` and `#` (MQTT 3.1.1 section 4.7).
 * Versions may also carry `+` (semver build metadata) since they never appear in a topic.
 */
export const ID_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}$/;
export const VERSION_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9_+-]|\.(?!\.)){0,63}$/;

export type NameKind = 'model name' | 'version' | 'device id' | 'rollout id' | 'key id' | 'command' | 'client id';

export function isSafeId(value: string): boolean {
  return ID_PATTERN.test(value);
}

export function isSafeVersion(value: string): boolean {
  return VERSION_PATTERN.test(value);
}

/** Throws E_NAME naming the field and the reason; returns the value for chaining. */
export function assertSafeName(kind: NameKind, value: unknown): string {
  const ok = typeof value === 'string' && (kind === 'version' ? isSafeVersion(value) : isSafeId(value));
  if (ok) return value;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
  let why = 'use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit';
  if (typeof value === 'string' && (value.includes('/') || value.includes('\\') || value.includes('..'))) {
    why = 'path separators and ".." are not allowed';
  }
  throw new OtaError('E_NAME', `invalid ${kind} ${shown}: ${why}`);
}
