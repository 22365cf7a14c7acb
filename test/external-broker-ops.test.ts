import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import { DynsecClient } from '../coordinator/external-broker/dynsec-client.js';
import { operatorAcls } from '../coordinator/external-broker/dynsec-rules.js';
import { startCoordinator } from '../coordinator/service.js';
import { createLogger } from '../shared/logger.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';
import { nextMessage, openSession } from './helpers/mqtt-session.js';

// Issue 16, the operations around an external broker, against a real Mosquitto: otactl and a
// WebSocket client (the dashboard's transport, bridged at /mqtt) work unchanged; the start brings
// the broker's clients in step with the store; a broker that lost everything gets the retained
// state again; messages the broker passes but the coordinator must not take are refused and
// counted; a wrong password or an unreachable broker stops the start with a clear error.

const topics = createTopics();
const silent = createLogger('silent', process.stdout, 'ota-coordinator');
const ts = () => new Date().toISOString();

async function roles(broker: TestMosquitto, t: Test): Promise<string[]> {
  const password = readFileSync(broker.passwordFile, 'utf8').trim();
  const s = await openSession(
    t,
    broker.url,
    'ota-coordinator',
    password,
    `roles-${Math.random().toString(36).slice(2)}`,
  );
  const [r] = await new DynsecClient(s.client).runAll([{ command: 'listRoles', count: -1, offset: 0 }], 'listRoles');
  await s.client.endAsync();
  return ((r?.data as { roles?: string[] } | undefined)?.roles ?? []).sort();
}

t.test('otactl and the /mqtt WebSocket bridge through Mosquitto', { skip: mosquittoSkip() }, async (t) => {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const { admin, running, token, dataDir } = await startInProcessCoordinator(t, path.join(dir, 'data'), {}, broker.env);
  await admin.call('device.add', { id: 'cam-1', labels: { site: 'a' } });

  // otactl as typed on the coordinator's host: it reads the admin token file, which names the broker.
  const ls = await otactl(['device', 'ls', '--json'], { env: { OTA_DATA: dataDir } });
  t.equal(ls.code, 0, ls.stderr);
  t.match(JSON.parse(ls.stdout), [{ id: 'cam-1' }], 'otactl device ls through the broker');
  const refused = await otactl(['operator', 'add', 'eve', '--role', 'viewer', '--json'], {
    env: { OTA_DATA: dataDir },
  });
  t.equal(refused.code, 0, refused.stderr);
  const eve = JSON.parse(refused.stdout) as { token: string };
  const asEve = await otactl(['device', 'rm', 'cam-1', '--url', broker.url, '--user', 'eve'], {
    env: { OTA_TOKEN: eve.token },
  });
  t.not(asEve.code, 0, 'a viewer cannot remove a device');
  t.match(asEve.stderr, /E_FORBIDDEN/, 'and is told why, by the coordinator');

  // The dashboard's transport: MQTT over WebSocket at the coordinator's /mqtt, passed to the broker.
  const ws = await CommandClient.connect({
    url: `${running.httpUrl.replace(/^http/, 'ws')}/mqtt`,
    user: token.user,
    token: token.token,
  });
  t.teardown(() => ws.close());
  const who = await ws.call<{ id: string; role: string }>('operator.whoami', {});
  t.match(who, { id: 'admin', role: 'admin' }, 'a command over the bridged WebSocket');
});

