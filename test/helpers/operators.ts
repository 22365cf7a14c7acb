import path from 'node:path';
import type { RolloutSummary } from '../../shared/messages.js';
import { otactl } from './cli.js';
import type { FleetFixture } from './fleet-fixture.js';

/** No OTA_* from the environment running the tests: the flags say everything. */
const CLEAN = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: '' };

export interface OperatorAccount {
  id: string;
  role: string;
  token: string;
}

/** `otactl operator add NAME --role ROLE`, as an admin does it, against the fixture's coordinator. */
export async function addOperator(f: FleetFixture, name: string, role: 'admin' | 'operator' | 'viewer') {
  const r = await otactl(
    [
      '--url',
      f.coordinator.mqttUrl,
      '--token-file',
      path.join(f.coordinator.dataDir, 'admin.token'),
      'operator',
      'add',
      name,
      '--role',
      role,
      '--json',
    ],
    { env: CLEAN },
  );
  if (r.code !== 0) throw new Error(`otactl operator add ${name} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as OperatorAccount;
}

export interface RolloutStatusJson {
  summary: RolloutSummary;
  devices: {
    id: string;
    wave: number;
    state: string;
    error: { code: string; message: string } | null;
    revertedTo: { version: string | null } | null;
  }[];
}

/** `otactl rollout status ID --json` as the admin: the coordinator's own record of a rollout. */
export async function rolloutStatus(f: FleetFixture, id: string): Promise<RolloutStatusJson> {
  const r = await otactl(
    [
      '--url',
      f.coordinator.mqttUrl,
      '--token-file',
      path.join(f.coordinator.dataDir, 'admin.token'),
      'rollout',
      'status',
      id,
      '--json',
    ],
    { env: CLEAN },
  );
  if (r.code !== 0) throw new Error(`otactl rollout status ${id} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as RolloutStatusJson;
}
