import { promises as fs } from 'node:fs';
import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs-atomic.js';
import { generateKey, type PrivateKey, readPrivateKeyFile, writeKeyPair } from '../../shared/keys.js';
import type { Store } from '../store/store.js';
import { hashToken, newToken } from './tokens.js';

export const ADMIN_TOKEN_FILE = 'admin.token';
export const COORDINATOR_KEY_FILE = 'coordinator.key';

/** What `otactl` on the same host reads to reach and authenticate to the coordinator. */
export interface AdminTokenFile {
  user: string;
  token: string;
  mqttUrl: string;
  httpUrl: string;
}

/** The coordinator's own signing key (desired states), created on first start (0600). */
export async function loadOrCreateCoordinatorKey(dataDir: string): Promise<PrivateKey> {
  const file = path.join(dataDir, COORDINATOR_KEY_FILE);
  try {
    return await readPrivateKeyFile(file);
  } catch (err) {
    if (!(err instanceof OtaError) || !(await missing(file))) throw err;
  }
  const key = generateKey();
  await writeKeyPair(file, key);
  return key;
}

async function missing(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => false,
    () => true,
  );
}

/**
 * First start: an `admin` operator and its token in `<data>/admin.token` (0600). Later starts
 * refresh the addresses in the file (ports may differ) and keep the token. When the file is gone
 * but the admin exists, the token cannot be recovered (only its hash is stored): say so.
 */
export async function ensureAdminToken(
  dataDir: string,
  store: Store,
  urls: { mqttUrl: string; httpUrl: string },
  now: string,
): Promise<{ file: string; created: boolean; warning: string | null }> {
  const file = path.join(dataDir, ADMIN_TOKEN_FILE);
  let existing: AdminTokenFile | null = null;
  try {
    existing = JSON.parse(await fs.readFile(file, 'utf8')) as AdminTokenFile;
  } catch {
    existing = null;
  }
  const admin = store.getOperator('admin');
  if (existing?.token && admin && hashToken(existing.token) === admin.tokenHash) {
    await writeFileAtomic(file, `${JSON.stringify({ ...existing, ...urls }, null, 2)}\n`, { mode: 0o600 });
    return { file, created: false, warning: null };
  }
  if (admin) {
    return {
      file,
      created: false,
      warning: `${file} is missing or does not hold the admin token; create another admin with \`otactl operator add\` from an existing admin account`,
    };
  }
  const token = newToken();
  store.transaction(() => {
    store.addOperator({ name: 'admin', role: 'admin', tokenHash: hashToken(token), now });
    store.appendAudit(
      [
        {
          actor: 'coordinator',
          action: 'operator.added',
          subject: 'operator:admin',
          details: { role: 'admin', bootstrap: true },
        },
      ],
      now,
    );
  });
  const content: AdminTokenFile = { user: 'admin', token, ...urls };
  await writeFileAtomic(file, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  return { file, created: true, warning: null };
}
