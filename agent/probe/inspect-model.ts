import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ErrorCode } from '../../shared/errors.js';
import type { ErrorInfo } from '../../shared/messages.js';
import { withoutNotifyEnv } from '../../shared/systemd-notify.js';
import { childExecArgv } from '../node-flags.js';

/** The child entry next to this module: .ts when running from source (tests), .js once compiled. */
const CHILD_MODULE = fileURLToPath(
  new URL(`./inspect-child.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);

/**
 * Pre-apply content check of a staged model (design section 4: external-data references outside
 * the model's directory are an attack). It runs after the bytes matched the signed digest and
 * before anything is installed, so a model that would make onnxruntime read unsigned files never
 * becomes `current`, even for a moment. The probe child repeats the check (with symlinks resolved)
 * before onnxruntime opens the installed file.
 *
 * Resolves null when the model may be installed, or the refusal (E_EXTERNAL_DATA). A model that
 * cannot be decoded resolves null too: onnxruntime will refuse it in the probe (E_MODEL_INVALID),
 * which rolls it back through the usual path; the inspection only decides what it can check.
 * A child that dies or overruns `timeoutMs` is a refusal (E_MODEL_INVALID), failing closed.
 */
export function inspectModel(modelFile: string, installDir: string, timeoutMs = 120_000): Promise<ErrorInfo | null> {
  return new Promise((resolve) => {
    const execArgv = childExecArgv();
    const child = fork(CHILD_MODULE, [modelFile, installDir], {
      execArgv,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      serialization: 'json',
      env: withoutNotifyEnv(process.env),
    });
    let verdict: ErrorInfo | null | undefined;
    const timer = setTimeout(() => {
      verdict ??= { code: 'E_MODEL_INVALID', message: `inspecting the model took longer than ${timeoutMs} ms` };
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('message', (m: { ok: boolean; code?: ErrorCode; message?: string }) => {
      if (m.ok) verdict ??= null;
      else if (m.code === 'E_EXTERNAL_DATA') verdict ??= { code: m.code, message: m.message ?? '' };
      else verdict ??= null;
    });
    const done = (how: string) => {
      clearTimeout(timer);
      resolve(
        verdict !== undefined
          ? verdict
          : { code: 'E_MODEL_INVALID', message: `the model inspection child ${how} without a verdict` },
      );
    };
    child.once('error', (err) => {
      child.kill('SIGKILL');
      done(`failed (${err.message})`);
    });
    child.once('exit', (code, signal) => done(signal ? `was killed by ${signal}` : `exited with ${code}`));
  });
}
