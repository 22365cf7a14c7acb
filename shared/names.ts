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

/**
 * What separates an operator's name from the rest of its MQTT client id (`bob@otactl-3f2a`). It
 * is not in the safe-id alphabet, so no name contains it: the text before the first `@` of a
 * client id is exactly the name of the operator it belongs to, whatever other names exist
 * (`bob`, `bob-admin`, `bob.admin`). MQTT 3.1.1 section 3.1.3.1 lets a server accept client ids
 * longer than 23 bytes and with other characters than letters and digits (Aedes does), and `@`
 * may stand in a topic name (only `+`, `#` and U+0000 may not, sections 4.7.1 and 1.5.3).
 */
export const CLIENT_ID_SEPARATOR = '@';

/**
 * An MQTT client id the coordinator accepts: a safe id (a device's id, an operator's name), or a
 * safe id, `@` and a safe id (`bob@otactl-3f2a`, an operator's other sessions).
 */
export function isClientId(value: string): boolean {
  const at = value.indexOf(CLIENT_ID_SEPARATOR);
  if (at < 0) return isSafeId(value);
  return isSafeId(value.slice(0, at)) && isSafeId(value.slice(at + 1));
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
