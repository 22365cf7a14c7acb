/**
 * The signed-in operator, kept in sessionStorage (design section 10): gone when the tab closes,
 * never in a URL, a cookie or a log. Saved only once the coordinator accepted the token, so a
 * wrong token is never stored. `storage` is passed in (the node tests give a Map-backed one).
 */
export interface Credentials {
  user: string;
  token: string;
}

export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

const KEY = 'ota-dashboard-session';

export function loadCredentials(storage: KeyValueStorage): Credentials | null {
  const text = storage.getItem(KEY);
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Partial<Credentials>;
    if (typeof v.user === 'string' && typeof v.token === 'string' && v.user !== '' && v.token !== '') {
      return { user: v.user, token: v.token };
    }
  } catch {
    // A damaged entry: treated as signed out.
  }
  storage.removeItem(KEY);
  return null;
}

export function saveCredentials(storage: KeyValueStorage, c: Credentials): void {
  storage.setItem(KEY, JSON.stringify({ user: c.user, token: c.token }));
}

export function clearCredentials(storage: KeyValueStorage): void {
  storage.removeItem(KEY);
}

/** What the sign-in form refuses before connecting: the broker would refuse it anyway, less clearly. */
export function checkSignIn(user: string, token: string): string | null {
  if (user.trim() === '') return 'Enter the operator name (the admin account is "admin").';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(user.trim())) {
    return 'An operator name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.';
  }
  if (token.trim() === '')
    return 'Enter the token (`otactl operator add` printed it; the admin token is in <data>/admin.token).';
  return null;
}