t.test('the start brings the broker in step with the store', { skip: mosquittoSkip() }, async (t) => {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const data = path.join(dir, 'data');
  // Enrolled with the embedded broker first: no client in Mosquitto, and its token is not kept.
  const embedded = await startInProcessCoordinator(t, data);
  await embedded.admin.call('device.add', { id: 'old-cam', labels: {} });
  await embedded.admin.close();
  await embedded.running.stop();

  const warnings: string[] = [];
  const logger = createLogger('warn', { write: (line: string) => warnings.push(line) } as never, 'ota-coordinator');
  const config = resolveCoordinatorConfig({ data, mqttPort: 0, httpPort: 0 }, broker.env);
  let running = await startCoordinator(config, { logger });
  t.teardown(() => running.stop());
  t.ok(
    warnings.some((w) => w.includes('no client in the broker') && w.includes('old-cam')),
    'the device enrolled before the switch is named: enrol it again',
  );
  t.ok(
    (await roles(broker, t)).includes('ota-operator-admin'),
    "the admin's client was made from the admin token file",
  );
  const tokenFile = JSON.parse(await fs.readFile(running.adminTokenFile, 'utf8')) as { user: string; token: string };
  const admin = await CommandClient.connect({ url: broker.url, user: tokenFile.user, token: tokenFile.token });
  await admin.call('device.rm', { id: 'old-cam' });
  const added = await admin.call<{ token: string }>('device.add', { id: 'cam-2', labels: {} });
  t.ok(added.token, 'enrolled again through the broker');
  await admin.close();

  // A client of ours that the store no longer has (a removal that did not reach the broker).
  const password = readFileSync(broker.passwordFile, 'utf8').trim();
  const control = await openSession(t, broker.url, 'ota-coordinator', password, 'ops-control');
  await new DynsecClient(control.client).runAll(
    [
      { command: 'createRole', rolename: 'ota-device-ghost', acls: [] },
      { command: 'createClient', username: 'ghost', password: 'x', roles: [{ rolename: 'ota-device-ghost' }] },
      // Someone else's client in the same broker: not ours to touch.
      { command: 'createClient', username: 'other-app', password: 'y' },
    ],
    'setup',
  );
  await running.stop();
  running = await startCoordinator(config, { logger: silent });
  const after = await roles(broker, t);
  t.notOk(after.includes('ota-device-ghost'), 'the leftover device client is removed at start');
  t.ok(after.includes('ota-device-cam-2'), 'an enrolled device keeps its client');
  const [clients] = await new DynsecClient(control.client).runAll(
    [{ command: 'listClients', count: -1, offset: 0 }],
    'ls',
  );
  const names = (clients?.data as { clients?: string[] } | undefined)?.clients ?? [];
  t.ok(names.includes('other-app'), "another application's client is left alone");
  t.notOk(names.includes('ghost'));

  // The coordinator's own user name cannot be a device's.
  const admin2 = await CommandClient.connect({ url: broker.url, user: tokenFile.user, token: tokenFile.token });
  t.teardown(() => admin2.close());
  await t.rejects(admin2.call('device.add', { id: 'ota-coordinator', labels: {} }), {
    code: 'E_CONFLICT',
    message: /already has a client named ota-coordinator/,
  });
  await t.rejects(
    admin2.call('device.show', { id: 'ota-coordinator' }),
    { code: 'E_NOT_FOUND' },
    'and nothing was stored',
  );
  t.notOk((await roles(broker, t)).includes('ota-device-ota-coordinator'), 'and its role was removed again');

  // A client and role of ours left by an attempt whose answer was lost: enrolling that id works.
  await new DynsecClient(control.client).runAll(
    [
      { command: 'createRole', rolename: 'ota-device-lost', acls: [] },
      { command: 'createClient', username: 'lost', password: 'old', roles: [{ rolename: 'ota-device-lost' }] },
    ],
    'leftover',
  );
  const lost = await admin2.call<{ token: string }>('device.add', { id: 'lost', labels: {} });
  const session = await openSession(t, broker.url, 'lost', lost.token, 'lost');
  t.ok(session.client.connected, 'the leftover was replaced: the new token signs in');
  await session.client.endAsync();

  // A role of ours whose name is another client's (an operator's) is removed, the client is not.
  await admin2.call('operator.add', { name: 'bob', role: 'viewer' });
  await new DynsecClient(control.client).runAll(
    [{ command: 'createRole', rolename: 'ota-device-bob', acls: [] }],
    'orphan',
  );
  await running.stop();
  running = await startCoordinator(config, { logger: silent });
  const third = await roles(broker, t);
  t.notOk(third.includes('ota-device-bob'), 'the orphan role is removed');
  t.ok(third.includes('ota-operator-bob'), "and bob's client and role are not");
});

t.test('a broker that lost everything gets the retained state again', { skip: mosquittoSkip() }, async (t) => {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const { token } = await startInProcessCoordinator(t, path.join(dir, 'data'), {}, broker.env);
  // The retained fleet summary: nothing changes in this fleet, so only a republish brings it back.
  const watch = async (name: string) => {
    const s = await openSession(t, broker.url, token.user, token.token, `admin@${name}`);
    await s.client.subscribeAsync(topics.fleet(), { qos: 1 });
    return nextMessage(s, (m) => (m.topic === topics.fleet() && m.payload.length > 0 ? m : undefined), 30_000);
  };
  t.ok(await watch('before'), 'retained before');
  // The broker restarts without its persistence file: no retained messages, no sessions.
  await broker.stop();
  await fs.rm(path.join(broker.dir, 'mosquitto.db'), { force: true });
  await broker.restart();
  const again = await watch('after');
  t.ok(JSON.parse(again.payload.toString()), 'retained again: the coordinator saw its session lost and republished');
});

