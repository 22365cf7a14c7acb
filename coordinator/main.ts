#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { toOtaError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { writeMqttNumbersUncached } from '../shared/mqtt-packet-numbers.js';
import { stopOnSignal } from '../shared/stop-on-signal.js';
import { createNotifier } from '../shared/systemd-notify.js';
import { readPackageVersion } from '../shared/version.js';
import { type CoordinatorFlags, resolveCoordinatorConfig } from './config.js';
import { mosquittoConfigCommand } from './external-broker/mosquitto-config-command.js';
import { syncArtifactsCommand } from './http/sync-artifacts-command.js';
import { startCoordinator } from './service.js';

/**
 * ota-coordinator [--data DIR] [--host H] [--mqtt-port N] [--http-port N] [--tls-cert F --tls-key F]
 * With no flags: data in ./.ota-data, MQTT on 127.0.0.1:1883, HTTP (and WebSocket /mqtt) on
 * 127.0.0.1:8080. Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 failure, 2 usage error.
 */
const program = new Command('ota-coordinator')
  .description('the ota-models coordinator: MQTT broker, rollout engine, artifact server and audit log')
  .version(readPackageVersion(), '-V, --version')
  .option('--data <dir>', 'data directory (env OTA_DATA; default ./.ota-data, $STATE_DIRECTORY under systemd)')
  .option('--host <address>', 'address to bind (env OTA_HOST; default 127.0.0.1)')
  .option('--mqtt-port <port>', 'MQTT port (env OTA_MQTT_PORT; default 1883; 0 picks a free one)')
  .option('--http-port <port>', 'HTTP port, also WebSocket MQTT at /mqtt (env OTA_HTTP_PORT; default 8080)')
  .option('--tls-cert <file>', 'PEM certificate: MQTT over TLS and HTTPS (env OTA_TLS_CERT)')
  .option('--tls-key <file>', 'PEM private key for --tls-cert (env OTA_TLS_KEY)')
  .option('--public-mqtt-url <url>', 'broker URL written into agent configs (default: the bound address)')
  .option('--public-http-url <url>', 'artifact URL written into agent configs (default: the bound address)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace (env OTA_LOG_LEVEL; default info)')
  .option(
    '--broker <url>',
    'an external MQTT broker, mqtt(s)://host:port, instead of the embedded one (env OTA_BROKER_URL)',
  )
  .option(
    '--broker-user <name>',
    "the coordinator's user in that broker (env OTA_BROKER_USER; default ota-coordinator)",
  )
  .option('--broker-password-file <file>', 'file holding that password (env OTA_BROKER_PASSWORD_FILE)')
  .option('--broker-ca <file>', 'PEM CA certificates for an mqtts:// broker with a private CA (env OTA_BROKER_CA)')
  .option(
    '--broker-identity <who>',
    "mosquitto: the coordinator keeps the broker's clients (Mosquitto 2 dynamic security); none: you do (env OTA_BROKER_IDENTITY; default mosquitto)",
  )
  .option('--artifacts-url <url>', 'HTTP origin or CDN devices download artifacts from (env OTA_ARTIFACTS_URL)')
  .addHelpText(
    'after',
    '\nSubcommands (each with --help):\n  ota-coordinator mosquitto-config --dir DIR   write a Mosquitto 2 config for --broker\n  ota-coordinator sync-artifacts --to DIR      copy new artifacts to the directory an origin serves (--artifacts-url)',
  )
  .exitOverride();

async function main(): Promise<number> {
  // The subcommands write files for others (a web server, Mosquitto) with their own modes.
  if (process.argv[2] === 'mosquitto-config') return mosquittoConfigCommand(process.argv.slice(3));
  if (process.argv[2] === 'sync-artifacts') return syncArtifactsCommand(process.argv.slice(3));
  // Everything in the data directory is the coordinator's alone (database with token hashes, keys).
  process.umask(0o077);
  try {
    program.parse(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  const config = resolveCoordinatorConfig(program.opts<CoordinatorFlags>(), process.env);
  const logger = createLogger(config.logLevel, process.stdout, 'ota-coordinator');
  const notifier = createNotifier(process.env, {
    onError: (err) => logger.warn({ err: err.message }, 'systemd notification failed'),
  });
  writeMqttNumbersUncached();
  const running = await startCoordinator(config, { logger });
  // startCoordinator resolves once a client can use the coordinator (the admin token is in place,
  // both servers listen, retained state is republished: the `ready` log line): only then READY=1.
  const stopped = stopOnSignal(logger, async () => {
    await notifier.stopping();
    await running.stop();
  });
  await notifier.ready(`mqtt ${running.mqttUrl}, http ${running.httpUrl}`);
  await stopped;
  logger.info('stopped');
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = toOtaError(err);
    const hint =
      (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
        ? ' (another process uses that port: stop it, or pick another with --mqtt-port / --http-port)'
        : '';
    process.stderr.write(`ota-coordinator: error ${e.code}: ${e.message}${hint}\n`);
    process.exitCode = 1;
  },
);
