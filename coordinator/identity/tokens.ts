import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Device and operator tokens (design section 3): 32 random bytes, base64url. The store keeps
 * only sha256(token); a presented token is hashed and compared in constant time, so neither a
 * database leak nor response timing gives a token away.
 */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function tokenMatches(token: string, storedHash: string | null): boolean {
  // Hash even when there is nothing to compare with, so unknown users take as long as known ones.
  const presented = Buffer.from(hashToken(token), 'hex');
  const stored = Buffer.from(storedHash ?? '0'.repeat(64), 'hex');
  return stored.length === presented.length && timingSafeEqual(presented, stored) && storedHash !== null;
}
