import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import { ownerOfRole, roleNames } from '../coordinator/external-broker/dynsec-rules.js';
import {
  DYNSEC_PLUGIN_PATHS,
  dynsecPasswordHash,
  findDynsecPlugin,
  mosquittoConf,
  writeMosquittoConfig,
} from '../coordinator/external-broker/mosquitto-config.js';
import { mosquittoConfigCommand } from '../coordinator/external-broker/mosquitto-config-command.js';
import { readConfigFile, readSecretFile } from '../coordinator/identity/secret-files.js';
import { createTopics } from '../shared/topics.js';

// Issue 16: the settings and files of external-broker mode, refused with errors that name the fix.

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return Object.assign(w, { text: () => chunks.join('') });
}

t.test('--broker settings', async (t) => {
  const base = { data: '/tmp/x' };
  const c = resolveCoordinatorConfig(base, { OTA_BROKER_URL: 'mqtts://broker:8883', OTA_BROKER_PASSWORD_FILE: 'pw' });
  t.match(c.broker, { url: 'mqtts://broker:8883', username: 'ota-coordinator', caFile: null });
  t.equal(c.broker?.passwordFile, path.resolve('pw'));
  const flags = resolveCoordinatorConfig(
    { ...base, broker: 'mqtt://b:1883', brokerUser: 'coord', brokerPasswordFile: 'f', brokerCa: 'ca.pem' },
    {},
  );
  t.match(flags.broker, { username: 'coord', caFile: path.resolve('ca.pem') });
  t.equal(resolveCoordinatorConfig(base, {}).broker, null, 'embedded by default');
  t.equal(c.broker?.identity, 'mosquitto', 'the coordinator keeps the broker clients by default');
  const none = { OTA_BROKER_URL: 'mqtt://b', OTA_BROKER_PASSWORD_FILE: 'f', OTA_BROKER_IDENTITY: 'none' };
  t.equal(resolveCoordinatorConfig(base, none).broker?.identity, 'none');
  t.throws(() => resolveCoordinatorConfig(base, { ...none, OTA_BROKER_IDENTITY: 'emqx' }), {
    code: 'E_CONFIG',
    message: /--broker-identity: "emqx" is not one of mosquitto .* or none/,
  });
  t.throws(() => resolveCoordinatorConfig({ ...base, brokerUser: 'x' }, {}), {
    code: 'E_CONFIG',
    message: /go with --broker/,
  });
  t.throws(() => resolveCoordinatorConfig({ ...base, broker: 'mqtt://b' }, {}), {
    code: 'E_CONFIG',
    message: /--broker-password-file/,
  });
  t.throws(() => resolveCoordinatorConfig({ ...base, broker: 'http://b', brokerPasswordFile: 'f' }, {}), {
    code: 'E_CONFIG',
    message: /mqtt:\/\/ or mqtts:\/\//,
  });
  t.equal(
    resolveCoordinatorConfig({ ...base, artifactsUrl: 'https://cdn.example/ota' }, {}).artifactsUrl,
    'https://cdn.example/ota',
  );
  t.throws(() => resolveCoordinatorConfig({ ...base, artifactsUrl: 'ftp://x' }, {}), { code: 'E_CONFIG' });
});

t.test('secret files', async (t) => {
  const dir = t.testdir({ ok: 'secret\n', crlf: 'secret\r\n', empty: '\n', two: 'a\nb\n' });
  t.equal(await readSecretFile(path.join(dir, 'ok'), '--x'), 'secret');
  t.equal(await readSecretFile(path.join(dir, 'crlf'), '--x'), 'secret');
  await t.rejects(readSecretFile(path.join(dir, 'empty'), '--x'), { code: 'E_CONFIG', message: /alone on one line/ });
  await t.rejects(readSecretFile(path.join(dir, 'two'), '--x'), { code: 'E_CONFIG' });
  t.equal((await readConfigFile(path.join(dir, 'ok'), '--broker-ca')).toString(), 'secret\n');
  await t.rejects(readConfigFile(path.join(dir, 'missing'), '--broker-ca'), {
    code: 'E_CONFIG',
    message: /--broker-ca/,
  });
  await t.rejects(readSecretFile(path.join(dir, 'missing'), '--broker-password-file'), {
    code: 'E_CONFIG',
    message: /--broker-password-file: cannot read/,
  });
});

