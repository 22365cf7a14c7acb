import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  createDeviceCommands,
  createOperatorCommands,
  type DynsecAcl,
} from '../../coordinator/external-broker/dynsec-rules.js';
import {
  dynsecPasswordHash,
  findDynsecPlugin,
  type MosquittoConfigInput,
  mosquittoConf,
  writeMosquittoConfig,
} from '../../coordinator/external-broker/mosquitto-config.js';
import { createTopics, type Topics } from '../../shared/topics.js';
import { wallMs } from './common.js';
import { freePort, MOSQUITTO_BIN, MosquittoProcess } from './mosquitto-process.js';

/**
 * A fleet enrolled with the coordinator on its embedded broker, moved OFFLINE to a Mosquitto 2
 * the coordinator then runs against with `--broker`, the way an installer would migrate one.
 *
 * Why offline: `device.add` through an external broker creates the device's client and role with
 * the dynamic security plugin, and Mosquitto 2.0.11's plugin rewrites its whole JSON file after
 * every command, so enrolling that way costs O(N) per device (measured: the first 1,000 devices
 * 6.8 s, the third 1,000 33 s). Here the plugin's starting file (`ota-coordinator
 * mosquitto-config`'s, writeMosquittoConfig) gets every device's client and role, and the admin
 * operator's, before Mosquitto starts. The entries come from the very commands the coordinator
 * sends the plugin (createDeviceCommands, createOperatorCommands), so the rules are the product's;
 * only the password is hashed here as the plugin hashes it (dynsecPasswordHash). At its next start
 * the coordinator reconciles and finds every role present.
 */

export interface DynsecFileClient {
  username: string;
  clientid?: string;
  textname?: string;
  password: string;
  salt: string;
  iterations: number;
  roles: { rolename: string; priority?: number }[];
}

export interface DynsecFileRole {
  rolename: string;
  acls: DynsecAcl[];
}

export interface DynsecFile {
  defaultACLAccess?: unknown;
  clients: DynsecFileClient[];
  groups: unknown[];
  roles: DynsecFileRole[];
}

type Hash = (password: string) => { password: string; salt: string; iterations: number };

/**
 * The plugin file's entries that `commands` (createRole / createClient, as dynsec-rules.ts makes
 * them) would leave behind, passwords hashed (pure but for the hash's random salt).
 */
export function dynsecEntries(
  commands: readonly object[],
  hash: Hash = dynsecPasswordHash,
): { clients: DynsecFileClient[]; roles: DynsecFileRole[] } {
  const clients: DynsecFileClient[] = [];
  const roles: DynsecFileRole[] = [];
  for (const c of commands as Record<string, unknown>[]) {
    if (c.command === 'createRole' && typeof c.rolename === 'string' && Array.isArray(c.acls)) {
      roles.push({ rolename: c.rolename, acls: c.acls as DynsecAcl[] });
    } else if (
      c.command === 'createClient' &&
      typeof c.username === 'string' &&
      typeof c.password === 'string' &&
      Array.isArray(c.roles)
    ) {
      clients.push({
        username: c.username,
        ...(typeof c.clientid === 'string' ? { clientid: c.clientid } : {}),
        ...hash(c.password),
        roles: c.roles as { rolename: string }[],
      });
    } else {
      throw new Error(
        `cannot write dynamic security command ${JSON.stringify(c.command)} into the plugin's file: only createRole and createClient with their fields are known here (scripts/bench/mosquitto-provision.ts)`,
      );
    }
  }
  return { clients, roles };
}

/** `file` with `entries` added; a name the file already has is refused (it would be a second client or role of that name). */
export function addDynsecEntries(
  file: DynsecFile,
  entries: { clients: readonly DynsecFileClient[]; roles: readonly DynsecFileRole[] },
): DynsecFile {
  const usernames = new Set(file.clients.map((c) => c.username));
  const rolenames = new Set(file.roles.map((r) => r.rolename));
  for (const c of entries.clients) {
    if (usernames.has(c.username)) throw new Error(`the dynamic security file already has a client ${c.username}`);
    usernames.add(c.username);
  }
  for (const r of entries.roles) {
    if (rolenames.has(r.rolename)) throw new Error(`the dynamic security file already has a role ${r.rolename}`);
    rolenames.add(r.rolename);
  }
  return { ...file, clients: [...file.clients, ...entries.clients], roles: [...file.roles, ...entries.roles] };
}

export interface ProvisionOptions {
  /** The coordinator's data directory (its admin.token names the admin operator and its token). */
  dataDir: string;
  /** Where the Mosquitto config, the plugin's file, the password, the log and its persistence go (created). */
  dir: string;
  /** Every enrolled device with its token (device.add's reply). */
  devices: readonly { id: string; token: string }[];
  topics?: Topics;
  bin?: string;
  plugin?: string;
  readyTimeoutMs?: number;
  /** Lines appended to the generated mosquitto.conf, verbatim (experiments: e.g. `max_inflight_messages 0`). */
  extraConf?: readonly string[];
  /** More createRole/createClient commands for the plugin's file (bench:fleet --edges: the bridge's client). */
  extraCommands?: readonly object[];
  /** See MosquittoStartOptions.onSpawn: the broker, known before it listens (its start takes seconds at 50,000 clients). */
  onSpawn?: (p: MosquittoProcess) => void;
}

