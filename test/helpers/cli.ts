import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The compiled otactl, as a user runs it (`npm test` builds first, in its pretest step). */
export const OTACTL = fileURLToPath(new URL('../../dist/coordinator/cli/main.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs otactl as a separate process and collects its exit code and output. */
export function otactl(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  if (!existsSync(OTACTL)) throw new Error(`${OTACTL} is missing: run \`npm run build\` first`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [OTACTL, ...args], {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface RunningCli {
  child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Resolves when stdout matches `pattern` (rejects after `timeoutMs`). */
  waitForStdout(pattern: RegExp, timeoutMs?: number): Promise<void>;
  result: Promise<CliResult>;
}

/** Starts otactl and returns at once: for long-running commands (`rollout status --watch`) and signals. */
export function startOtactl(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): RunningCli {
  if (!existsSync(OTACTL)) throw new Error(`${OTACTL} is missing: run \`npm run build\` first`);
  const child = spawn(process.execPath, [OTACTL, ...args], {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const w of waiters) w();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const result = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
      for (const w of waiters) w();
    });
  });
  return {
    child,
    stdout: () => stdout,
    result,
    waitForStdout(pattern, timeoutMs = 15_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(stdout)) {
            done();
            resolve();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(new Error(`otactl exited before stdout matched ${pattern}: ${stdout}${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`stdout did not match ${pattern} within ${timeoutMs} ms: ${stdout}${stderr}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
