import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import {
  BRIDGE_USER,
  bridgeAcls,
  bridgeCommands,
  edgeBridgeConf,
  startEdges,
} from '../scripts/bench/mosquitto-edges.js';
import type { MosquittoProcess } from '../scripts/bench/mosquitto-process.js';
import { provisionMosquitto } from '../scripts/bench/mosquitto-provision.js';
import { createTopics } from '../shared/topics.js';
import { mosquittoSkip } from './helpers/mosquitto.js';

/**
 * bench:fleet --edges (scripts/bench/mosquitto-edges.ts): devices on edge Mosquittos bridged into
 * the one the coordinator uses. Against real Mosquittos: a device signs in at its edge with its
 * own token, its report reaches the core, a desired state published on the core reaches it, and
 * the edge's copy of the rules still keeps it to its own topics.
 */

const topics = createTopics();

t.test('the bridge: its role on the core and its config lines', async (t) => {
  t.same(
    bridgeAcls(topics).map((a) => `${a.acltype} ${a.topic}`),
    [
      `publishClientSend ${topics.allDevices('reported')}`,
      `publishClientSend ${topics.allDevices('status')}`,
      `publishClientSend ${topics.allDevices('metrics')}`,
      `subscribePattern ${topics.allDevices('desired')}`,
      `publishClientReceive ${topics.allDevices('desired')}`,
    ],
    'up: what devices publish; down: desired states only',
  );
  t.match(bridgeCommands(topics, 'pw'), [
    { command: 'createRole', rolename: BRIDGE_USER },
    { command: 'createClient', username: BRIDGE_USER, password: 'pw', roles: [{ rolename: BRIDGE_USER }] },
  ]);
  const conf = edgeBridgeConf({ index: 2, corePort: 1883, password: 'pw', topics });
  t.ok(conf.includes('address 127.0.0.1:1883'));
  t.ok(conf.includes(`remote_clientid ${BRIDGE_USER}-2`), 'each edge its own client id on the core');
  t.ok(conf.includes(`topic ${topics.allDevices('desired')} in 1`));
  t.ok(conf.includes(`topic ${topics.allDevices('reported')} out 1`));
  await t.rejects(
    startEdges({
      count: 0,
      dir: '/nonexistent',
      core: { port: 1, dynsecFile: '/nonexistent', input: {} as never },
      password: 'x',
    }),
    /--edges must be a whole number of edge brokers, at least 1, got 0/,
  );
});

t.test(
  "a device at an edge: in with its token, its report to the core, the core's desired state to it",
  { skip: mosquittoSkip() },
  async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-test-edges-'));
    t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
    const dataDir = path.join(dir, 'data');
    await fs.mkdir(dataDir);
    await fs.writeFile(path.join(dataDir, 'admin.token'), JSON.stringify({ user: 'admin', token: 'admin-token' }));
    let coreSpawned: MosquittoProcess | null = null;
    const core = await provisionMosquitto({
      dataDir,
      dir: path.join(dir, 'core'),
      devices: [{ id: 'cam-1', token: 'token-1' }],
      extraCommands: bridgeCommands(topics, 'bridge-pw'),
      onSpawn: (m) => {
        coreSpawned = m;
      },
    });
    t.teardown(() => core.mosquitto.stop());
    t.equal(coreSpawned, core.mosquitto, 'the core was handed over at its spawn');
    // An edge whose config Mosquitto refuses: the error, and nothing left running.
    await t.rejects(
      startEdges({
        count: 1,
        dir: path.join(dir, 'bad'),
        core: { port: core.mosquitto.port, dynsecFile: core.dynsecFile, input: core.input },
        password: 'bridge-pw',
        extraConf: ['no_such_option 1'],
        readyTimeoutMs: 10_000,
      }),
    );
    // The caller's list holds each edge from its spawn (filled here while it starts), and only the
    // edges that run.
    const started: MosquittoProcess[] = [];
    const returned = await startEdges(
      {
        count: 1,
        dir: path.join(dir, 'edges'),
        core: { port: core.mosquitto.port, dynsecFile: core.dynsecFile, input: core.input },
        password: 'bridge-pw',
      },
      started,
    );
    t.equal(returned, started, 'the same list');
    const [edge] = started;
    t.equal(started.length, 1);
    if (!edge) throw new Error('no edge started');
    t.teardown(() => edge.stop());

    const coordinatorPassword = (await fs.readFile(core.passwordFile, 'utf8')).trim();
    const connect = (url: string, clientId: string, username: string, password: string) =>
      mqtt.connectAsync(url, { clientId, username, password, reconnectPeriod: 0, protocolVersion: 4 });
    const coordinator = await connect(core.url, 'ota-coordinator-t', 'ota-coordinator', coordinatorPassword);
    t.teardown(() => coordinator.endAsync(true));
    const reports: string[] = [];
    coordinator.on('message', (topic, payload) => reports.push(`${topic} ${payload}`));
    await coordinator.subscribeAsync(topics.allDevices('reported'), { qos: 1 });

    await t.rejects(connect(edge.url, 'cam-1', 'cam-1', 'wrong'), 'a wrong token is refused at the edge');
    const device = await connect(edge.url, 'cam-1', 'cam-1', 'token-1');
    t.teardown(() => device.endAsync(true));
    const desired = new Promise<string>((resolve) =>
      device.on('message', (_topic, payload) => resolve(String(payload))),
    );
    await device.subscribeAsync(topics.desired('cam-1'), { qos: 1 });
    // The bridge connects to the core in its own time: the desired state is retained, so it arrives whenever it does.
    await coordinator.publishAsync(topics.desired('cam-1'), 'seq-1', { qos: 1, retain: true });
    t.equal(await desired, 'seq-1', "the core's desired state reached the device at its edge");

    await device.publishAsync(topics.reported('cam-2'), 'not mine', { qos: 1 });
    await device.publishAsync(topics.reported('cam-1'), 'mine', { qos: 1 });
    const deadline = Date.now() + 20_000;
    while (!reports.includes(`${topics.reported('cam-1')} mine`) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    // Sent after the refused one, on the same connection and bridge: had the edge let it through,
    // it would have arrived first.
    t.same(
      reports,
      [`${topics.reported('cam-1')} mine`],
      "its own report reached the core; another device's topic did not",
    );
  },
);
