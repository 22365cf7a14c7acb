import { promises as fs } from 'node:fs';
import { OtaError } from '../../shared/errors.js';
import type { Store } from '../store/store.js';
import { hashToken } from './tokens.js';

/** A password or token kept alone in a file (its trailing newline is not part of it). */
export async function readSecretFile(file: string, option: string): Promise<string> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new OtaError('E_CONFIG', `${option}: cannot read ${file}: ${(err as Error).message}`);
  }
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '' || /[\r\n]/.test(secret)) {
    throw new OtaError('E_CONFIG', `${option}: ${file} must hold the password alone on one line`);
  }
  return secret;
}

/** A file named by an option (a CA bundle), or E_CONFIG naming the option. */
export async function readConfigFile(file: string, option: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new OtaError('E_CONFIG', `${option}: cannot read ${file}: ${(err as Error).message}`);
  }
}

/** The admin token from the admin token file, when it is still the admin's (else null). */
export async function readAdminToken(file: string, store: Store): Promise<{ name: string; token: string } | null> {
  try {
    const { token } = JSON.parse(await fs.readFile(file, 'utf8')) as { token?: unknown };
    const admin = store.getOperator('admin');
    if (typeof token !== 'string' || !admin || hashToken(token) !== admin.tokenHash) return null;
    return { name: 'admin', token };
  } catch {
    return null;
  }
}
