import type { Command } from 'commander';

/** Exit codes (design section 7): 0 success, 1 failure, 2 usage error; 130 after Ctrl-C. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/**
 * A normal end with a chosen exit code and nothing more to print (the command printed what it
 * had to say), e.g. `rollout status --watch` ending on a halted rollout. Not an error, not a bug.
 */
export class CliExit extends Error {
  override readonly name = 'CliExit';
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** A usage error found by a command itself: printed with the command's help, exit 2. */
export function usageError(cmd: Command, message: string): never {
  cmd.error(`error E_USAGE: ${message}`, { exitCode: EXIT_USAGE, code: 'otactl.usage' });
}
