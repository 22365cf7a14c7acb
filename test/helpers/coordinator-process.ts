import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdminTokenFile } from '../../coordinator/identity/bootstrap.js';
import { LoggedProcess } from './agent-process.js';

/** The compiled coordinator, run as a real process (`npm test` builds first). */
export const COORDINATOR_MAIN = fileURLToPath(new URL('../../dist/coordinator/main.js', import.meta.url));

/** A port free right now on 127.0.0.1 (for restarts that must come back on the same port). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** One running `ota-coordinator` process, ready once its readiness line was logged. */
export class CoordinatorProcess extends LoggedProcess {
  mqttUrl = '';
  httpUrl = '';

  constructor(
    readonly dataDir: string,
    readonly ports: { mqtt: number; http: number },
    readonly env: NodeJS.ProcessEnv = {},
  ) {
    super(
      COORDINATOR_MAIN,
      ['--data', dataDir, '--host', '127.0.0.1', '--mqtt-port', String(ports.mqtt), '--http-port', String(ports.http)],
      { OTA_LOG_LEVEL: 'debug', ...env },
    );
  }

  static async start(
    dataDir: string,
    ports?: { mqtt: number; http: number },
    env: NodeJS.ProcessEnv = {},
  ): Promise<CoordinatorProcess> {
    const p = new CoordinatorProcess(dataDir, ports ?? { mqtt: await freePort(), http: await freePort() }, env);
    await p.ready();
    return p;
  }

  async ready(timeoutMs = 30_000): Promise<this> {
    const exited = this.exited.then((e) => {
      throw new Error(`ota-coordinator exited (${e.code ?? e.signal}) before it was ready:\n${this.tail()}`);
    });
    exited.catch(() => {}); // a later exit is not this wait's business
    const line = await Promise.race([
      this.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('ota-coordinator ready'), timeoutMs),
      exited,
    ]);
    this.mqttUrl = String(line.mqtt);
    this.httpUrl = String(line.http);
    return this;
  }

  admin(): AdminTokenFile {
    return JSON.parse(readFileSync(path.join(this.dataDir, 'admin.token'), 'utf8')) as AdminTokenFile;
  }
}
