import { Command, CommanderError } from 'commander';
import { OtaError, toOtaError } from '../../shared/errors.js';
import { readPackageVersion } from '../../shared/version.js';
import { registerAudit } from './commands/audit.js';
import { registerChannel } from './commands/channel.js';
import { registerCompletion } from './commands/completion.js';
import { registerDevice } from './commands/device.js';
import { registerExperiment } from './commands/experiment.js';
import { registerGroup } from './commands/group.js';
import { registerKey } from './commands/key.js';
import { registerKeygen } from './commands/keygen.js';
import { registerMetrics } from './commands/metrics.js';
import { registerOperator } from './commands/operator.js';
import { registerReleaseLs, registerReleasePublish } from './commands/release.js';
import { registerReleaseSign } from './commands/release-sign.js';
import { registerReleaseVerify } from './commands/release-verify.js';
import { registerRollout } from './commands/rollout.js';
import { registerTrust } from './commands/trust.js';
import { addConnectionOptions } from './connection.js';
import { CliExit, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit.js';
import type { CliIo } from './io.js';
import { errorDocument, fixFor, plainMessage, wantsJson } from './report-error.js';

export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit.js';

const CONNECTION_HELP = `
Connection (for every command that talks to the coordinator), each from the first that gives it:
  the command's flag, the same flag before the command, the environment (OTA_URL, OTA_HTTP_URL,
  OTA_USER, OTA_TOKEN, OTA_CA), the --token-file admin.token, then the local coordinator's
  admin token file ($OTA_DATA/admin.token, else ./.ota-data/admin.token).

Exit codes: 0 success, 1 failure, 2 usage error; \`rollout status --watch\`: 0 completed,
  1 halted or aborted, 130 interrupted.`;

/**
 * `json`: the command line has `--json`; commander's own error text (and the help it shows after
 * an error) then goes to `errText` instead of stderr, and runCli prints the error as JSON.
 */
export function createProgram(io: CliIo, json: { errText: string[] } | null = null): Command {
  const program = new Command('otactl')
    .description('operate an ota-models fleet: release keys, signed releases, devices, rollouts, audit')
    .version(readPackageVersion(), '-V, --version')
    // Program options only before the subcommand, so `release sign --version 1.0` is the model version.
    .enablePositionalOptions()
    // Settings below are inherited by every subcommand created after them.
    .exitOverride()
    .showHelpAfterError(true)
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => (json ? json.errText.push(s) : io.err(s.replace(/\n$/, ''))),
    })
    .addHelpText('after', CONNECTION_HELP);
  addConnectionOptions(program);
  registerKeygen(program, io);
  registerKey(program, io);
  registerTrust(program, io);
  registerDevice(program, io);
  registerGroup(program, io);
  const release = program.command('release').description('sign, verify, publish and list model releases');
  registerReleaseSign(release, io);
  registerReleaseVerify(release, io);
  registerReleasePublish(release, io);
  registerReleaseLs(release, io);
  registerChannel(program, io);
  registerRollout(program, io);
  registerMetrics(program, io);
  registerExperiment(program, io);
  registerAudit(program, io);
  registerOperator(program, io);
  registerCompletion(program, io);
  return program;
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Codes whose messages already say exactly what to pass; the generic fix would only repeat it. */
const SELF_EXPLAINED = new Set(['E_USAGE', 'E_CONFIG']);

/** Runs otactl with `argv` (without node and script) and returns the exit code; never throws. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const json = wantsJson(argv) ? { errText: [] as string[] } : null;
  const program = createProgram(io, json);
  let active: Command | null = null;
  program.hook('preAction', (_program, actionCommand) => {
    active = actionCommand;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CliExit) return err.exitCode;
    if (err instanceof CommanderError) {
      // help and version "errors" are normal exits; commander already printed its message.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        // `otactl device` without a subcommand prints that group's help on stderr: a usage error.
        // (With --json a group has no such option: that is reported as the unknown option below.)
        return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
      }
      if (json) io.err(errorDocument({ code: 'E_USAGE', message: plainMessage(err.message) }));
      return EXIT_USAGE;
    }
    const e = toOtaError(err);
    const known = err instanceof OtaError;
    const fix = known && !SELF_EXPLAINED.has(e.code) ? fixFor(e.code) : undefined;
    const usage = e.code === 'E_USAGE';
    const cmd = active as Command | null;
    if (json) {
      io.err(errorDocument(e, { fix, stack: known ? undefined : (err as Error)?.stack }));
      return usage ? EXIT_USAGE : EXIT_FAILURE;
    }
    io.err(`${io.color.red('error')} ${e.code}: ${e.message}`);
    if (fix) io.err(io.color.dim(`  what to do: ${fix}`));
    else if (!known) io.err((err as Error)?.stack ?? String(err));
    if (!usage) return EXIT_FAILURE;
    if (cmd) io.err(`(see \`${commandPath(cmd)} --help\`)`);
    return EXIT_USAGE;
  }
}
