import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { findDynsecPlugin, writeMosquittoConfig } from '../../coordinator/external-broker/mosquitto-config.js';
import { createTopics } from '../../shared/topics.js';
import { freePort } from './coordinator-process.js';

export const MOSQUITTO = '/usr/sbin/mosquitto';

/**
 * The `skip` option of a Mosquitto test: false, or why it is skipped. Under CI it is never
 * skipped (.ci/run installs Debian's mosquitto), so a missing broker fails there at start.
 */
export function mosquittoSkip(): false | string {
  if (existsSync(MOSQUITTO) && findDynsecPlugin()) return false;
  return process.env.CI
    ? false
    : 'Mosquitto is not installed (apt-get install mosquitto); skipped because CI is not set';
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/**
 * A real Mosquitto 2 on a free loopback port with the config `ota-coordinator mosquitto-config`
 * writes (its dynamic security plugin, persistence in `dir`), started and stopped by pid (never a
 * system service). `restart()` stops it and starts it again on the same port with the same files.
 */
export class TestMosquitto {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly conf: string,
    readonly passwordFile: string,
    readonly logFile: string,
    readonly tls: boolean,
  ) {}

  get url(): string {
    return `${this.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Flags for ota-coordinator (and its env equivalents) to use this broker. */
  get env(): NodeJS.ProcessEnv {
    return { OTA_BROKER_URL: this.url, OTA_BROKER_PASSWORD_FILE: this.passwordFile };
  }

  /** With `tls`, the MQTT listener takes TLS only (PEM files; clients need the certificate's CA). */
  static async start(
    t: Test,
    dir: string,
    options: { tls?: { certFile: string; keyFile: string } } = {},
  ): Promise<TestMosquitto> {
    const port = await freePort();
    // The test process writes the files; Mosquitto (dropping to `user` when started as root) reads them.
    const runAs = process.getuid?.() === 0 ? 'root' : os.userInfo().username;
    const logFile = path.join(dir, 'mosquitto.log');
    const written = await writeMosquittoConfig({
      dir,
      host: '127.0.0.1',
      port,
      wsPort: null,
      runAs,
      plugin: findDynsecPlugin() as string,
      username: 'ota-coordinator',
      password: `test-${Math.random().toString(36).slice(2)}`,
      topics: createTopics(),
      tls: options.tls ?? null,
      logFile,
    });
    const broker = new TestMosquitto(dir, port, written.conf, written.passwordFile, logFile, options.tls !== undefined);
    await broker.launch();
    t.teardown(() => broker.stop());
    return broker;
  }

  private async launch(): Promise<void> {
    const child = spawn(MOSQUITTO, ['-c', this.conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) break;
      if (await listening(this.port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    const log = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    throw new Error(`mosquitto did not start on port ${this.port}:\n${stderr}\n${log.slice(-2000)}`);
  }

  /** SIGTERM by pid, and waits for the exit (Mosquitto saves its persistence file then). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await this.exited;
    this.child = null;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async log(): Promise<string> {
    return fs.readFile(this.logFile, 'utf8').catch(() => '');
  }
}
