import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { loadAgentConfig } from '../agent/config.js';
import { DEVICE_SECRET_RULE, openBitsInWords, PRIVATE_KEY_RULE } from '../shared/file-permissions.js';
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

// Issue 12 item 11: the device token must not be readable by other users of the device. Group
// read is expected (install-agent.sh installs the config 0640 root:ota-agent, the agent runs as
// ota-agent); "others" may neither read a file holding the token nor write the config or token
// file (which would let them swap the trusted keys or the token).
t.test('a device token other users can read is refused at start and by --check-config', async (t) => {
  const dir = t.testdir();
  /** The test config (inline token unless patched) as `name`, with exactly `mode`. */
  const configAt = (name: string, mode: number, patch: Record<string, unknown> = {}) => {
    const file = path.join(dir, name);
    writeFileSync(file, readFileSync(base(dir, patch)));
    chmodSync(file, mode);
    return file;
  };
  const tokenAt = (name: string, mode: number) => {
    const file = path.join(dir, name);
    writeFileSync(file, 'from-file\n');
    chmodSync(file, mode);
    return file;
  };
  const withTokenFile = (tokenFile: string, mode = 0o600, name = 'tf.json') =>
    configAt(name, mode, { token: undefined, tokenFile });
  const refusedBecause = (file: string, fix: string) => ({
    code: 'E_FILE_PERMISSIONS',
    message: new RegExp(`${file}.* by others \\(mode \\d+\\); run: chmod o-rw ${fix}`),
  });

  // Refused: an inline token in a config others can read; a token file others can read; a config
  // or token file others can write (whether or not it holds the token).
  const readableConfig = configAt('inline-644.json', 0o644);
  t.throws(() => loadAgentConfig({ file: readableConfig, env: {} }), refusedBecause(readableConfig, readableConfig));
  const readableToken = tokenAt('token-644', 0o644);
  const viaReadableToken = withTokenFile(readableToken);
  t.throws(() => loadAgentConfig({ file: viaReadableToken, env: {} }), refusedBecause(readableToken, readableToken));
  t.throws(
    () =>
      loadAgentConfig({
        file: withTokenFile(tokenAt('token-600', 0o600), 0o600, 'env.json'),
        env: { OTA_AGENT_TOKEN_FILE: readableToken },
      }),
    refusedBecause(readableToken, readableToken),
    'a token file named by OTA_AGENT_TOKEN_FILE too',
  );
  const writableConfig = withTokenFile(tokenAt('token-600b', 0o600), 0o642, 'tf-642.json');
  t.throws(() => loadAgentConfig({ file: writableConfig, env: {} }), refusedBecause(writableConfig, writableConfig));
  const writableToken = tokenAt('token-602', 0o602);
  t.throws(
    () => loadAgentConfig({ file: withTokenFile(writableToken), env: {} }),
    refusedBecause(writableToken, writableToken),
  );
  // A symlink is judged by its target (the link's own mode is always 0777).
  const link = path.join(dir, 'token-link');
  symlinkSync(readableToken, link);
  t.throws(() => loadAgentConfig({ file: withTokenFile(link), env: {} }), refusedBecause(link, readableToken));

  // Accepted: private, group-readable (root:ota-agent 0640), a config without the token others
  // may read, a symlink to a private token.
  for (const [what, file] of [
    ['inline token, 0600', configAt('inline-600.json', 0o600)],
    ['inline token, 0640', configAt('inline-640.json', 0o640)],
    ['token file 0640, config 0640', withTokenFile(tokenAt('token-640', 0o640), 0o640, 'tf-640.json')],
    [
      'token file 0600, config without the token 0644',
      withTokenFile(tokenAt('token-600c', 0o600), 0o644, 'tf-644.json'),
    ],
  ] as const) {
    t.equal(loadAgentConfig({ file, env: {} }).deviceId, 'cam-1', what);
  }
  const goodLink = path.join(dir, 'token-link-600');
  symlinkSync(tokenAt('token-600d', 0o600), goodLink);
  t.equal(
    loadAgentConfig({ file: withTokenFile(goodLink, 0o600, 'link.json'), env: {} }).token,
    'from-file',
    'symlink to 0600',
  );

  // The real agent: refused by --check-config and at start (exit 1 with the message and the
  // chmod; `timeout` only bounds a start that was not refused), accepted at 0640 and 0600.
  for (const args of [['--check-config'], []]) {
    const cases: [string, string][] = [
      [readableConfig, readableConfig],
      [viaReadableToken, readableToken],
    ];
    for (const [file, named] of cases) {
      const run = spawnSync(process.execPath, [AGENT_MAIN, '--config', file, ...args], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      t.equal(run.status, 1, `${args.join(' ') || 'start'} ${path.basename(file)}: exit 1 (${run.signal ?? ''})`);
      t.match(run.stderr, `error E_FILE_PERMISSIONS: `);
      t.match(run.stderr, `chmod o-rw ${named}`);
      t.notMatch(run.stderr + run.stdout, /token-of-cam-1|from-file/, 'the token is not printed');
    }
  }
  for (const mode of [0o640, 0o600]) {
    const file = configAt(`check-${mode.toString(8)}.json`, mode);
    const check = spawnSync(process.execPath, [AGENT_MAIN, '--config', file, '--check-config'], { encoding: 'utf8' });
    t.equal(check.status, 0, `--check-config accepts ${mode.toString(8)}: ${check.stderr}`);
  }
});

t.test('openBitsInWords: what a mode opens to whom, under each rule', async (t) => {
  const device = DEVICE_SECRET_RULE.forbidden;
  const key = PRIVATE_KEY_RULE.forbidden;
  t.equal(openBitsInWords(0o100600, device), null, '0600');
  t.equal(openBitsInWords(0o100640, device), null, '0640: group read is allowed for device secrets');
  t.equal(openBitsInWords(0o100660, device), null, '0660: group write too (root:ota-agent is trusted)');
  t.equal(openBitsInWords(0o100644, device), 'readable by others');
  t.equal(openBitsInWords(0o100602, device), 'writable by others');
  t.equal(openBitsInWords(0o100666, device), 'readable by others, writable by others');
  t.equal(openBitsInWords(0o100601, device), null, 'execute alone reveals nothing');
  t.equal(openBitsInWords(0o100640, key), 'readable by group', 'a private key: group read is refused');
  t.equal(openBitsInWords(0o100755, key), 'readable by group and others, executable by group and others');
});
