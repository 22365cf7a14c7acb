import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Command } from 'commander';
import { OtaError } from '../../shared/errors.js';
import { createTopics } from '../../shared/topics.js';
import { runSubcommand, type Writer } from '../subcommand.js';
import { findDynsecPlugin, writeMosquittoConfig } from './mosquitto-config.js';

function port(value: string, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new OtaError('E_USAGE', `${name}: ${JSON.stringify(value)} is not a port number (1-65535)`);
  }
  return n;
}

/** uid and gid of a system user, when this process may hand files to it (it runs as root). */
function ownerOf(user: string): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0 || user === 'root') return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new OtaError(
      'E_USAGE',
      `--user ${user}: no such user on this machine (Debian's mosquitto package creates "mosquitto")`,
    );
  }
}

/**
 * `ota-coordinator mosquitto-config --dir DIR`: writes the Mosquitto 2 config, the dynamic security
 * plugin's starting file and the coordinator's broker password (docs/brokers.md), and prints how
 * to start both. Returns the exit code.
 */
export function mosquittoConfigCommand(
  argv: string[],
  out: Writer = process.stdout,
  err: Writer = process.stderr,
): Promise<number> {
  const cmd = new Command('ota-coordinator mosquitto-config')
    .description('write a Mosquitto 2 config whose dynamic security plugin the coordinator manages (for --broker)')
    .requiredOption(
      '--dir <dir>',
      "where mosquitto.conf, dynamic-security.json and coordinator.password go (also the broker's persistence)",
    )
    .option('--host <address>', 'address the broker binds', '127.0.0.1')
    .option('--port <port>', 'MQTT port', '1883')
    .option(
      '--ws-port <port>',
      'also a WebSocket listener, for browser clients other than the dashboard (the coordinator bridges its /mqtt)',
    )
    .option('--user <name>', 'user Mosquitto runs as when started as root; it must read these files', 'mosquitto')
    .option('--plugin <file>', "the dynamic security plugin (default: Debian's path for this machine)")
    .option('--broker-user <name>', "the coordinator's user in the broker", 'ota-coordinator')
    .option('--tls-cert <file>', 'PEM certificate for the MQTT listener (mqtts)')
    .option('--tls-key <file>', 'PEM key for --tls-cert')
    .option('--log-file <file>', 'Mosquitto log file (default: stderr)');
  type Options = {
    dir: string;
    host: string;
    port: string;
    wsPort?: string;
    user: string;
    plugin?: string;
    brokerUser: string;
    tlsCert?: string;
    tlsKey?: string;
    logFile?: string;
  };
  return runSubcommand<Options>('ota-coordinator mosquitto-config', cmd, argv, { out, err }, async (o) => {
    if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new OtaError('E_USAGE', '--tls-cert and --tls-key go together');
    const plugin = o.plugin ?? findDynsecPlugin();
    if (!plugin) {
      throw new OtaError(
        'E_USAGE',
        "no mosquitto_dynamic_security.so found: install Debian's mosquitto package (apt-get install mosquitto), or give its path with --plugin",
      );
    }
    const dir = path.resolve(o.dir);
    const topics = createTopics(process.env.OTA_TOPIC_PREFIX || undefined);
    const written = await writeMosquittoConfig(
      {
        dir,
        host: o.host,
        port: port(o.port, '--port'),
        wsPort: o.wsPort ? port(o.wsPort, '--ws-port') : null,
        runAs: o.user,
        plugin,
        username: o.brokerUser,
        password: randomBytes(24).toString('base64url'),
        topics,
        tls: o.tlsCert && o.tlsKey ? { certFile: path.resolve(o.tlsCert), keyFile: path.resolve(o.tlsKey) } : null,
        logFile: o.logFile ? path.resolve(o.logFile) : null,
      },
      ownerOf(o.user),
    );
    const scheme = o.tlsCert ? 'mqtts' : 'mqtt';
    out.write(
      [
        `wrote ${written.conf}`,
        `wrote ${written.dynsec} (the broker's clients: keep it, back it up with the coordinator's data)`,
        `wrote ${written.passwordFile} (the coordinator's broker password, mode 0600)`,
        '',
        'start the broker:',
        `  mosquitto -c ${written.conf}`,
        'then the coordinator:',
        `  ota-coordinator --broker ${scheme}://${o.host}:${o.port} --broker-user ${o.brokerUser} --broker-password-file ${written.passwordFile}`,
        '',
      ].join('\n'),
    );
  });
}
