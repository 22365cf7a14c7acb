import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { DynsecAcl } from '../../coordinator/external-broker/dynsec-rules.js';
import { type MosquittoConfigInput, mosquittoConf } from '../../coordinator/external-broker/mosquitto-config.js';
import { createTopics, type Topics } from '../../shared/topics.js';
import { MOSQUITTO_BIN, MosquittoProcess } from './mosquitto-process.js';

/**
 * `bench:fleet --edges K`: the devices connect to K edge Mosquittos, each bridged into the one
 * Mosquitto the coordinator is a client of (the core). A measurement harness, not a deployment we
 * recommend (docs/scale.md: past one Mosquitto, a clustered broker): every connection is an open
 * file of the process that holds it, and this machine's hard limit is 20,000 per process, so one
 * Mosquitto holds at most ~19,900 devices here. Behind edges the coordinator sees what it sees
 * from one broker holding them all (the same topics and payloads through one connection), which
 * is what these runs measure: its memory, ingest, halt and waves at 50,000 devices.
 *
 * Each edge loads a copy of the core's dynamic security file (every device's client and role),
 * so a device signs in at its edge with its own credentials and its own topics only. The bridge
 * sends the devices' reports, statuses and metrics to the core and takes every desired state
 * from it (`try_private`: Mosquitto bridges keep the retain flag); on the core the bridge is one
 * client whose role allows exactly that.
 */

export const BRIDGE_USER = 'bench-edge-bridge';

/** Device-published topic kinds the bridge forwards to the core, and the one it takes from it. */
const UP = ['reported', 'status', 'metrics'] as const;
const DOWN = 'desired';

/** The bridge's role on the core: publish every device's reports, statuses and metrics; subscribe to every desired state. */
export function bridgeAcls(topics: Topics): DynsecAcl[] {
  return [
    ...UP.map((k): DynsecAcl => ({ acltype: 'publishClientSend', topic: topics.allDevices(k), allow: true })),
    { acltype: 'subscribePattern', topic: topics.allDevices(DOWN), allow: true },
    { acltype: 'publishClientReceive', topic: topics.allDevices(DOWN), allow: true },
  ];
}

/** The dynamic security commands that create the bridge's client and role on the core. */
export function bridgeCommands(topics: Topics, password: string): object[] {
  return [
    { command: 'createRole', rolename: BRIDGE_USER, acls: bridgeAcls(topics) },
    { command: 'createClient', username: BRIDGE_USER, password, roles: [{ rolename: BRIDGE_USER }] },
  ];
}

/** The bridge section of edge `index`'s config (mosquitto.conf(5), "Configuring Bridges"). */
export function edgeBridgeConf(o: { index: number; corePort: number; password: string; topics: Topics }): string[] {
  return [
    '',
    `connection core-${o.index}`,
    `address 127.0.0.1:${o.corePort}`,
    'bridge_protocol_version mqttv311',
    `remote_clientid ${BRIDGE_USER}-${o.index}`,
    `remote_username ${BRIDGE_USER}`,
    `remote_password ${o.password}`,
    // The core keeps nothing for an edge between connections: on reconnect it sends the retained
    // desired states again, which is what the edge needs.
    'cleansession true',
    'try_private true',
    'notifications false',
    'restart_timeout 1',
    ...UP.map((k) => `topic ${o.topics.allDevices(k)} out 1`),
    `topic ${o.topics.allDevices(DOWN)} in 1`,
  ];
}

export interface EdgeOptions {
  count: number;
  /** Each edge gets `dir/edge-<i>` (created). */
  dir: string;
  /** The core's config input (its plugin, user, topics), for the edges' own configs. */
  core: { port: number; dynsecFile: string; input: Pick<MosquittoConfigInput, 'runAs' | 'plugin' | 'topics'> };
  password: string;
  bin?: string;
  readyTimeoutMs?: number;
  /** Lines appended to every edge's config (the same experiments as the core's). */
  extraConf?: readonly string[];
}

/**
 * Starts `count` edges bridged into the core; the caller stops each by its pid
 * (MosquittoProcess.stop). Each edge is in `started` from its spawn (an edge loads the whole
 * plugin file, seconds at 50,000 clients), so a caller interrupted meanwhile can kill it.
 */
