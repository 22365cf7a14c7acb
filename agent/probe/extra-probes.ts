import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { ProbeVerdict } from '../../shared/probe-check.js';
import type { ProbeSpec } from '../../shared/probe-spec.js';

/**
 * The extra checks of a probe spec (docs/probe-spec.md): after the model passed its inference
 * probe, `http`, `file` and `exec` checks confirm that the application around it works too. They
 * run in the agent process, not in the probe child: they need no onnxruntime and only wait on I/O.
 */

export type ExtraProbe = ProbeSpec['extra'][number];

export interface ExtraProbeContext {
  /** Absolute paths an `exec` probe may run, compared exactly (the agent's execProbeAllowlist). */
  execAllowlist: readonly string[];
  /**
   * Aborted when the whole probe runs out of time or the agent shuts down: the running check is
   * stopped (its request closed, its process group killed) and the call rejects with the reason.
   */
  signal?: AbortSignal;
}

/** An exec probe is run with this environment only: the agent's own (tokens, proxies) is not its business. */
const EXEC_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TAIL_BYTES = 1024;

/** How an extra probe is named in messages: its kind and target. */
export function describeExtraProbe(probe: ExtraProbe): string {
  switch (probe.kind) {
    case 'http':
      return `http ${probe.url}`;
    case 'file':
      return `file ${probe.path}`;
    case 'exec':
      return `exec ${[probe.path, ...probe.argv].join(' ')}`;
  }
}

/**
 * The E_NOT_ALLOWED verdict for the first exec probe whose path is not on the allowlist, if any.
 * Checked before anything runs: such a probe can never pass on this device, so there is no point
 * in loading the model first. The signed manifest chooses the program; the device owner decides
 * whether it may run, which is why a signature alone is not enough.
 */
export function disallowedExec(
  extra: readonly ExtraProbe[],
  execAllowlist: readonly string[],
): ProbeVerdict | undefined {
  for (const probe of extra) {
    if (probe.kind === 'exec' && !execAllowlist.includes(probe.path)) {
      return {
        ok: false,
        code: 'E_NOT_ALLOWED',
        message: `extra probe exec ${probe.path} is not on this device's exec-probe allowlist (execProbeAllowlist)`,
      };
    }
  }
  return undefined;
}

/** Runs the extra probes one after the other; the first failure is the verdict. */
export async function runExtraProbes(extra: readonly ExtraProbe[], ctx: ExtraProbeContext): Promise<ProbeVerdict> {
  for (const probe of extra) {
    const verdict = await runExtraProbe(probe, ctx);
    if (!verdict.ok) return verdict;
  }
  return { ok: true };
}

/** Runs one extra probe: `{ ok: true }`, E_PROBE_EXTRA naming the probe and why, or E_NOT_ALLOWED. */
export async function runExtraProbe(probe: ExtraProbe, ctx: ExtraProbeContext): Promise<ProbeVerdict> {
  ctx.signal?.throwIfAborted();
  let failure: string | undefined;
  switch (probe.kind) {
    case 'http':
      failure = await httpProbe(probe.url, probe.timeoutMs, ctx.signal);
      break;
    case 'file':
      failure = await fileProbe(probe.path);
      break;
    case 'exec': {
      const denied = disallowedExec([probe], ctx.execAllowlist);
      if (denied) return denied;
      failure = await execProbe(probe.path, probe.argv, probe.timeoutMs, ctx.signal);
      break;
    }
  }
  ctx.signal?.throwIfAborted();
  return failure === undefined
    ? { ok: true }
    : { ok: false, code: 'E_PROBE_EXTRA', message: `extra probe ${describeExtraProbe(probe)} ${failure}` };
}

/** GET `url`; undefined on a 2xx status within `timeoutMs` (headers only), else why not. */
function httpProbe(url: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    let done = false;
    const finish = (outcome: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      outcome();
    };
    let req: http.ClientRequest;
    try {
      // A fresh connection (agent: false), so no pooled socket outlives the check. Redirects are
      // not followed: a health endpoint that redirects is not answering 2xx.
      req = get(url, { agent: false, headers: { 'user-agent': 'ota-agent-probe' } }, (res) => {
        const status = res.statusCode ?? 0;
        res.destroy(); // only the status matters; do not wait for the body
        finish(() => resolve(status >= 200 && status < 300 ? undefined : `answered HTTP ${status}`));
      });
    } catch (err) {
      resolve(`cannot be requested: ${(err as Error).message}`); // a malformed URL, e.g. http://
      return;
    }
    req.on('error', (err: NodeJS.ErrnoException) => finish(() => resolve(`failed: ${err.code ?? err.message}`)));
    const timer = setTimeout(() => finish(() => resolve(`did not answer within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => finish(() => reject(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** undefined when `file` is a regular file with at least one byte, else why not. */
async function fileProbe(file: string): Promise<string | undefined> {
  try {
    const st = await stat(file);
    if (!st.isFile()) return 'is not a regular file';
    return st.size > 0 ? undefined : 'is empty';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : `cannot be read: ${code ?? (err as Error).message}`;
  }
}

/**
 * Runs `file` with a fixed argv and no shell; undefined when it exits 0 within `timeoutMs`, else
 * why not. It gets its own process group, so a timeout or an abort kills whatever it started too.
 * The verdict comes from the program's exit, not from its pipes closing: a helper it left in the
 * background must not turn a pass into a timeout.
 */
function execProbe(
  file: string,
  argv: readonly string[],
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      shell: false,
      detached: true,
      cwd: '/',
      env: EXEC_ENV,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-TAIL_BYTES);
    });
    let done = false;
    const finish = (outcome: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      child.stderr?.destroy();
      outcome();
    };
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL'); // the group is gone already, or the program never started
      }
    };
    const tail = () => (stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : '');
    child.on('error', (err: NodeJS.ErrnoException) =>
      finish(() => resolve(`could not be started: ${err.code ?? err.message}`)),
    );
    child.on('exit', (code, sig) => {
      // Give the last stderr bytes a moment to arrive for the message, without waiting on pipes
      // a background helper may hold open.
      const settle = () =>
        finish(() =>
          resolve(
            code === 0 ? undefined : `${code === null ? `was killed by ${sig}` : `exited with code ${code}`}${tail()}`,
          ),
        );
      if (code === 0) settle();
      else {
        child.stderr?.once('close', settle);
        setTimeout(settle, 100).unref();
      }
    });
    const timer = setTimeout(() => {
      killGroup();
      finish(() => resolve(`did not finish within ${timeoutMs} ms (killed)`));
    }, timeoutMs);
    const onAbort = () => {
      killGroup();
      finish(() => reject(signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
