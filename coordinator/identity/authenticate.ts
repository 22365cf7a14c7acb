import type { Authenticate, Principal } from '../broker/principal.js';
import type { Store } from '../store/store.js';
import { tokenMatches } from './tokens.js';

/**
 * Credentials -> principal, against the store: a device id with its token, or an operator name
 * with its token. Device ids and operator names are separate namespaces; a name that is both is
 * tried as a device first (enrolment refuses to create such clashes, see device.add).
 */
export function storeAuthenticator(store: Store): Authenticate {
  return (username: string, password: string): Principal | null => {
    if (!username || !password) return null;
    const deviceHash = store.deviceTokenHash(username);
    if (deviceHash !== null) return tokenMatches(password, deviceHash) ? { kind: 'device', deviceId: username } : null;
    const op = store.getOperator(username);
    if (op && tokenMatches(password, op.tokenHash)) return { kind: 'operator', name: op.name, role: op.role };
    if (!op) tokenMatches(password, null); // same work for unknown users
    return null;
  };
}
