import path from 'node:path';
import type { RolloutStatusResult } from '../../coordinator/rollout/types.js';
import { otactl } from './cli.js';
import type { FleetFixture } from './fleet-fixture.js';

/** No OTA_* from the environment running the tests: the flags say everything. */
const CLEAN = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: '' };

export interface OperatorAccount {
  id: string;
  role: string;
  token: string;
}

/** `otactl ARGS --json` as the admin (its token file) against the fixture's coordinator. */
async function asAdmin<T>(f: FleetFixture, args: string[]): Promise<T> {
  const tokenFile = path.join(f.coordinator.dataDir, 'admin.token');
  const r = await otactl(['--url', f.coordinator.mqttUrl, '--token-file', tokenFile, ...args, '--json'], {
    env: CLEAN,
  });
  if (r.code !== 0) throw new Error(`otactl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** `otactl operator add NAME --role ROLE`, as an admin does it, against the fixture's coordinator. */
export function addOperator(f: FleetFixture, name: string, role: 'admin' | 'operator' | 'viewer') {
  return asAdmin<OperatorAccount>(f, ['operator', 'add', name, '--role', role]);
}

/** `otactl rollout status ID --json` as the admin: the coordinator's own record of a rollout. */
export function rolloutStatus(f: FleetFixture, id: string): Promise<RolloutStatusResult> {
  return asAdmin<RolloutStatusResult>(f, ['rollout', 'status', id]);
}
