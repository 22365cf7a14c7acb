import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import type { Topics } from '../../shared/topics.js';
import { coordinatorAcls, roleNames } from './dynsec-rules.js';

/**
 * What `ota-coordinator mosquitto-config` writes (docs/brokers.md): a Mosquitto 2 config that
 * loads the dynamic security plugin, the plugin's starting file with one client (the
 * coordinator's, role ota-coordinator) and default access denying every publish and subscribe,
 * and that client's password in a file of its own. Everything else (devices, operators) the
 * coordinator adds through the plugin as they are enrolled.
 */

export interface MosquittoConfigInput {
  /** Where the three files go; also the broker's persistence directory. */
  dir: string;
  host: string;
  port: number;
  /** A WebSocket listener for browser clients other than the dashboard (which the coordinator bridges). */
  wsPort: number | null;
  /** The user Mosquitto drops to when started as root (it must read these files and write the plugin's). */
  runAs: string;
  plugin: string;
  username: string;
  password: string;
  topics: Topics;
  /** TLS on the MQTT listener (PEM files), when given. */
  tls: { certFile: string; keyFile: string } | null;
  /** Where Mosquitto logs: a file, or null for stderr. */
  logFile: string | null;
}

/** Mosquitto 2.0's dynamic security password hash: PBKDF2-HMAC-SHA512, 12-byte salt, 101 rounds (src/password_mosq.h). */
export function dynsecPasswordHash(
  password: string,
  salt: Uint8Array = randomBytes(12),
  iterations = 101,
): { password: string; salt: string; iterations: number } {
  const hash = pbkdf2Sync(password, salt, iterations, 64, 'sha512');
  return { password: hash.toString('base64'), salt: Buffer.from(salt).toString('base64'), iterations };
}

/** Debian's plugin path for this machine's architecture, or the first that exists. */
export function findDynsecPlugin(candidates = DYNSEC_PLUGIN_PATHS): string | null {
  return candidates.find((p) => existsSync(p)) ?? null;
}

export const DYNSEC_PLUGIN_PATHS = [
  '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so',
  '/usr/lib/mosquitto_dynamic_security.so',
  '/usr/local/lib/mosquitto_dynamic_security.so',
];

/** Largest packet the broker takes: the coordinator's own replies (a large `device.ls`) exceed 256 KiB. */
export const MOSQUITTO_MAX_PACKET_BYTES = 64 * 1024 * 1024;
/** Messages kept for the coordinator's session while it is down (reports, metrics, commands). */
export const MOSQUITTO_MAX_QUEUED = 1_000_000;
/**
 * Messages the broker sends a client before it has their PUBACKs. The coordinator's one
 * connection takes every device's reports: at Mosquitto's default of 20 its ingest is at most 20
 * per round trip (20,000/s at 1 ms, 2,000/s at 10 ms between hosts). Devices receive one desired
 * state at a time, so for them it changes nothing.
 */
export const MOSQUITTO_MAX_INFLIGHT = 1_000;

export function mosquittoConf(input: MosquittoConfigInput): string {
  const dynsecFile = path.join(input.dir, 'dynamic-security.json');
  const lines = [
    '# Written by `ota-coordinator mosquitto-config` (docs/brokers.md). Start with: mosquitto -c <this file>',
    '# Devices and operators are added by the coordinator through the dynamic security plugin.',
    `user ${input.runAs}`,
    'per_listener_settings false',
    'allow_anonymous false',
    `plugin ${input.plugin}`,
    `plugin_opt_config_file ${dynsecFile}`,
    '# Retained messages (desired states, reports) and the coordinator session survive a restart.',
    'persistence true',
    `persistence_location ${input.dir}${path.sep}`,
    'autosave_interval 60',
    '# What the coordinator misses while it restarts waits in its session (QoS 1).',
    `max_queued_messages ${MOSQUITTO_MAX_QUEUED}`,
    'max_queued_bytes 0',
    "# The coordinator's one connection takes every report: more than the default 20 unacknowledged at once.",
    `max_inflight_messages ${MOSQUITTO_MAX_INFLIGHT}`,
    "# A persistent session nobody resumed for a week is dropped (an operator's, or a stale coordinator id).",
    'persistent_client_expiration 7d',
    `max_packet_size ${MOSQUITTO_MAX_PACKET_BYTES}`,
    "# Small packets out at once: a command's reply, the plugin's answers (else ~40 ms each, Nagle + delayed ACK).",
    'set_tcp_nodelay true',
    input.logFile ? `log_dest file ${input.logFile}` : 'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'connection_messages true',
    '',
    `listener ${input.port} ${input.host}`,
    ...(input.tls ? [`certfile ${input.tls.certFile}`, `keyfile ${input.tls.keyFile}`] : []),
  ];
  if (input.wsPort !== null) lines.push('', `listener ${input.wsPort} ${input.host}`, 'protocol websockets');
  return `${lines.join('\n')}\n`;
}

export function dynsecStartFile(input: MosquittoConfigInput, salt?: Uint8Array): object {
  return {
    defaultACLAccess: { publishClientSend: false, publishClientReceive: true, subscribe: false, unsubscribe: true },
    clients: [
      {
        username: input.username,
        textname: 'ota-coordinator: devices, operators and their roles are its to manage',
        ...dynsecPasswordHash(input.password, salt),
        roles: [{ rolename: roleNames.coordinator }],
      },
    ],
    groups: [],
    roles: [{ rolename: roleNames.coordinator, acls: coordinatorAcls(input.topics) }],
  };
}

async function writeNew(file: string, body: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(tmp, body, { mode, flag: 'wx' });
  await fs.rename(tmp, file);
}

/**
 * Writes mosquitto.conf, dynamic-security.json and coordinator.password into `dir`. Refuses when
 * dynamic-security.json exists: it holds every enrolled device's client, and writing a new one
 * would lock the whole fleet out. Returns the paths.
 */
export async function writeMosquittoConfig(
  input: MosquittoConfigInput,
  chown?: { uid: number; gid: number },
): Promise<{ conf: string; dynsec: string; passwordFile: string }> {
  const conf = path.join(input.dir, 'mosquitto.conf');
  const dynsec = path.join(input.dir, 'dynamic-security.json');
  const passwordFile = path.join(input.dir, 'coordinator.password');
  if (existsSync(dynsec)) {
    throw new OtaError(
      'E_EXISTS',
      `${dynsec} exists: it holds the broker's clients (every enrolled device); move it away yourself if you really mean to start over, or pick another --dir`,
    );
  }
  await fs.mkdir(input.dir, { recursive: true, mode: 0o750 });
  await writeNew(dynsec, `${JSON.stringify(dynsecStartFile(input), null, 2)}\n`, 0o600);
  await writeNew(passwordFile, `${input.password}\n`, 0o600);
  await fs.rm(conf, { force: true });
  await writeNew(conf, mosquittoConf(input), 0o640);
  if (chown) {
    // Mosquitto reads the config and rewrites the plugin's file as this user; the password file stays root's.
    for (const f of [input.dir, conf, dynsec]) await fs.chown(f, chown.uid, chown.gid);
  }
  return { conf, dynsec, passwordFile };
}