export async function startEdges(o: EdgeOptions, started: MosquittoProcess[] = []): Promise<MosquittoProcess[]> {
  if (!Number.isInteger(o.count) || o.count < 1) {
    throw new Error(`--edges must be a whole number of edge brokers, at least 1, got ${o.count}`);
  }
  const dynsec = await fs.readFile(o.core.dynsecFile);
  try {
    for (let i = 0; i < o.count; i++) {
      const slot = started.length;
      await startEdge(o, i, dynsec, (p) => {
        started[slot] = p;
      });
    }
  } catch (err) {
    for (const e of started) e.kill();
    throw err;
  }
  return started;
}

async function startEdge(
  o: EdgeOptions,
  index: number,
  dynsec: Buffer,
  onSpawn: (p: MosquittoProcess) => void,
): Promise<MosquittoProcess> {
  const dir = path.join(o.dir, `edge-${index}`);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'dynamic-security.json'), dynsec, { mode: 0o600 });
  const configFile = path.join(dir, 'mosquitto.conf');
  const logFile = path.join(dir, 'mosquitto.log');
  const conf = (port: number) => {
    const input: MosquittoConfigInput = {
      ...o.core.input,
      dir,
      host: '127.0.0.1',
      port,
      wsPort: null,
      // Unused on an edge (its plugin file is the core's copy); required by the config writer.
      username: 'unused',
      password: randomBytes(8).toString('hex'),
      tls: null,
      logFile,
    };
    const lines = [
      ...(o.extraConf ?? []),
      ...edgeBridgeConf({ index, corePort: o.core.port, password: o.password, topics: o.core.input.topics }),
    ];
    return `${mosquittoConf(input)}${lines.map((l) => `${l}\n`).join('')}`;
  };
  return MosquittoProcess.launchOnFreePort((port) => fs.writeFile(configFile, conf(port)), {
    bin: o.bin ?? MOSQUITTO_BIN,
    configFile,
    logFile,
    readyTimeoutMs: o.readyTimeoutMs ?? 60_000,
    onSpawn,
  });
}

export interface BareEdgeOptions {
  count: number;
  /** Each edge gets `dir/edge-<i>` (created). */
  dir: string;
  /** The bare broker's port on 127.0.0.1. */
  corePort: number;
  bin?: string;
  maxQueuedMessages: number;
  maxInflightMessages?: number;
  /** Lines appended to every edge's config (the bare broker's own experiments). */
  extra: readonly string[];
}

/**
 * The bare baseline's edges (bench:bare-broker --edges, bench:fleet --bare --edges): anonymous
 * Mosquittos with the bare broker's config (mosquitto-process.ts), each with the bridge section
 * above into the bare broker, so the baseline's devices take the same two hops as the fleet's.
 * The bare broker lets anyone in, so the bridge's user and password are only carried along.
 * Each edge is in `started` from its spawn, before it listens, so a caller that is interrupted
 * meanwhile can stop every one already spawned; on a failure they are killed here.
 */
export async function startBareEdges(
  o: BareEdgeOptions,
  started: MosquittoProcess[] = [],
): Promise<MosquittoProcess[]> {
  if (!Number.isInteger(o.count) || o.count < 1) {
    throw new Error(`--edges must be a whole number of edge brokers, at least 1, got ${o.count}`);
  }
  const topics = createTopics();
  try {
    for (let index = 0; index < o.count; index++) {
      const dir = path.join(o.dir, `edge-${index}`);
      await fs.mkdir(dir, { recursive: true });
      const bridge = edgeBridgeConf({ index, corePort: o.corePort, password: 'bare', topics });
      // In `started` from its spawn (replaced after a lost race for a port): an abort during its
      // start kills it too.
      const slot = started.length;
      await MosquittoProcess.start({
        dir,
        ...(o.bin ? { bin: o.bin } : {}),
        maxQueuedMessages: o.maxQueuedMessages,
        ...(o.maxInflightMessages !== undefined ? { maxInflightMessages: o.maxInflightMessages } : {}),
        extra: [...o.extra, ...bridge],
        onSpawn: (p) => {
          started[slot] = p;
        },
      });
    }
  } catch (err) {
    for (const e of started) e.kill();
    throw err;
  }
  return started;
}
