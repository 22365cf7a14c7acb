#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { toOtaError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { writeMqttNumbersUncached } from '../shared/mqtt-packet-numbers.js';
import { stopOnSignal } from '../shared/stop-on-signal.js';
import { readPackageVersion } from '../shared/version.js';
import { DEFAULT_CONFIG_FILE, loadAgentConfig } from './config.js';
import { readDeviceFacts } from './facts.js';
import { startAgent } from './runtime/start-agent.js';

/**
 * ota-agent [--config FILE] [--state-dir DIR] [--check-config] [--version]
 * Exit codes: 0 clean stop, 1 failure (configuration or a fatal error), 2 usage error.
 */
const program = new Command('ota-agent')
  .description('device agent: receives signed model assignments over MQTT, installs, probes and reports them')
  .version(readPackageVersion(), '-V, --version')
  .option('--config <file>', 'agent config file', process.env.OTA_AGENT_CONFIG ?? DEFAULT_CONFIG_FILE)
  .option('--state-dir <dir>', 'state directory (default: config stateDir, $STATE_DIRECTORY, /var/lib/ota-agent)')
  .option('--check-config', 'validate the configuration, print a summary (never the token) and exit')
  .exitOverride();

async function main(): Promise<number> {
  try {
    program.parse(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  const opts = program.opts<{ config: string; stateDir?: string; checkConfig?: boolean }>();
  const config = loadAgentConfig({
    file: opts.config,
    env: process.env,
    ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
  });
  if (opts.checkConfig) {
    const facts = await readDeviceFacts(config.stateDir, 3_000).catch(() => null);
    process.stdout.write(
      `${JSON.stringify(
        {
          ok: true,
          config: config.source,
          deviceId: config.deviceId,
          broker: config.broker.url,
          artifactsUrl: config.artifactsUrl,
          stateDir: config.stateDir,
          trustedKeys: config.trustedKeys.map((k) => k.keyId),
          threshold: config.threshold,
          coordinatorKey: config.coordinatorKey.keyId,
          facts,
        },
        null,
        2,
      )}\n`,
    );
    return 0;
  }
  const logger = createLogger(config.logLevel);
  writeMqttNumbersUncached();
  const agent = await startAgent(config, { logger, env: process.env });
  await stopOnSignal(logger, () => agent.stop());
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = toOtaError(err);
    process.stderr.write(`ota-agent: error ${e.code}: ${e.message}\n`);
    if (e.code === 'E_INTERNAL') process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    process.exitCode = 1;
  },
);
