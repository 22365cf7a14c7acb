import { Command, CommanderError } from 'commander';
import { OtaError, toOtaError } from '../../shared/errors.js';
import { readPackageVersion } from '../../shared/version.js';
import { registerKeygen } from './commands/keygen.js';
import { registerReleaseSign } from './commands/release-sign.js';
import { registerReleaseVerify } from './commands/release-verify.js';
import type { CliIo } from './io.js';

/** Exit codes (design section 7): 0 success, 1 failure, 2 usage error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function createProgram(io: CliIo): Command {
  const program = new Command('otactl')
    .description('operate an ota-models fleet: release keys, signed releases, devices, rollouts, audit')
    .version(readPackageVersion(), '-V, --version')
    // Program options only before the subcommand, so `release sign --version 1.0` is the model version.
    .enablePositionalOptions()
    // Settings below are inherited by every subcommand created after them.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
    });
  registerKeygen(program, io);
  const release = program.command('release').description('sign, verify and publish model releases');
  registerReleaseSign(release, io);
  registerReleaseVerify(release, io);
  return program;
}

/** Runs otactl with `argv` (without node and script) and returns the exit code; never throws. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const program = createProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version "errors" are normal exits; commander already printed its message.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        return EXIT_OK;
      }
      return EXIT_USAGE;
    }
    const e = toOtaError(err);
    io.err(`${io.color.red('error')} ${e.code}: ${e.message}`);
    if (!(err instanceof OtaError)) io.err((err as Error)?.stack ?? String(err));
    return e.code === 'E_USAGE' ? EXIT_USAGE : EXIT_FAILURE;
  }
}
