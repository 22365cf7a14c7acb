import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestSigners } from './signing.js';

/** The compiled agent, run as a real process (`npm test` builds first). */
export const AGENT_MAIN = fileURLToPath(new URL('../../dist/agent/main.js', import.meta.url));

export interface AgentOptions {
  dir: string;
  deviceId: string;
  brokerUrl: string;
  artifactsUrl: string;
  signers: TestSigners;
  config?: Record<string, unknown>;
}

/** Writes an agent config like the one `otactl device add --agent-config` produces, tuned for fast tests. */
export function writeAgentConfig(options: AgentOptions): string {
  const file = path.join(options.dir, `${options.deviceId}.config.json`);
  const config = {
    deviceId: options.deviceId,
    broker: { url: options.brokerUrl },
    artifactsUrl: options.artifactsUrl,
    token: `token-of-${options.deviceId}`,
    ...options.signers.configKeys(),
    stateDir: path.join(options.dir, `${options.deviceId}-state`),
    probe: { timeoutMs: 20_000, attempts: 1, initialDelayMs: 0 },
    logLevel: 'debug',
    ...options.config,
    download: {
      backoffBaseMs: 100,
      backoffMaxMs: 1_000,
      maxAttempts: 3,
      stallTimeoutMs: 2_000,
      deadlineMs: 30_000,
      reserveMB: 0,
      ...(options.config?.download as object | undefined),
    },
  };
  // It holds the token: private, as otactl writes it (the agent refuses a token others can read).
  writeFileSync(file, JSON.stringify(config, null, 2), { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** One running daemon (agent or coordinator) with its parsed pino log lines. */
export class LoggedProcess {
  readonly logs: LogLine[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;
  private waiters: (() => void)[] = [];

  /**
   * `launch`: run `launch.command` (program and its first arguments) instead of this node on
   * `main`, with only `env` (nothing of the test's own environment): an installed agent, e.g.
   * through chroot.
   */
  constructor(main: string, args: string[], env: NodeJS.ProcessEnv = {}, launch?: { command: string[] }) {
    if (!launch && !existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` first`);
    const [file, ...first] = launch ? launch.command : [process.execPath, main];
    this.child = spawn(file as string, [...first, ...args], {
      env: launch ? env : { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buffer = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl = buffer.indexOf('\n');
      while (nl >= 0) {
        const line = buffer.slice(0, nl).replace(/^<\d>/, '');
        buffer = buffer.slice(nl + 1);
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          this.logs.push({ level: 0, msg: line });
        }
        nl = buffer.indexOf('\n');
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Resolves with the first log line matching `pred` (also already seen ones). */
  async waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs.find(pred);
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(`log line not seen in ${timeoutMs} ms; last lines:\n${this.tail()}`);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  tail(n = 15): string {
    return [
      ...this.logs.slice(-n).map((l) => JSON.stringify(l)),
      this.stderr ? `stderr: ${this.stderr.slice(-2000)}` : '',
    ].join('\n');
  }

  /**
   * Waits for the process to exit by itself (a test crash point), at most `timeoutMs`; otherwise
   * kills it and fails with its last log lines, so a crash point that was never reached fails
   * the test at once instead of hanging it until the file timeout.
   */
  async exitsWithin(timeoutMs: number, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => {
      timer = setTimeout(() => r('late'), timeoutMs);
    });
    const result = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (result !== 'late') return result;
    this.child.kill('SIGKILL');
    await this.exited;
    throw new Error(`${what}: the process did not exit within ${timeoutMs} ms; last lines:\n${this.tail()}`);
  }

  kill9(): Promise<unknown> {
    this.child.kill('SIGKILL');
    return this.exited;
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

/** One running `ota-agent` process. */
export class AgentProcess extends LoggedProcess {
  constructor(configFile: string, env: NodeJS.ProcessEnv = {}, launch?: { command: string[] }) {
    // No RUNTIME_DIRECTORY from the environment the tests run in (a systemd service): every
    // agent would default its metrics socket to the same path there (agent/config.ts).
    super(AGENT_MAIN, ['--config', configFile], { RUNTIME_DIRECTORY: undefined, ...env }, launch);
  }
}
