import { pbkdf2Sync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import {
  createDeviceCommands,
  deleteCommands,
  deviceAcls,
  roleNames,
} from '../coordinator/external-broker/dynsec-rules.js';
import { addDynsecEntries, dynsecEntries, provisionMosquitto } from '../scripts/bench/mosquitto-provision.js';
import { createTopics } from '../shared/topics.js';
import { mosquittoSkip } from './helpers/mosquitto.js';

/**
 * bench:fleet --broker mosquitto moves an enrolled fleet into Mosquitto's dynamic security file
 * offline (scripts/bench/mosquitto-provision.ts). The entries must be what the plugin itself
 * would have made of the coordinator's commands: a real Mosquitto loads them and lets each device
 * in with its token and its own client id only, on its own topics.
 */

const topics = createTopics();

t.test('dynsecEntries: the plugin file entries of the coordinator’s own commands', async (t) => {
  const { clients, roles } = dynsecEntries(createDeviceCommands(topics, 'constructor', 'tok-1'));
  t.same(roles, [{ rolename: roleNames.device('constructor'), acls: deviceAcls(topics, 'constructor') }]);
  t.equal(clients.length, 1);
  const c = clients[0] as NonNullable<(typeof clients)[0]>;
  t.match(c, {
    username: 'constructor',
    clientid: 'constructor',
    iterations: 101,
    roles: [{ rolename: roleNames.device('constructor') }],
  });
  // Mosquitto 2.0's hash: PBKDF2-HMAC-SHA512 of the token with the stored salt.
  const expected = pbkdf2Sync('tok-1', Buffer.from(c.salt, 'base64'), 101, 64, 'sha512').toString('base64');
  t.equal(c.password, expected);
  t.notOk('tok-1' === c.password, 'the token itself is not stored');

  t.throws(() => dynsecEntries(deleteCommands('device', 'x')), {
    message: /cannot write dynamic security command "deleteClient" into the plugin's file/,
  });
  t.throws(() => dynsecEntries([{ command: 'createClient', username: 'x' }]), { message: /"createClient"/ });
});

t.test('addDynsecEntries: a name the file already has is refused', async (t) => {
  const file = { clients: [], groups: [], roles: [] };
  const one = dynsecEntries(createDeviceCommands(topics, 'd-1', 'a'));
  const added = addDynsecEntries(file, one);
  t.equal(added.clients.length, 1);
  t.equal(file.clients.length, 0, 'the input is not changed');
  t.throws(() => addDynsecEntries(added, dynsecEntries(createDeviceCommands(topics, 'd-1', 'b'))), {
    message: 'the dynamic security file already has a client d-1',
  });
  t.throws(() => addDynsecEntries(added, { clients: [], roles: one.roles }), {
    message: `the dynamic security file already has a role ${roleNames.device('d-1')}`,
  });
});

t.test('provisionMosquitto: refuses a data directory without an admin token, or no plugin', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-test-provision-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  await t.rejects(provisionMosquitto({ dataDir: dir, dir: path.join(dir, 'm'), devices: [] }), { code: 'ENOENT' });
  await fs.writeFile(path.join(dir, 'admin.token'), '{"user":"admin"}');
  await t.rejects(provisionMosquitto({ dataDir: dir, dir: path.join(dir, 'm'), devices: [] }), {
    message: /admin\.token has no user and token: start the coordinator once first/,
  });
  await t.rejects(provisionMosquitto({ dataDir: dir, dir: path.join(dir, 'm'), devices: [], plugin: '' }), {
    message: /no mosquitto_dynamic_security\.so found: install Debian's mosquitto package/,
  });
});

t.test(
  'provisionMosquitto: a real Mosquitto lets every device in with its own token and client id',
  { skip: mosquittoSkip() },
  async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-test-provision-'));
    t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
    const dataDir = path.join(dir, 'data');
    await fs.mkdir(dataDir);
    // What the coordinator writes at its first start (coordinator/identity: the admin token file).
    await fs.writeFile(path.join(dataDir, 'admin.token'), JSON.stringify({ user: 'admin', token: 'admin-token' }));
    const devices = [
      { id: 'dev-1', token: 'token-1' },
      { id: 'constructor', token: 'token-2' },
    ];
    // Extra config lines go into the config file too (the bench's --mosquitto-conf).
    const p = await provisionMosquitto({
      dataDir,
      dir: path.join(dir, 'mosquitto'),
      devices,
      extraConf: ['max_inflight_messages 40'],
    });
    t.teardown(() => p.mosquitto.stop());
    t.match(await fs.readFile(path.join(dir, 'mosquitto', 'mosquitto.conf'), 'utf8'), /^max_inflight_messages 40$/m);
    t.equal(p.clients, 4, 'the coordinator, the admin and two devices');
    t.same(p.coordinatorArgs, ['--broker', p.url, '--broker-password-file', p.passwordFile]);
    t.match(await fs.readFile(p.passwordFile, 'utf8'), /^\S{20,}\n$/);

    const connect = (clientId: string, username: string, password: string) =>
      mqtt.connectAsync(p.url, { clientId, username, password, reconnectPeriod: 0, protocolVersion: 4 });
    const admin = await connect('admin@t', 'admin', 'admin-token');
    t.teardown(() => admin.endAsync(true));
    const seen: string[] = [];
    let arrived: () => void = () => {};
    const third = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    admin.on('message', (topic) => {
      seen.push(topic);
      if (seen.length === 3) arrived();
    });
    await admin.subscribeAsync(topics.allDevices('reported'), { qos: 1 });

    for (const d of devices) {
      const c = await connect(d.id, d.id, d.token);
      // Its own topic goes through; another device's is dropped by its role (Mosquitto 2 answers
      // a denied QoS 1 publish with a PUBACK all the same).
      await c.publishAsync(topics.reported(d.id), '{}', { qos: 1 });
      await c.publishAsync(topics.reported('someone-else'), '{}', { qos: 1 });
      await c.endAsync();
    }
    await t.rejects(connect('dev-1', 'dev-1', 'wrong'), 'a wrong token is refused');
    await t.rejects(connect('not-dev-1', 'dev-1', 'token-1'), "another client id is refused (the client's clientid)");
    // A last report of dev-1's, after everything above: one publisher at a time, each waiting for
    // its PUBACK, so the subscriber gets them in that order, and a report for someone-else would
    // have come before this one.
    const last = await connect('dev-1', 'dev-1', 'token-1');
    await last.publishAsync(topics.reported('dev-1'), '{}', { qos: 1 });
    await last.endAsync();
    await third;
    t.same(seen, [topics.reported('dev-1'), topics.reported('constructor'), topics.reported('dev-1')]);
  },
);
