import { type ChildProcess, fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type ErrorCode, OtaError } from '../../shared/errors.js';
import type { Manifest } from '../../shared/manifest.js';
import { type ProbeSpec, ProbeSpecSchema } from '../../shared/probe-spec.js';
import { withoutNotifyEnv } from '../../shared/systemd-notify.js';
import { describeZodError } from '../../shared/zod-errors.js';
import { childExecArgv } from '../node-flags.js';
import { disallowedExec, runExtraProbes } from './extra-probes.js';
import type { ChildMessage, LoadMessage, ParentMessage } from './probe-child.js';

/**
 * The inference health probe, parent side (design section 5, docs/probe-spec.md). The model runs
 * in a forked child process (probe-child.ts): onnxruntime's run() blocks its thread, and a model
 * that crashes or hangs onnxruntime must not take the agent down. One hard deadline covers
 * everything (loading, initial delay, every attempt and the extra probes); when it passes the
 * child is SIGKILLed. No child outlives a runProbe() call, whatever its outcome.
 */

export interface ProbeDefaults {
  timeoutMs: number;
  attempts: number;
  latencyBudgetMs?: number;
  initialDelayMs: number;
}

export interface ProbeRequest {
  /** Absolute path, e.g. <state>/models/<name>/<version>/model.onnx. */
  modelFile: string;
  /**
   * `probe` null: inputs are built from the model's declared shapes and `defaults` give the
   * timing. A probe that was not parsed yet (a manifest read with JSON.parse) is parsed here, so
   * its defaults apply. `inputs` and `outputs` are not used: the child reads the model's own
   * declaration from onnxruntime, which is what the outputs are judged against.
   */
  manifest: Pick<Manifest, 'inputs' | 'outputs' | 'probe'>;
  /** From the agent config; used when manifest.probe is null. */
  defaults: ProbeDefaults;
  /** Absolute paths an `exec` extra probe may run (exact match). */
  execAllowlist: readonly string[];
  /**
   * Agent shutdown: the child is killed and runProbe rejects with OtaError E_PROBE_FAILED
   * ("probe aborted ..."). It rejects rather than resolving ok:false because an interrupted probe
   * says nothing about the model: the caller must not roll back over it (after a restart, the
   * agent probes again).
   */
  signal?: AbortSignal;
  /** Called with the probe child's pid once it is started (tests check that it is gone afterwards). */
  onChild?(pid: number): void;
  /**
   * Starts the probe's one deadline: calls `expire` once `ms` have passed and returns what cancels
   * it. Defaults to a timer; a test passes its own to make the deadline pass at a chosen stage
   * (while an extra probe hangs) instead of guessing how long loading takes on a busy machine.
   */
  startDeadline?(ms: number, expire: () => void): () => void;
}

/**
 * `attempts` counts the attempts started: 0 when the probe failed before its first attempt (the
 * model cannot be loaded, has external data outside its directory, the probe does not fit it, an
 * exec probe is not allowed, or the timeout passed while loading).
 */
export type ProbeResult =
  | { ok: true; attempts: number; latencyMs: number }
  | { ok: false; attempts: number; code: ErrorCode; message: string };