t.test('dynamic security roles and the password hash', async (t) => {
  t.same(ownerOfRole(roleNames.device('cam-1')), { kind: 'device', deviceId: 'cam-1' });
  t.same(ownerOfRole(roleNames.operator('constructor')), { kind: 'operator', name: 'constructor' });
  t.equal(ownerOfRole('ota-coordinator'), null);
  t.equal(ownerOfRole('someone-else'), null);
  // PBKDF2-HMAC-SHA512 (RFC 8018) with Mosquitto's parameters; the same inputs, the same hash.
  const salt = Buffer.alloc(12, 7);
  const a = dynsecPasswordHash('pw', salt);
  t.same(a, dynsecPasswordHash('pw', salt));
  t.equal(Buffer.from(a.password, 'base64').length, 64);
  t.equal(Buffer.from(a.salt, 'base64').length, 12);
  t.equal(a.iterations, 101);
  t.not(dynsecPasswordHash('pw').salt, dynsecPasswordHash('pw').salt, 'a fresh salt each time');
  t.equal(findDynsecPlugin(['/nonexistent/a.so']), null);
  t.equal(
    findDynsecPlugin([...DYNSEC_PLUGIN_PATHS, process.execPath]),
    findDynsecPlugin() ?? process.execPath,
    'the first that exists',
  );
});

t.test('the generated Mosquitto config', async (t) => {
  const dir = t.testdir();
  const input = {
    dir: path.join(dir, 'b'),
    host: '127.0.0.1',
    port: 1883,
    wsPort: 9001,
    runAs: 'mosquitto',
    plugin: '/p/mosquitto_dynamic_security.so',
    username: 'ota-coordinator',
    password: 'pw',
    topics: createTopics(),
    tls: { certFile: '/c.pem', keyFile: '/k.pem' },
    logFile: null,
  };
  const conf = mosquittoConf(input);
  for (const line of [
    'allow_anonymous false',
    'plugin /p/mosquitto_dynamic_security.so',
    'persistence true',
    'listener 1883 127.0.0.1',
    'certfile /c.pem',
    'listener 9001 127.0.0.1',
    'protocol websockets',
    'user mosquitto',
    'log_dest stderr',
    'set_tcp_nodelay true',
    'max_inflight_messages 1000',
  ]) {
    t.ok(conf.split('\n').includes(line), line);
  }
  const written = await writeMosquittoConfig(input);
  t.equal((await fs.stat(written.passwordFile)).mode & 0o777, 0o600, 'the password file is private');
  t.equal((await fs.stat(written.dynsec)).mode & 0o777, 0o600);
  t.equal((await fs.readFile(written.passwordFile, 'utf8')).trim(), 'pw');
  const dynsec = JSON.parse(await fs.readFile(written.dynsec, 'utf8'));
  t.match(dynsec, {
    defaultACLAccess: { publishClientSend: false, subscribe: false },
    clients: [{ username: 'ota-coordinator', roles: [{ rolename: 'ota-coordinator' }] }],
  });
  await t.rejects(writeMosquittoConfig(input), { code: 'E_EXISTS', message: /lock the whole fleet out|start over/ });
});

t.test('ota-coordinator mosquitto-config', async (t) => {
  const dir = t.testdir();
  const out = sink();
  const err = sink();
  const code = await mosquittoConfigCommand(
    ['--dir', path.join(dir, 'b'), '--port', '1999', '--plugin', '/p/dynsec.so', '--user', 'root'],
    out,
    err,
  );
  t.equal(code, 0, err.text());
  t.match(out.text(), /mosquitto -c .*mosquitto\.conf/);
  t.match(
    out.text(),
    /ota-coordinator --broker mqtt:\/\/127\.0\.0\.1:1999 --broker-user ota-coordinator --broker-password-file /,
  );
  const again = sink();
  t.equal(await mosquittoConfigCommand(['--dir', path.join(dir, 'b'), '--plugin', '/p'], sink(), again), 1);
  t.match(again.text(), /error E_EXISTS/);
  const usage = sink();
  t.equal(
    await mosquittoConfigCommand(['--dir', path.join(dir, 'c'), '--port', 'x', '--plugin', '/p'], sink(), usage),
    2,
  );
  t.match(usage.text(), /--port: "x" is not a port number/);
  const tls = sink();
  t.equal(await mosquittoConfigCommand(['--dir', path.join(dir, 'd'), '--tls-cert', 'c'], sink(), tls), 2);
  t.match(tls.text(), /--tls-cert and --tls-key go together/);
  const nouser = sink();
  if (process.getuid?.() === 0) {
    t.equal(
      await mosquittoConfigCommand(
        ['--dir', path.join(dir, 'e'), '--plugin', '/p', '--user', 'no-such-user-ota'],
        sink(),
        nouser,
      ),
      2,
    );
    t.match(nouser.text(), /no such user/);
  }
  t.equal(await mosquittoConfigCommand(['--help'], sink(), sink()), 0);
  t.equal(await mosquittoConfigCommand([], sink(), sink()), 2, '--dir is required');
});
