import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../../coordinator/config.js';
import type { AdminTokenFile } from '../../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../../coordinator/service.js';
import { createLogger } from '../../shared/logger.js';

const silent = createLogger('silent', process.stdout, 'ota-coordinator');

/**
 * A real coordinator in the test process (real Aedes, SQLite and HTTP on port 0), with a command
 * client logged in as its admin; both stopped with the test. `dataDir` defaults to
 * `<t.testdir()>/data` (t.testdir() may be called once per test: a second call empties it).
 */
export async function startInProcessCoordinator(
  t: Test,
  dataDir = path.join(t.testdir(), 'data'),
  options: Omit<Parameters<typeof startCoordinator>[1], 'logger'> = {},
  /** More settings, as the environment would give them (e.g. TestMosquitto's `env`). */
  env: NodeJS.ProcessEnv = {},
) {
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, env);
  const running = await startCoordinator(config, { logger: silent, ...options });
  t.teardown(() => running.stop());
  const token = JSON.parse(await fs.readFile(running.adminTokenFile, 'utf8')) as AdminTokenFile;
  const admin = await CommandClient.connect({ url: running.mqttUrl, user: token.user, token: token.token });
  t.teardown(() => admin.close());
  return { running, token, admin, dataDir };
}