/** The child entry next to this module: .ts when running from source (tests), .js once compiled. */
const CHILD_MODULE = fileURLToPath(
  new URL(`./probe-child.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);
/** The end of the child's stderr that is kept for the message when it dies without a verdict. */
const STDERR_TAIL_BYTES = 4096;
/**
 * After a verdict, how long the child may take to exit by itself before it is SIGKILLed. Longer
 * for a child collecting coverage (the test suite: NODE_V8_COVERAGE, or tap's process-info hook,
 * which the child inherits through NODE_OPTIONS): it writes its coverage as it exits (source maps
 * read, files written), which a loaded machine can stretch past a second, and a SIGKILL then loses
 * it. Suspected, not reproduced (4 busy loops beside probe.test kept it), in the CI run of
 * 2026-12-07 that found probe-child.ts at 67% of its lines (84% when its tests run alone).
 */
const EXIT_GRACE_MS = process.env.NODE_V8_COVERAGE || process.env._TAPJS_PROCESSINFO_COVERAGE_ ? 10_000 : 1000;

function timerDeadline(ms: number, expire: () => void): () => void {
  const timer = setTimeout(expire, ms);
  return () => clearTimeout(timer);
}

export async function runProbe(req: ProbeRequest): Promise<ProbeResult> {
  if (req.signal?.aborted) throw abortedError(req.signal);
  const settings = probeSettings(req);
  if ('code' in settings) return { ok: false, attempts: 0, code: settings.code, message: settings.message };
  // Refused before loading anything: this probe can never pass on this device.
  const denied = disallowedExec(settings.extra, req.execAllowlist);
  if (denied && !denied.ok) return { ok: false, attempts: 0, code: denied.code, message: denied.message };
  return new ProbeRun(req, settings).run();
}

type Settings = Pick<
  ProbeSpec,
  'inputs' | 'golden' | 'tolerance' | 'latencyBudgetMs' | 'attempts' | 'timeoutMs' | 'initialDelayMs' | 'extra'
>;

/** The spec to run: the manifest's probe, or shape-derived inputs with the agent's defaults. */
function probeSettings(req: ProbeRequest): Settings | { code: ErrorCode; message: string } {
  if (req.manifest.probe === null) {
    const { timeoutMs, attempts, initialDelayMs, latencyBudgetMs } = req.defaults;
    return { tolerance: { abs: 1e-5, rel: 1e-4 }, timeoutMs, attempts, initialDelayMs, latencyBudgetMs, extra: [] };
  }
  const parsed = ProbeSpecSchema.safeParse(req.manifest.probe);
  if (!parsed.success) {
    return { code: 'E_PROBE_SPEC', message: `invalid probe spec: ${describeZodError(parsed.error)}` };
  }
  return parsed.data;
}

function abortedError(signal: AbortSignal): OtaError {
  const why = signal.reason instanceof Error ? `: ${signal.reason.message}` : '';
  return new OtaError('E_PROBE_FAILED', `probe aborted before it finished${why}`, { cause: signal.reason });
}

/** Why the run was stopped from outside the child: its deadline, or the caller's signal. */
class Deadline extends Error {}
class Aborted extends Error {}
/** The child exited (or could not be started) before it sent the message the parent waited for. */
class ChildGone extends Error {}

class ProbeRun {
  private readonly stop = new AbortController();
  private child: ChildProcess | undefined;
  private stderrTail = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
  private exited: Promise<void> | undefined;
  private closed: Promise<void> | undefined;
  private readonly inbox: ChildMessage[] = [];
  private wake: (() => void) | undefined;
  private attempts = 0;
  private stage = 'starting the probe child';

  constructor(
    private readonly req: ProbeRequest,
    private readonly settings: Settings,
  ) {}

  async run(): Promise<ProbeResult> {
    const { timeoutMs } = this.settings;
    const cancelDeadline = (this.req.startDeadline ?? timerDeadline)(timeoutMs, () => this.stop.abort(new Deadline()));
    const onAbort = () => this.stop.abort(new Aborted());
    this.req.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.drive();
    } catch (err) {
      const reason: unknown = this.stop.signal.reason;
      if (reason instanceof Deadline) {
        return {
          ok: false,
          attempts: this.attempts,
          code: 'E_PROBE_TIMEOUT',
          message: `the probe did not finish within ${timeoutMs} ms (it was ${this.stage}); the probe child was killed`,
        };
      }
      if (reason instanceof Aborted && this.req.signal) throw abortedError(this.req.signal);
      if (err instanceof ChildGone) return this.crashResult();
      throw err;
    } finally {
      cancelDeadline();
      this.req.signal?.removeEventListener('abort', onAbort);
      await this.endChild(this.stop.signal.aborted);
      this.stop.abort(); // nothing may keep waiting on this run
    }
  }

  /** Load, wait out the initial delay, then attempts: inference in the child, extras here. */
  private async drive(): Promise<ProbeResult> {
    const started = performance.now();
    this.startChild();
    const s = this.settings;
    const load: LoadMessage = {
      type: 'load',
      modelFile: this.req.modelFile,
      inputs: s.inputs ?? null,
      golden: s.golden ?? null,
      tolerance: s.tolerance,
      latencyBudgetMs: s.latencyBudgetMs ?? null,
    };
    this.stage = 'loading the model';
    this.send(load);
    const loaded = await this.next();
    if (loaded.type === 'refused') return { ok: false, attempts: 0, code: loaded.code, message: loaded.message };
    // The delay counts from the start of the probe, so loading the model overlaps with it.
    const delay = started + s.initialDelayMs - performance.now();
    if (delay > 0) {
      this.stage = 'waiting for the initial delay';
      await sleep(delay, undefined, { signal: this.stop.signal });
    }
    let last: ProbeResult | undefined;
    for (let attempt = 1; attempt <= s.attempts; attempt++) {
      this.attempts = attempt;
      this.stage = `running inference, attempt ${attempt}`;
      this.send({ type: 'run', attempt });
      const result = await this.next();
      if (result.type !== 'result' || result.attempt !== attempt) {
        throw new OtaError('E_INTERNAL', `unexpected message from the probe child: ${result.type}`);
      }
      if (!result.ok) {
        last = { ok: false, attempts: attempt, code: result.code, message: result.message };
        continue;
      }
      if (s.extra.length > 0) {
        this.stage = `running the extra probes, attempt ${attempt}`;
        const extra = await runExtraProbes(s.extra, {
          execAllowlist: this.req.execAllowlist,
          signal: this.stop.signal,
        });
        if (!extra.ok) {
          last = { ok: false, attempts: attempt, code: extra.code, message: extra.message };
          continue;
        }
      }
      return { ok: true, attempts: attempt, latencyMs: result.latencyMs };
    }
    // attempts >= 1 (schema and config), so the loop ran and set `last`.
    return last ?? { ok: false, attempts: 0, code: 'E_INTERNAL', message: 'the probe made no attempt' };
  }

  private startChild(): void {
    // Debugger flags would make the child fight the agent for the inspector port.
    const execArgv = childExecArgv();
    const child = fork(CHILD_MODULE, [], {
      execArgv,
      // stdout is not read: nothing the child prints there matters. stderr is kept (its end) to
      // explain a crash; 'ipc' carries the JSON messages.
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
      // The child must not be able to speak for the agent to systemd (NotifyAccess=all).
      env: withoutNotifyEnv(process.env),
    });
    this.child = child;
    this.exited = new Promise((resolve) => {
      const gone = (code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
        this.exit ??= { code, signal, error };
        this.wake?.();
        resolve();
      };
      child.once('exit', (code, signal) => gone(code, signal));
      // 'error' without 'exit': the process could not be started (EAGAIN, ENOMEM).
      // (A failed kill or send also emits 'error', on a child that is still there: not an end.)
      child.on('error', (error) => {
        if (child.pid === undefined) gone(null, null, error);
      });
    });
    this.closed = new Promise((resolve) => child.once('close', () => resolve()));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL_BYTES);
    });
    child.on('message', (msg: ChildMessage) => {
      this.inbox.push(msg);
      this.wake?.();
    });
    if (child.pid !== undefined) this.req.onChild?.(child.pid);
  }

  private send(msg: ParentMessage): void {
    try {
      this.child?.send(msg, (err) => {
        void err; // the child died: its 'exit' tells the story
      });
    } catch {
      // The channel is already closed: the child exited, which next() reports.
    }
  }

  /** The next message from the child; rejects when the child is gone or the run is stopped. */
  private async next(): Promise<ChildMessage> {
    for (;;) {
      this.stop.signal.throwIfAborted();
      const msg = this.inbox.shift();
      if (msg) return msg;
      if (this.exit) throw new ChildGone();
      await new Promise<void>((resolve) => {
        const done = () => {
          this.wake = undefined;
          this.stop.signal.removeEventListener('abort', done);
          resolve();
        };
        this.wake = done;
        this.stop.signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** E_PROBE_FAILED for a child that died without a verdict: how it ended and what it said last. */
  private async crashResult(): Promise<ProbeResult> {
    // The last stderr bytes may still be in the pipe; 'close' means they were all read.
    await Promise.race([this.closed, sleep(500)]);
    const exit = this.exit;
    const how = exit?.error
      ? `could not be started (${exit.error.message})`
      : exit?.signal
        ? `was killed by ${exit.signal}`
        : `exited with code ${exit?.code}`;
    const stderr = this.stderrTail.trim();
    return {
      ok: false,
      attempts: this.attempts,
      code: 'E_PROBE_FAILED',
      message: `the probe child ${how} while ${this.stage}${stderr ? `: ${stderr}` : ''}`,
    };
  }

  /**
   * Ends the child and waits until it is reaped, so no child outlives the call. After a verdict
   * it may exit by itself (closing the IPC channel makes it exit); on a deadline or an abort it
   * is SIGKILLed at once, as a blocked run() would not let it react to anything else.
   */
  private async endChild(now: boolean): Promise<void> {
    const child = this.child;
    if (!child || this.exit) return;
    if (!now && child.connected) {
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
      return;
    }
    child.kill('SIGKILL');
    await this.exited;
  }
}
