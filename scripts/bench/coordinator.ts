import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled coordinator (benchmarks run from dist/). */
export const COORDINATOR_MAIN = fileURLToPath(new URL('../../coordinator/main.js', import.meta.url));

export interface CoordinatorOptions {
  dataDir: string;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir', DIR]. */
  nodeFlags?: string[];
  /** Open the V8 inspector on a free loopback port (`inspectorUrl`), for phase-by-phase profiles. */
  inspect?: boolean;
  logLevel?: string;
  readyTimeoutMs?: number;
  /** More ota-coordinator flags, e.g. ['--broker', URL, '--broker-password-file', FILE]. */
  args?: string[];
}

/**
 * One `ota-coordinator` process on 127.0.0.1 with free ports (port 0), a fresh data directory,
 * ready once it logged its readiness line. Its stdout is drained (the last lines are kept for
 * error messages), so a chatty log never blocks it.
 */
export class CoordinatorProcess {
  mqttUrl = '';
  httpUrl = '';
  inspectorUrl = '';
  private readonly tailLines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly dataDir: string,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid as number;
  }

  static async start(options: CoordinatorOptions): Promise<CoordinatorProcess> {
    if (!existsSync(COORDINATOR_MAIN)) throw new Error(`${COORDINATOR_MAIN} is missing: run \`npm run build\``);
    const child = spawn(
      process.execPath,
      [
        ...(options.nodeFlags ?? []),
        ...(options.inspect ? ['--inspect=127.0.0.1:0'] : []),
        COORDINATOR_MAIN,
        '--data',
        options.dataDir,
        '--host',
        '127.0.0.1',
        '--mqtt-port',
        '0',
        '--http-port',
        '0',
        ...(options.args ?? []),
      ],
      { env: { ...process.env, OTA_LOG_LEVEL: options.logLevel ?? 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const p = new CoordinatorProcess(child, options.dataDir);
    const ready = new Promise<void>((resolve, reject) => {
      let buffer = '';
      child.stdout?.on('data', (d: Buffer) => {
        buffer += d.toString();
        let nl = buffer.indexOf('\n');
        while (nl >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          p.keep(line);
          if (!p.mqttUrl && line.includes('ota-coordinator ready')) {
            try {
              const parsed = JSON.parse(line.replace(/^<\d>/, '')) as { msg?: string; mqtt?: string; http?: string };
              if (parsed.msg?.startsWith('ota-coordinator ready')) {
                if (options.inspect && !p.inspectorUrl) p.keep('no inspector URL on stderr before the readiness line');
                p.mqttUrl = String(parsed.mqtt);
                p.httpUrl = String(parsed.http);
                resolve();
              }
            } catch {
              // not the JSON line
            }
          }
          nl = buffer.indexOf('\n');
        }
      });
      child.stderr?.on('data', (d: Buffer) => {
        const text = d.toString();
        const inspector = /Debugger listening on (ws:\/\/\S+)/.exec(text);
        if (inspector?.[1]) p.inspectorUrl = inspector[1];
        else p.keep(`stderr: ${text.trimEnd()}`);
      });
      void p.exited.then((e) => reject(new Error(`ota-coordinator exited (${e.code ?? e.signal}):\n${p.tail()}`)));
    });
    const timeoutMs = options.readyTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`ota-coordinator not ready in ${timeoutMs} ms:\n${p.tail()}`)),
            timeoutMs,
          );
        }),
      ]);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return p;
  }

  private keep(line: string): void {
    this.tailLines.push(line.length > 2000 ? `${line.slice(0, 2000)}...` : line);
    if (this.tailLines.length > 50) this.tailLines.shift();
  }

  tail(n = 20): string {
    return this.tailLines.slice(-n).join('\n');
  }

  /** Log lines seen (the last 50) that are warnings or worse. */
  problems(): string[] {
    return this.tailLines.filter((l) => /"level":(40|50|60)/.test(l) || l.startsWith('stderr:'));
  }

  admin(): { user: string; token: string } {
    return JSON.parse(readFileSync(path.join(this.dataDir, 'admin.token'), 'utf8')) as { user: string; token: string };
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /** Reads the Prometheus text of /metrics and returns the unlabelled samples by name. */
  async metrics(): Promise<Record<string, number>> {
    const res = await fetch(new URL('/metrics', this.httpUrl), { signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    const out: Record<string, number> = {};
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (m?.[1] && m[2] === undefined) out[m[1]] = Number(m[3]);
    }
    return out;
  }
}
