import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./aedes-child.js', import.meta.url));

type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** The installed Aedes release (node_modules/aedes/package.json). */
export function aedesVersion(): string {
  // Its `exports` hide package.json; it sits next to the main module.
  const file = path.join(path.dirname(createRequire(import.meta.url).resolve('aedes')), 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

/**
 * A bare Aedes broker in a child process of ours (scripts/bench/aedes-child.ts), so its memory
 * and CPU are its own, as the coordinator's are in bench:fleet.
 */
export class AedesProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly exited: Promise<Exit>,
  ) {}

  get pid(): number {
    return this.child.pid as number;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(options: { retainedIndex?: boolean; readyTimeoutMs?: number } = {}): Promise<AedesProcess> {
    const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
    const child = fork(CHILD, options.retainedIndex ? ['--retained-index'] : [], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    // Rejects if the child dies first; handled here so its later, expected exit is no unhandled rejection.
    const died = exited.then((e): never => {
      throw new Error(`the Aedes child exited (${e.code ?? e.signal}) before listening`);
    });
    died.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    try {
      const port = await Promise.race([
        new Promise<number>((resolve) => child.once('message', (m) => resolve((m as { port: number }).port))),
        died,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the Aedes child was not listening after ${readyTimeoutMs} ms`)),
            readyTimeoutMs,
          );
        }),
      ]);
      return new AedesProcess(child, port, exited);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<Exit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.kill(), graceMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
