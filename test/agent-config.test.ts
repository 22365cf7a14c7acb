import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { loadAgentConfig } from '../agent/config.js';
import { AGENT_MAIN, writeAgentConfig } from './helpers/agent-process.js';
import { TestSigners } from './helpers/signing.js';

const signers = new TestSigners();

function base(dir: string, config: Record<string, unknown> = {}) {
  return writeAgentConfig({
    dir,
    deviceId: 'cam-1',
    brokerUrl: 'mqtt://127.0.0.1:1',
    artifactsUrl: 'http://127.0.0.1:1',
    signers,
    config,
  });
}

t.test('a complete config loads; defaults and env overrides apply', async (t) => {
  const dir = t.testdir();
  const file = base(dir);
  const c = loadAgentConfig({ file, env: {} });
  t.equal(c.deviceId, 'cam-1');
  t.equal(c.token, 'token-of-cam-1');
  t.equal(c.threshold, 1);
  t.equal(c.trustedKeys[0]?.keyId, signers.releaseKey.keyId);
  t.equal(c.stateDir, path.join(dir, 'cam-1-state'));
  t.equal(c.outboxLimit, 1000);
  const env = loadAgentConfig({
    file,
    env: {
      OTA_AGENT_BROKER_URL: 'mqtts://broker.example:8883',
      OTA_AGENT_STATE_DIR: '/tmp/x',
      OTA_AGENT_LOG_LEVEL: 'warn',
    },
  });
  t.equal(env.broker.url, 'mqtts://broker.example:8883');
  t.equal(env.stateDir, '/tmp/x');
  t.equal(env.logLevel, 'warn');
  t.match(env.source, /with OTA_AGENT_BROKER_URL, OTA_AGENT_STATE_DIR, OTA_AGENT_LOG_LEVEL/);
  t.equal(loadAgentConfig({ file, env: {}, stateDir: '/srv/s' }).stateDir, '/srv/s', '--state-dir wins');
  const noStateDir = base(dir, { stateDir: undefined });
  t.equal(
    loadAgentConfig({ file: noStateDir, env: { STATE_DIRECTORY: '/var/lib/ota-agent-x' } }).stateDir,
    '/var/lib/ota-agent-x',
  );
  writeFileSync(path.join(dir, 'token'), 'from-file\n', { mode: 0o600 });
  const tokenFile = base(dir, { token: undefined, tokenFile: path.join(dir, 'token') });
  t.equal(loadAgentConfig({ file: tokenFile, env: {} }).token, 'from-file');
});

t.test('every bad config names the key', async (t) => {
  const dir = t.testdir();
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['bad device id', { deviceId: '../x' }, /key "deviceId"/],
    ['bad broker url', { broker: { url: 'http://x' } }, /key "broker.url": must be an mqtt/],
    ['no trusted keys', { trustedKeys: [] }, /key "trustedKeys": needs at least one/],
    ['threshold above keys', { threshold: 2 }, /key "threshold": 2 is more than the 1 trusted/],
    ['unknown key', { colour: 'blue' }, /colour/],
    ['relative state dir', { stateDir: 'rel/dir' }, /key "stateDir": must be an absolute path/],
    ['no token', { token: undefined }, /key "token": missing/],
    [
      'tampered key id',
      { coordinatorKey: { ...signers.configKeys().coordinatorKey, keyId: '0'.repeat(32) } },
      /coordinatorKey\[0\].*does not match/,
    ],
    [
      'reload not allowlisted',
      { reloadActions: { det: { path: '/usr/bin/systemctl', argv: ['reload', 'app'] } } },
      /reloadActions.det.path.*not in "reloadAllowlist"/,
    ],
    ['negative timeout', { probe: { timeoutMs: -1 } }, /key "probe.timeoutMs"/],
  ];
  for (const [name, patch, message] of cases) {
    const file = base(dir, patch);
    t.throws(() => loadAgentConfig({ file, env: {} }), { code: 'E_CONFIG', message }, name);
  }
  t.throws(() => loadAgentConfig({ file: path.join(dir, 'missing.json'), env: {} }), {
    code: 'E_CONFIG',
    message: /no such file.*--agent-config/,
  });
  writeFileSync(path.join(dir, 'bad.json'), '{');
  t.throws(() => loadAgentConfig({ file: path.join(dir, 'bad.json'), env: {} }), {
    code: 'E_CONFIG',
    message: /not valid JSON/,
  });
  t.throws(() => loadAgentConfig({ file: base(dir), env: { OTA_AGENT_BROKER_URL: 'nope' } }), {
    message: /with OTA_AGENT_BROKER_URL.*broker.url/,
  });
});

t.test('ota-agent --version, --check-config (never prints the token), bad config exits 1', async (t) => {
  const dir = t.testdir();
  const version = spawnSync(process.execPath, [AGENT_MAIN, '--version'], { encoding: 'utf8' });
  t.equal(version.status, 0);
  t.match(version.stdout, /^\d+\.\d+\.\d+/);
  const check = spawnSync(process.execPath, [AGENT_MAIN, '--config', base(dir), '--check-config'], {
    encoding: 'utf8',
  });
  t.equal(check.status, 0, check.stderr);
  const summary = JSON.parse(check.stdout);
  t.equal(summary.deviceId, 'cam-1');
  t.notMatch(check.stdout, /token-of-cam-1/);
  const bad = spawnSync(process.execPath, [AGENT_MAIN, '--config', base(dir, { threshold: 0 }), '--check-config'], {
    encoding: 'utf8',
  });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /error E_CONFIG: .*key "threshold"/);
  const usage = spawnSync(process.execPath, [AGENT_MAIN, '--bogus'], { encoding: 'utf8' });
  t.equal(usage.status, 2);
});