export interface ProvisionedMosquitto {
  mosquitto: MosquittoProcess;
  url: string;
  /** The coordinator's broker password (`--broker-password-file`). */
  passwordFile: string;
  /** The coordinator's flags for this broker. */
  coordinatorArgs: string[];
  /** The config's input (its plugin, the user it runs as, the topics), for configs beside it (edges). */
  input: Pick<MosquittoConfigInput, 'runAs' | 'plugin' | 'topics'>;
  dynsecFile: string;
  dynsecFileBytes: number;
  /** Clients in the plugin's file: the coordinator, the admin operator and every device. */
  clients: number;
  /** Writing the config and the plugin's file (every password hashed). */
  writeMs: number;
  /** `mosquitto -c` -> listening (it loads the plugin's file first). */
  startMs: number;
}

/**
 * Writes `ota-coordinator mosquitto-config`'s files into `dir` (writeMosquittoConfig) with every
 * device's and the admin operator's client and role added, then starts Mosquitto with them on a
 * free loopback port. The caller stops the returned process (by its pid, MosquittoProcess.stop).
 */
export async function provisionMosquitto(o: ProvisionOptions): Promise<ProvisionedMosquitto> {
  const topics = o.topics ?? createTopics();
  const plugin = o.plugin ?? findDynsecPlugin();
  if (!plugin) {
    throw new Error(
      "no mosquitto_dynamic_security.so found: install Debian's mosquitto package (apt-get install mosquitto)",
    );
  }
  const admin = JSON.parse(await fs.readFile(path.join(o.dataDir, 'admin.token'), 'utf8')) as {
    user?: unknown;
    token?: unknown;
  };
  if (typeof admin.user !== 'string' || typeof admin.token !== 'string') {
    throw new Error(`${path.join(o.dataDir, 'admin.token')} has no user and token: start the coordinator once first`);
  }
  const t0 = wallMs();
  await fs.mkdir(o.dir, { recursive: true });
  const input: MosquittoConfigInput = {
    dir: o.dir,
    host: '127.0.0.1',
    port: await freePort(),
    wsPort: null,
    // Mosquitto drops to this user when started as root; it must read our files and write the plugin's.
    runAs: process.getuid?.() === 0 ? 'root' : os.userInfo().username,
    plugin,
    username: 'ota-coordinator',
    password: randomBytes(24).toString('base64url'),
    topics,
    tls: null,
    logFile: path.join(o.dir, 'mosquitto.log'),
  };
  const written = await writeMosquittoConfig(input);
  const conf = (port: number) =>
    `${mosquittoConf({ ...input, port })}${(o.extraConf ?? []).map((l) => `${l}\n`).join('')}`;
  if (o.extraConf?.length) await fs.writeFile(written.conf, conf(input.port));
  const start = JSON.parse(await fs.readFile(written.dynsec, 'utf8')) as DynsecFile;
  const commands = [
    ...createOperatorCommands(topics, admin.user, admin.token),
    ...o.devices.flatMap((d) => createDeviceCommands(topics, d.id, d.token)),
    ...(o.extraCommands ?? []),
  ];
  const full = addDynsecEntries(start, dynsecEntries(commands));
  const body = `${JSON.stringify(full, null, 2)}\n`;
  const tmp = `${written.dynsec}.tmp-${process.pid}`;
  await fs.writeFile(tmp, body, { mode: 0o600 });
  await fs.rename(tmp, written.dynsec);
  const writeMs = Math.round(wallMs() - t0);

  const t1 = wallMs();
  const mosquitto = await MosquittoProcess.launchOnFreePort(
    async (port) => {
      // A retry's port (another process took the first): the config again, on it.
      if (port === input.port) return;
      input.port = port;
      await fs.writeFile(written.conf, conf(port));
    },
    {
      bin: o.bin ?? MOSQUITTO_BIN,
      configFile: written.conf,
      logFile: input.logFile as string,
      readyTimeoutMs: o.readyTimeoutMs ?? 60_000,
      ...(o.onSpawn ? { onSpawn: o.onSpawn } : {}),
    },
    input.port,
  );
  return {
    mosquitto,
    url: mosquitto.url,
    passwordFile: written.passwordFile,
    coordinatorArgs: ['--broker', mosquitto.url, '--broker-password-file', written.passwordFile],
    input: { runAs: input.runAs, plugin: input.plugin, topics },
    dynsecFile: written.dynsec,
    dynsecFileBytes: Buffer.byteLength(body),
    clients: full.clients.length,
    writeMs,
    startMs: Math.round(wallMs() - t1),
  };
}
