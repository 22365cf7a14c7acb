import type { Role } from '../store/records.js';

/** Who is on the other end of an MQTT connection, once authenticated (design section 3). */
export type Principal = { kind: 'device'; deviceId: string } | { kind: 'operator'; name: string; role: Role };

/**
 * Checks MQTT credentials: username = device id or operator name, password = token. Returns null
 * when they do not match (unknown user, wrong token). Tokens are compared as sha256 hashes in
 * constant time (coordinator/identity/tokens.ts).
 */
export type Authenticate = (username: string, password: string) => Principal | null;
