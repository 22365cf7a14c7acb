import { type Command, CommanderError } from 'commander';
import { toOtaError } from '../shared/errors.js';

export interface Writer {
  write(s: string): unknown;
}

/**
 * Runs one `ota-coordinator <subcommand>`: parses `argv` with `cmd` (help and usage errors written
 * to `out`/`err`), then `run` with its options. Exit codes as the coordinator's: 0 done, 2 a usage
 * error (E_USAGE included), 1 any other failure, printed as `<name>: error CODE: message`.
 */
export async function runSubcommand<O>(
  name: string,
  cmd: Command,
  argv: string[],
  io: { out: Writer; err: Writer },
  run: (opts: O) => Promise<void>,
): Promise<number> {
  const parsed = parseCommand(cmd, argv, io);
  if (parsed !== undefined) return parsed;
  try {
    await run(cmd.opts<O & Record<string, unknown>>());
    return 0;
  } catch (e) {
    const error = toOtaError(e);
    io.err.write(`${name}: error ${error.code}: ${error.message}\n`);
    return error.code === 'E_USAGE' ? 2 : 1;
  }
}

/**
 * Parses `argv` with `cmd`, help and usage errors written to `io`. Undefined when the command
 * should run; else its exit code: 0 after --help or --version, 2 on a usage error.
 */
export function parseCommand(cmd: Command, argv: string[], io: { out: Writer; err: Writer }): number | undefined {
  cmd.exitOverride().configureOutput({ writeOut: (s) => io.out.write(s), writeErr: (s) => io.err.write(s) });
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  return undefined;
}