t.test('what the coordinator refuses from the broker, and start failures', { skip: mosquittoSkip() }, async (t) => {
  const dir = t.testdir();
  const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
  const { admin, running } = await startInProcessCoordinator(t, path.join(dir, 'data'), {}, broker.env);
  await admin.call('device.add', { id: 'cam-1', labels: {} });
  const password = readFileSync(broker.passwordFile, 'utf8').trim();
  // The coordinator's own account may publish anywhere under the prefix: it stands in for a
  // broker whose ACL lets through what it should not.
  const loose = await openSession(t, broker.url, 'ota-coordinator', password, 'loose');
  const refusedCount = async () => {
    const text = await (await fetch(`${running.httpUrl}/metrics`)).text();
    return Number(/^ota_broker_messages_refused_total (\d+)/m.exec(text)?.[1] ?? 'NaN');
  };
  const before = await refusedCount();
  // The dynamic security plugin's answers arrive on the coordinator's connection: not refusals.
  await admin.call('device.add', { id: 'cam-2', labels: {} });
  await admin.call('device.rm', { id: 'cam-2' });
  const status = encodePayload({ online: true, ts: ts(), agentVersion: 'x', facts: {} });
  await loose.client.publishAsync(topics.status('not-enrolled'), status, { qos: 1 });
  await loose.client.publishAsync(topics.cmd('device.ls'), Buffer.from('{}'), { qos: 1 });
  await loose.client.publishAsync(topics.cmd('device.ls', 'nobody'), Buffer.from('{}'), { qos: 1 });
  await loose.client.publishAsync(topics.reported('cam-1'), Buffer.from('{"not":"a report"}'), { qos: 1 });
  for (let i = 0; i < 300 && (await refusedCount()) < before + 4; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal((await refusedCount()) - before, 4, 'each refused and counted');
  t.equal((await admin.call<{ lastReport: unknown }>('device.show', { id: 'cam-1' })).lastReport, null);

  const wrong = path.join(dir, 'wrong.password');
  await fs.writeFile(wrong, 'not-the-password\n');
  const config = resolveCoordinatorConfig(
    { data: path.join(dir, 'data2'), mqttPort: 0, httpPort: 0 },
    { ...broker.env, OTA_BROKER_PASSWORD_FILE: wrong },
  );
  await t.rejects(startCoordinator(config, { logger: silent }), {
    code: 'E_BROKER',
    message: /refused user "ota-coordinator".*--broker-password-file/,
  });
  const down = resolveCoordinatorConfig(
    { data: path.join(dir, 'data3'), mqttPort: 0, httpPort: 0 },
    { ...broker.env, OTA_BROKER_URL: 'mqtt://127.0.0.1:1' },
  );
  await t.rejects(startCoordinator(down, { logger: silent }), { code: 'E_BROKER', message: /127\.0\.0\.1:1/ });
});

t.test(
  "--broker-identity none: the broker's clients are left to its operator",
  { skip: mosquittoSkip() },
  async (t) => {
    const dir = t.testdir();
    const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
    const password = readFileSync(broker.passwordFile, 'utf8').trim();
    // The admin's client made by hand, as an operator of such a broker would (brokers-other.md).
    const data = path.join(dir, 'data');
    const embedded = await startInProcessCoordinator(t, data);
    await embedded.admin.close();
    await embedded.running.stop();
    const control = await openSession(t, broker.url, 'ota-coordinator', password, 'none-control');
    await new DynsecClient(control.client).runAll(
      [
        { command: 'createRole', rolename: 'ota-operator-admin', acls: operatorAcls(topics, 'admin') },
        {
          command: 'createClient',
          username: 'admin',
          password: embedded.token.token,
          roles: [{ rolename: 'ota-operator-admin' }],
        },
      ],
      'admin by hand',
    );
    const { admin } = await startInProcessCoordinator(t, data, {}, { ...broker.env, OTA_BROKER_IDENTITY: 'none' });
    const added = await admin.call<{ token: string }>('device.add', { id: 'cam-1', labels: {} });
    t.ok(added.token, 'enrolled without asking the broker');
    t.notOk((await roles(broker, t)).includes('ota-device-cam-1'), 'and nothing was created there');
  },
);

t.test(
  'a fresh data directory against a broker that knows another admin token',
  { skip: mosquittoSkip() },
  async (t) => {
    const dir = t.testdir();
    const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
    const first = await startInProcessCoordinator(t, path.join(dir, 'data-1'), {}, broker.env);
    await first.admin.close();
    await first.running.stop();
    // Another coordinator data directory, a new admin token: the broker's admin client is set to it.
    const second = await startInProcessCoordinator(t, path.join(dir, 'data-2'), {}, broker.env);
    t.not(second.token.token, first.token.token);
    t.match(await second.admin.call('operator.whoami', {}), { id: 'admin' }, 'the new admin token signs in');
  },
);
