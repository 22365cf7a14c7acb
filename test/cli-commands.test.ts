import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import { createLogger } from '../shared/logger.js';
import type { ModelState, Reported } from '../shared/messages.js';
import { createTopics } from '../shared/topics.js';
import { otactl, startOtactl } from './helpers/cli.js';
import { freePort } from './helpers/coordinator-process.js';

// otactl against a real coordinator (in process for speed: real Aedes, SQLite and HTTP), run as
// a user runs it: the compiled binary in a child process. The CLI contract: --json documents,
// exit codes, connection resolution, messages that say what to do.

const AGENT = fileURLToPath(new URL('../dist/agent/main.js', import.meta.url));
const topics = createTopics();
const silent = createLogger('silent', process.stdout, 'ota-coordinator');

const json = <T = unknown>(text: string): T => JSON.parse(text) as T;

t.test('otactl over the command API', async (t) => {
  // One t.testdir(): a second call would empty the directory the coordinator's data is in.
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  await fs.mkdir(work);
  const at = (f: string) => path.join(work, f);
  const config = resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {});
  const running = await startCoordinator(config, { logger: silent });
  t.teardown(() => running.stop());
  const adminToken = json<AdminTokenFile>(await fs.readFile(running.adminTokenFile, 'utf8'));
  const admin = await CommandClient.connect({ url: running.mqttUrl, user: 'admin', token: adminToken.token });
  t.teardown(() => admin.close());

  // No connection settings leak in from the environment running the tests.
  const clean = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: '' };
  const env = { ...clean, OTA_DATA: dataDir };
  const run = (args: string[], extra: NodeJS.ProcessEnv = {}) => otactl(args, { cwd: work, env: { ...env, ...extra } });
  /** Runs otactl and asserts exit 0 (with its stderr when not). */
  const ok = async (t: Test, args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const r = await run(args, extra);
    t.equal(r.code, 0, `otactl ${args.join(' ')}`, { stderr: r.stderr });
    return r;
  };
  const okJson = async <T>(t: Test, args: string[], extra: NodeJS.ProcessEnv = {}) =>
    json<T>((await ok(t, [...args, '--json'], extra)).stdout);

  await t.test('usage errors exit 2 with the command help on stderr', async (t) => {
    const cases: [string[], RegExp][] = [
      [['device', 'ls', '--bogus'], /unknown option '--bogus'/],
      [['device', 'show'], /missing required argument 'id'/],
      [
        ['rollout', 'create', '--model', 'det', '--version', '1', '--devices', 'a', '--waves', '50,10'],
        /strictly increase/,
      ],
      [
        ['rollout', 'create', '--model', 'det', '--version', '1', '--devices', 'a', '--waves', '10:manual,100'],
        /wave 1 cannot be manual/,
      ],
      [
        ['rollout', 'create', '--model', 'det', '--version', '1', '--devices', 'a', '--waves', 'ten,100'],
        /not a number/,
      ],
      [['rollout', 'create', '--model', 'det', '--version', '1', '--waves', '100'], /exactly one target/],
      [
        [
          'rollout',
          'create',
          '--model',
          'det',
          '--version',
          '1',
          '--devices',
          'a',
          '--waves',
          '100',
          '--max-failure-rate',
          '1',
        ],
        /\[0, 1\)/,
      ],
      [['rollout', 'halt', 'ro-1'], /--reason/],
      [['rollout', 'abort', 'ro-1', '--policy', 'nope'], /Allowed choices are keep, revert/],
      [['group', 'create', 'g'], /exactly one/],
      [['device', 'add', 'cam-1', '--label', 'no-equals'], /key=value/],
      [['operator', 'add', 'x', '--role', 'root'], /admin, operator, viewer/],
      [['nope'], /unknown command 'nope'/],
      [['device'], /Usage: otactl device/],
    ];
    // Independent: run them side by side.
    const results = await Promise.all(cases.map(([args]) => run(args)));
    for (const [i, [args, why]] of cases.entries()) {
      const r = results[i] as Awaited<ReturnType<typeof run>>;
      t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
      t.match(r.stderr, why, `${args.join(' ')}: names the problem`);
      t.match(r.stderr, /Usage: otactl/, `${args.join(' ')}: help on stderr`);
      t.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
    }
    const help = await run(['rollout', 'status', '--help']);
    t.equal(help.code, 0);
    t.match(help.stdout, /--watch/);
    t.match(help.stdout, /--token-file <file>/, 'connection flags in every remote command help');
  });

  await t.test('connection: resolution order and failures', async (t) => {
    const port = await freePort();
    const closed = `mqtt://127.0.0.1:${port}`;
    await fs.writeFile(at('wrong.token'), 'not-the-token\n');
    await fs.writeFile(at('admin.token.txt'), `${adminToken.token}\n`);
    await fs.mkdir(path.join(dir, 'cwd', '.ota-data'), { recursive: true });
    await fs.copyFile(running.adminTokenFile, path.join(dir, 'cwd', '.ota-data', 'admin.token'));
    const asAdmin = { OTA_URL: running.mqttUrl, OTA_USER: 'admin', OTA_TOKEN: adminToken.token };
    // Independent: run side by side.
    const [refused, nothing, wrong, viaFlags, viaProgramFlags, viaEnv, noUser, viaCwd, flagWins] = await Promise.all([
      run(['device', 'ls', '--url', closed]),
      otactl(['device', 'ls'], { cwd: work, env: clean }),
      run(['device', 'ls', '--user', 'admin', '--token-file', at('wrong.token')]),
      // Explicit flags, the token in a plain file.
      otactl(
        ['device', 'ls', '--json', '--url', running.mqttUrl, '--user', 'admin', '--token-file', at('admin.token.txt')],
        { cwd: work, env: clean },
      ),
      // An admin.token given before the command: user and URL come from it.
      otactl(['--token-file', running.adminTokenFile, 'device', 'ls', '--json'], { cwd: work, env: clean }),
      otactl(['key', 'ls', '--json'], { cwd: work, env: { ...clean, ...asAdmin } }),
      otactl(['key', 'ls'], { cwd: work, env: { ...clean, ...asAdmin, OTA_USER: '' } }),
      // ./.ota-data/admin.token in the working directory.
      otactl(['key', 'ls', '--json'], { cwd: path.join(dir, 'cwd'), env: clean }),
      // The flag beats the environment.
      run(['key', 'ls', '--url', closed], { OTA_URL: running.mqttUrl }),
    ]);
    t.equal(refused.code, 1);
    t.match(refused.stderr, /error E_CONNECT/);
    t.match(refused.stderr, closed, 'names the URL');
    t.match(refused.stderr, /is ota-coordinator running/, 'says what to check');

    t.equal(nothing.code, 1);
    t.match(nothing.stderr, /E_CONFIG/);
    t.match(nothing.stderr, /--url/);
    t.match(nothing.stderr, /--token-file/);
    t.match(nothing.stderr, /OTA_DATA/);

    t.equal(wrong.code, 1);
    t.match(wrong.stderr, /error E_AUTH/);
    t.match(wrong.stderr, /wrong.token/, 'names where the token came from');

    t.equal(viaFlags.code, 0, viaFlags.stderr);
    t.same(json(viaFlags.stdout), []);
    t.equal(viaProgramFlags.code, 0, `flags before the command: ${viaProgramFlags.stderr}`);
    t.equal(viaEnv.code, 0, viaEnv.stderr);
    t.equal(noUser.code, 1);
    t.match(noUser.stderr, /--user NAME or set OTA_USER/);
    t.equal(viaCwd.code, 0, `./.ota-data/admin.token: ${viaCwd.stderr}`);
    t.equal(flagWins.code, 1);
    t.match(flagWins.stderr, closed);
  });

  await t.test('keys and releases: keygen, key add, release publish end to end', async (t) => {
    await fs.writeFile(at('v1.onnx'), goodModel(1));
    await fs.writeFile(at('v2.onnx'), goodModel(2));
    await fs.writeFile(at('probe.json'), JSON.stringify(goodProbe()));
    await ok(t, ['keygen', '--out', at('release.key')]);
    const added = await okJson<{ id: string }>(t, ['key', 'add', at('release.key.pub'), '--name', 'ci key']);
    t.match(added.id, /^[0-9a-f]{32}$/);
    const keys = await okJson<unknown[]>(t, ['key', 'ls']);
    t.match(keys, [{ id: added.id, publicKey: String, name: 'ci key', revoked: false, addedAt: String }]);
    const human = await ok(t, ['key', 'ls']);
    t.match(human.stdout, /KEY ID\s+NAME\s+STATUS/);
    t.match(human.stdout, added.id);

    const publish = (version: string, file: string, extra: string[] = []) =>
      run([
        'release',
        'publish',
        '--model',
        'det',
        '--version',
        version,
        '--file',
        at(file),
        '--key',
        at('release.key'),
        '--probe',
        at('probe.json'),
        ...extra,
      ]);
    const v1 = await publish('1.0.0', 'v1.onnx', ['--channel', 'stable', '--json', '--counter', '1']);
    t.equal(v1.code, 0, v1.stderr);
    t.match(json(v1.stdout), {
      id: 'det@1.0.0',
      model: 'det',
      version: '1.0.0',
      counter: 1,
      sha256: /^[0-9a-f]{64}$/,
      size: goodModel(1).length,
      channel: { id: 'det/stable', channel: 'stable', releaseId: 'det@1.0.0' },
    });
    t.match(v1.stderr, /uploaded/, 'progress on stderr');
    const v2 = await publish('2.0.0', 'v2.onnx', ['--counter', '2', '--out', at('v2.envelope.json')]);
    t.equal(v2.code, 0, v2.stderr);
    t.match(v2.stdout, /published\s+det@2\.0\.0 by admin/);
    t.match(json(await fs.readFile(at('v2.envelope.json'), 'utf8')), { manifest: String, signatures: Array });
    const again = await publish('2.0.0', 'v2.onnx', ['--counter', '3']);
    t.equal(again.code, 1);
    t.match(again.stderr, /E_CONFLICT/);
    const verify = await run([
      'release',
      'verify',
      '--envelope',
      at('v2.envelope.json'),
      '--file',
      at('v2.onnx'),
      '--pubkey',
      at('release.key.pub'),
    ]);
    t.equal(verify.code, 0, 'the published envelope verifies offline');

    const releases = await okJson<{ id: string; envelope?: unknown }[]>(t, ['release', 'ls']);
    t.same(releases.map((r) => r.id).sort(), ['det@1.0.0', 'det@2.0.0']);
    t.match(releases[0], { model: 'det', counter: Number, sha256: String, size: Number, publishedBy: 'admin' });
    t.notOk(
      releases.some((r) => 'envelope' in r),
      'without envelopes',
    );
    t.same(await okJson(t, ['release', 'ls', '--model', 'other']), []);
    t.match(await okJson(t, ['channel', 'ls']), [
      { model: 'det', channel: 'stable', releaseId: 'det@1.0.0', updatedAt: String },
    ]);
    const moved = await okJson<{ retargeted: string[] }>(t, ['channel', 'set', 'det', 'canary', '2.0.0']);
    t.match(moved, { channel: { channel: 'canary', releaseId: 'det@2.0.0' }, retargeted: [], skippedInRollout: [] });
  });

  await t.test('devices and groups', async (t) => {
    const cfg = at('cam-1.agent.json');
    const added = await okJson<{ token: string; agentConfigFile: string }>(t, [
      'device',
      'add',
      'cam-1',
      '--label',
      'site=hall-a',
      '--label',
      'tier=edge',
      '--agent-config',
      cfg,
    ]);
    t.match(added, {
      device: { id: 'cam-1', labels: { site: 'hall-a', tier: 'edge' }, channel: 'stable' },
      token: String,
    });
    t.equal(added.agentConfigFile, cfg);
    t.equal((await fs.stat(cfg)).mode & 0o777, 0o600, 'agent config is 0600');
    t.match(json(await fs.readFile(cfg, 'utf8')), {
      deviceId: 'cam-1',
      token: added.token,
      trustedKeys: [{ keyId: String }],
    });
    const check = await promisify(execFile)(process.execPath, [AGENT, '--check-config', '--config', cfg]);
    t.match(json(check.stdout), { ok: true, deviceId: 'cam-1', broker: running.mqttUrl, threshold: 1 });
    t.notMatch(check.stdout, added.token, 'check-config never prints the token');

    // The file exists: refused before anything is enrolled.
    const clash = await run(['device', 'add', 'cam-2', '--agent-config', cfg]);
    t.equal(clash.code, 1);
    t.match(clash.stderr, /E_EXISTS/);
    t.match(clash.stderr, /nothing was enrolled/);
    const missing = await run(['device', 'show', 'cam-2']);
    t.equal(missing.code, 1);
    t.match(missing.stderr, /E_NOT_FOUND/);

    const human = await ok(t, ['device', 'add', 'cam-2', '--label', 'site=hall-b', '--channel', 'canary']);
    t.match(human.stdout, /^token\s+\S{20,}$/m, 'the token on stdout');
    t.match(human.stderr, /shown only once/);

    const devices = await okJson<unknown[]>(t, ['device', 'ls']);
    t.match(devices, [
      { id: 'cam-1', online: false, channel: 'stable', lastSeen: null, labels: { site: 'hall-a' }, models: Object },
      { id: 'cam-2', online: false, channel: 'canary' },
    ]);
    const table = await ok(t, ['device', 'ls']);
    t.match(table.stdout, /ID\s+ONLINE\s+CHANNEL\s+MODELS\s+LAST SEEN/);
    t.match(table.stdout, /cam-1\s+offline\s+stable/);
    // Pages, by id: the hint names the next one, the last page has none.
    const first = await ok(t, ['device', 'ls', '--limit', '1']);
    t.match(first.stdout, /cam-1\s+offline\s+stable/);
    t.notMatch(first.stdout, /cam-2/);
    t.match(first.stdout, /^the next page: --after cam-1 --limit 1$/m);
    const second = await ok(t, ['device', 'ls', '--after', 'cam-1', '--limit', '1']);
    t.match(second.stdout, /cam-2\s+offline\s+canary/);
    t.notMatch(second.stdout, /cam-1|next page/, 'the last page: no hint');
    t.match(await okJson<unknown[]>(t, ['device', 'ls', '--limit', '1']), [{ id: 'cam-1' }]);
    t.equal(
      (await okJson<unknown[]>(t, ['device', 'ls', '--limit', '1'])).length,
      1,
      'the page, not the one asked for beyond it',
    );
    const none = await ok(t, ['device', 'ls', '--after', 'cam-2']);
    t.equal(none.stdout, '', 'past the last page: no rows');
    t.match(none.stderr, /^no devices after cam-2$/m, 'and why, on stderr as every empty list');
    const zero = await run(['device', 'ls', '--limit', '0']);
    t.equal(zero.code, 2, '--limit 0: a usage error');
    t.match(zero.stderr, /--limit.*at least 1/);
    const shown = await okJson(t, ['device', 'show', 'cam-1']);
    t.match(shown, {
      id: 'cam-1',
      labels: { site: 'hall-a' },
      channel: 'stable',
      online: false,
      desired: [{ model: 'det', releaseId: 'det@1.0.0', source: 'enrolment' }],
      history: [],
    });
    t.match((await ok(t, ['device', 'show', 'cam-1'])).stdout, /det\s+det@1\.0\.0\s+enrolment/);

    t.match(await okJson(t, ['group', 'create', 'hall-a', '--selector', 'site=hall-a']), {
      id: 'hall-a',
      selector: { site: 'hall-a' },
      devices: null,
    });
    await ok(t, ['group', 'create', 'both', '--devices', 'cam-1,cam-2']);
    const unknown = await run(['group', 'create', 'ghosts', '--devices', 'cam-1,ghost-9']);
    t.equal(unknown.code, 1);
    t.match(unknown.stderr, /ghost-9/);
    const groups = (await okJson<{ id: string }[]>(t, ['group', 'ls'])).sort((a, b) => a.id.localeCompare(b.id));
    t.match(groups, [
      { id: 'both', devices: ['cam-1', 'cam-2'], selector: null, createdAt: String },
      { id: 'hall-a', devices: null, selector: { site: 'hall-a' } },
    ]);

    await ok(t, ['device', 'add', 'cam-gone']);
    t.match(await okJson(t, ['device', 'rm', 'cam-gone']), { id: 'cam-gone', removed: true });
  });

  await t.test('roles: a viewer reads, and is told when a command needs another role', async (t) => {
    const vera = await okJson<{ id: string; role: string; token: string }>(t, [
      'operator',
      'add',
      'vera',
      '--role',
      'viewer',
    ]);
    t.match(vera, { id: 'vera', role: 'viewer', token: String });
    await fs.writeFile(at('vera.token'), `${vera.token}\n`, { mode: 0o600 });
    const as = ['--user', 'vera', '--token-file', at('vera.token')];
    const read = await run(['device', 'ls', '--json', ...as]);
    t.equal(read.code, 0, read.stderr);
    const refused = await run(['device', 'add', 'x-1', ...as]);
    t.equal(refused.code, 1);
    t.match(refused.stderr, /error E_FORBIDDEN/);
    t.match(refused.stderr, /refused device\.add/);
    t.match(refused.stderr, /role/);
    t.match(refused.stderr, /needs the admin role/);
    t.equal((await admin.call<unknown[]>('device.ls')).length, 2, 'nothing was enrolled');
    const upload = await run([
      'release',
      'publish',
      '--model',
      'det',
      '--version',
      '9.0.0',
      '--file',
      at('v1.onnx'),
      '--key',
      at('release.key'),
      ...as,
    ]);
    t.equal(upload.code, 1);
    t.match(upload.stderr, /E_FORBIDDEN/);
    t.match(await okJson(t, ['operator', 'ls']), [
      { id: 'admin', role: 'admin' },
      { id: 'vera', role: 'viewer' },
    ]);
    // Another role, then removal (each ends vera's sessions: test/session-cut.test.ts).
    t.match((await ok(t, ['operator', 'role', 'vera', '--role', 'operator'])).stdout, /operator vera is now operator/);
    t.match(await okJson(t, ['operator', 'role', 'vera', '--role', 'viewer']), { id: 'vera', role: 'viewer' });
    t.match((await ok(t, ['operator', 'rm', 'vera'])).stdout, /removed operator vera/);
    const gone = await run(['device', 'ls', ...as]);
    t.equal(gone.code, 1);
    t.match(gone.stderr, /error E_AUTH/, 'her token no longer works');
    const self = await run(['operator', 'rm', 'admin']);
    t.equal(self.code, 2, 'E_USAGE');
    t.match(self.stderr, /cannot remove your own account/);
  });

  await t.test('rollouts: status --watch exits 0 completed, 1 halted or aborted, 130 on Ctrl-C', async (t) => {
    const devices = new Map<string, MqttClient>();
    t.teardown(async () => {
      for (const c of devices.values()) await c.endAsync(true);
    });
    /** Enrols a device and connects as it (its own client id, user and token), online. */
    const device = async (t: Test, id: string) => {
      const { token } = await okJson<{ token: string }>(t, ['device', 'add', id, '--label', 'fleet=watch']);
      const client = await mqtt.connectAsync(running.mqttUrl, {
        clientId: id,
        username: id,
        password: token,
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      devices.set(id, client);
      await client.publishAsync(topics.status(id), JSON.stringify({ online: true, ts: new Date().toISOString() }), {
        qos: 1,
        retain: true,
      });
      // 30 s only stops a hung test: a busy machine may take seconds to record the status.
      for (const until = Date.now() + 30_000; Date.now() < until; ) {
        const rows = await admin.call<{ id: string; online: boolean }[]>('device.ls');
        if (rows.find((d) => d.id === id)?.online) return client;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`${id} never came online`);
    };
    const report = (id: string, rolloutId: string, state: ModelState) => {
      const ts = new Date().toISOString();
      const failed = state === 'failed' || state === 'rolled_back';
      const reported: Reported = {
        deviceId: id,
        seq: 1,
        ts,
        models: {
          det: {
            state,
            version: '2.0.0',
            current: failed ? '1.0.0' : '2.0.0',
            previousVersion: '1.0.0',
            rolloutId,
            progress: null,
            attempt: 1,
            error: failed ? { code: 'E_PROBE_FAILED', message: 'outputs differ from the golden outputs' } : null,
            updatedAt: ts,
          },
        },
        rejected: null,
      };
      return devices.get(id)?.publishAsync(topics.reported(id), JSON.stringify(reported), { qos: 1, retain: true });
    };
    const create = (t: Test, id: string, target: string[]) =>
      okJson<{ id: string; status: string; waves: { devices: number }[] }>(t, [
        'rollout',
        'create',
        '--id',
        id,
        '--model',
        'det',
        '--version',
        '2.0.0',
        ...target,
        '--waves',
        '100',
      ]);
    const watch = (id: string, extra: string[] = []) =>
      startOtactl(['rollout', 'status', id, '--watch', '--interval-ms', '500', ...extra], { cwd: work, env });

    await t.test('completed: exit 0, NDJSON summaries with --json', async (t) => {
      await device(t, 'w-ok');
      const created = await create(t, 'ro-ok', ['--devices', 'w-ok']);
      t.match(created, { id: 'ro-ok', status: 'running', waves: [{ wave: 1, devices: 1 }] });
      const w = watch('ro-ok', ['--json']);
      await w.waitForStdout(/"status":"running"/);
      await report('w-ok', 'ro-ok', 'downloading');
      await report('w-ok', 'ro-ok', 'healthy');
      const r = await w.result;
      t.equal(r.code, 0, r.stderr);
      const lines = r.stdout
        .trim()
        .split('\n')
        .map((l) => json<{ status: string; id: string }>(l));
      t.ok(lines.length >= 2, 'one summary per change');
      t.match(lines[0], { id: 'ro-ok', status: 'running' });
      t.match(lines.at(-1), { id: 'ro-ok', status: 'completed', failures: { count: 0 } });
      t.match(r.stderr, /rollout ro-ok completed/);
      // Watching a finished rollout prints its state and exits at once.
      const done = await run(['rollout', 'status', 'ro-ok', '--watch']);
      t.equal(done.code, 0);
      t.match(done.stdout, /ro-ok completed/);
    });

    await t.test('halted: exit 1, the halt reason shown', async (t) => {
      await device(t, 'w-bad');
      await create(t, 'ro-bad', ['--devices', 'w-bad']);
      const w = watch('ro-bad');
      await w.waitForStdout(/ro-bad running/);
      await report('w-bad', 'ro-bad', 'rolled_back');
      const r = await w.result;
      t.equal(r.code, 1, r.stderr);
      t.match(r.stdout, /ro-bad halted/);
      t.match(r.stdout, /failures=1\/1/);
      // The current wave's rows, as the coordinator ranked and paged them for the watch.
      t.match(r.stdout, /devices=w-bad=/);
      t.match(r.stderr, /rollout ro-bad halted/);
      t.match(r.stderr, /otactl rollout resume ro-bad/, 'says what to do next');
      const status = await okJson<{ summary: unknown; rollout: unknown; devices: unknown[] }>(t, [
        'rollout',
        'status',
        'ro-bad',
      ]);
      t.match(status, {
        summary: {
          id: 'ro-bad',
          model: 'det',
          version: '2.0.0',
          status: 'halted',
          haltReason: String,
          failures: { count: 1, rate: 1 },
        },
        rollout: { channel: 'stable', createdBy: String },
        devices: [{ id: 'w-bad', wave: 1, state: 'rolled_back', error: { code: 'E_PROBE_FAILED' }, revertedTo: null }],
      });
      const human = await ok(t, ['rollout', 'status', 'ro-bad']);
      t.match(human.stdout, /failures\s+1 of 1 assigned: rate 100% > tolerance 0%/);
      t.match(human.stdout, /w-bad\s+1\s+rolled_back/);
      t.match(await okJson(t, ['rollout', 'abort', 'ro-bad', '--policy', 'revert']), { status: 'aborted' });
    });

    await t.test('aborted: exit 1; Ctrl-C: exit 130', async (t) => {
      await device(t, 'w-abort');
      await create(t, 'ro-abort', ['--devices', 'w-abort']);
      const first = watch('ro-abort');
      await first.waitForStdout(/ro-abort running/);
      first.child.kill('SIGINT');
      const interrupted = await first.result;
      t.equal(interrupted.code, 130, 'Ctrl-C exits 130');
      t.match(interrupted.stderr, /stopped watching/);

      const w = watch('ro-abort');
      await w.waitForStdout(/ro-abort running/);
      const approve = await run(['rollout', 'approve', 'ro-abort']);
      t.equal(approve.code, 1);
      t.match(approve.stderr, /E_ROLLOUT_STATE/);
      const halted = await okJson(t, ['rollout', 'halt', 'ro-abort', '--reason', 'checking the canary']);
      t.match(halted, { status: 'halted', haltReason: /checking the canary/ });
      t.equal((await w.result).code, 1, 'a halt ends the watch with 1');
      t.match(await okJson(t, ['rollout', 'resume', 'ro-abort']), { status: 'running' });
      const again = watch('ro-abort');
      await again.waitForStdout(/ro-abort running/);
      const abort = await ok(t, ['rollout', 'abort', 'ro-abort']);
      t.match(abort.stdout, /aborted/);
      const r = await again.result;
      t.equal(r.code, 1);
      t.match(r.stdout, /ro-abort aborted/);
    });

    await t.test('create prints the wave split; ls lists', async (t) => {
      await device(t, 'w-split-1');
      await device(t, 'w-split-2');
      const created = await ok(t, [
        'rollout',
        'create',
        '--id',
        'ro-split',
        '--model',
        'det',
        '--version',
        '2.0.0',
        '--selector',
        'fleet=watch',
        '--waves',
        '50,100:manual',
        '--max-failure-rate',
        '0.5',
      ]);
      t.match(created.stdout, /rollout ro-split created: det 2\.0\.0 on 5 device\(s\)/);
      t.match(created.stdout, /WAVE\s+UP TO\s+GATE\s+DEVICES\s+IDS/);
      t.match(created.stdout, /^1\s+50%\s+auto\s+3\s/m, 'waves numbered from 1');
      t.match(created.stdout, /^2\s+100%\s+manual\s+2\s/m);
      // Each wave's ids, asked for wave by wave (the first few of each).
      const split = await okJson<{ devices: { id: string; wave: number }[] }>(t, ['rollout', 'status', 'ro-split']);
      for (const [wave, n] of [
        [1, 3],
        [2, 2],
      ] as const) {
        const ids = split.devices.filter((d) => d.wave === wave).map((d) => d.id);
        t.equal(ids.length, n);
        t.match(
          created.stdout,
          new RegExp(`^${wave}\\s+\\d+%\\s+\\w+\\s+${n}\\s+${ids.join(',')}\\s*$`, 'm'),
          `wave ${wave}: ${ids}`,
        );
      }
      const conflict = await run([
        'rollout',
        'create',
        '--model',
        'det',
        '--version',
        '2.0.0',
        '--devices',
        'w-split-1,ghost-1',
        '--waves',
        '100',
      ]);
      t.equal(conflict.code, 1);
      t.match(conflict.stderr, /ghost-1/, 'unresolved names listed');
      const rollouts = await okJson<{ id: string }[]>(t, ['rollout', 'ls']);
      t.same(rollouts.map((r) => r.id).sort(), ['ro-abort', 'ro-bad', 'ro-ok', 'ro-split']);
      t.match(
        rollouts.find((r) => r.id === 'ro-split'),
        {
          model: 'det',
          version: '2.0.0',
          maxFailureRate: 0.5,
          failures: { count: 0 },
          waves: [
            { wave: 1, percent: 50, approval: 'auto' },
            { wave: 2, percent: 100, approval: 'manual' },
          ],
        },
      );
      t.match((await ok(t, ['rollout', 'ls'])).stdout, /ro-split\s+det\s+2\.0\.0/);
      await ok(t, ['rollout', 'abort', 'ro-split']);
    });

    await t.test('status lists a page of the devices when asked, and says where the next starts', async (t) => {
      for (const id of ['p-1', 'p-2', 'p-3']) await device(t, id);
      await create(t, 'ro-page', ['--devices', 'p-1,p-2,p-3']);
      const all = await okJson<{ devices: { id: string }[]; devicesTotal: number }>(t, [
        'rollout',
        'status',
        'ro-page',
      ]);
      t.equal(all.devicesTotal, 3);
      const ids = all.devices.map((d) => d.id);
      t.same([...ids].sort(), ['p-1', 'p-2', 'p-3'], 'no page: every device');
      const first = await okJson<{ devices: { id: string }[]; devicesTotal: number }>(t, [
        'rollout',
        'status',
        'ro-page',
        '--limit',
        '2',
      ]);
      t.same(
        first.devices.map((d) => d.id),
        ids.slice(0, 2),
        'the first page, in the same order',
      );
      t.equal(first.devicesTotal, 3);
      const human = await ok(t, ['rollout', 'status', 'ro-page', '--limit', '2']);
      t.match(human.stdout, /devices 1-2 of 3; the next page: --offset 2 --limit 2/);
      const last = await ok(t, ['rollout', 'status', 'ro-page', '--offset', '2', '--limit', '2']);
      t.match(last.stdout, new RegExp(`${ids[2]}\\s+1\\s+assigned`), 'the last page has the third device');
      t.notMatch(last.stdout, new RegExp(`${ids[0]}\\s`), 'and not the first');
      t.match(last.stdout, /devices 3-3 of 3\n/);
      t.notMatch(last.stdout, /next page/);
      const past = await ok(t, ['rollout', 'status', 'ro-page', '--offset', '5']);
      t.match(past.stdout, /no devices from --offset 5: the rollout has 3/);
      const bad = await run(['rollout', 'status', 'ro-page', '--offset', '-1']);
      t.equal(bad.code, 2, 'a negative offset is a usage error');
      t.match(bad.stderr, /--offset/);
      const watching = await run(['rollout', 'status', 'ro-page', '--watch', '--limit', '2']);
      t.equal(watching.code, 2, '--watch with a page is a usage error');
      t.match(
        watching.stderr,
        /--watch follows the summary; --wave, --state, --offset and --limit choose the devices listed without it/,
      );
      // Filtered by the coordinator: by state and wave, paged after, the next page keeps the filter.
      const assigned = await okJson<{ devices: { id: string; state: string }[]; devicesTotal: number }>(t, [
        'rollout',
        'status',
        'ro-page',
        '--state',
        'assigned',
        '--wave',
        '1',
        '--limit',
        '2',
      ]);
      t.equal(assigned.devicesTotal, 3, 'every device is assigned, in wave 1');
      t.same(
        assigned.devices.map((d) => d.id),
        ids.slice(0, 2),
      );
      const filteredHuman = await ok(t, ['rollout', 'status', 'ro-page', '--state', 'assigned', '--limit', '2']);
      t.match(filteredHuman.stdout, /devices 1-2 of 3; the next page: --state assigned --offset 2 --limit 2/);
      const noneFailed = await ok(t, ['rollout', 'status', 'ro-page', '--state', 'failed']);
      t.match(noneFailed.stdout, /no devices match --state failed\n/);
      const pastFiltered = await ok(t, ['rollout', 'status', 'ro-page', '--wave', '1', '--offset', '7']);
      t.match(pastFiltered.stdout, /no devices from --offset 7: 3 match --wave 1\n/);
      const noWave = await okJson<{ devices: unknown[]; devicesTotal: number }>(t, [
        'rollout',
        'status',
        'ro-page',
        '--wave',
        '2',
      ]);
      t.match(noWave, { devices: [], devicesTotal: 0 }, 'a wave the rollout does not have: none');
      const badState = await run(['rollout', 'status', 'ro-page', '--state', 'sideways']);
      t.equal(badState.code, 2, 'an unknown state is a usage error');
      t.match(badState.stderr, /--state[\s\S]*sideways[\s\S]*Allowed choices are pending, assigned/);
      const watchingFiltered = await run(['rollout', 'status', 'ro-page', '--watch', '--state', 'failed']);
      t.equal(watchingFiltered.code, 2, '--watch with a filter is a usage error');
      // The command API checks them itself (fleet scripts call it without otactl).
      await t.rejects(admin.call('rollout.status', { id: 'ro-page', limit: 0 }), {
        code: 'E_USAGE',
        message: /rollout\.status: argument limit: /,
      });
      await t.rejects(admin.call('rollout.status', { id: 'ro-page', offset: 1.5 }), {
        code: 'E_USAGE',
        message: /rollout\.status: argument offset: /,
      });
      await t.rejects(admin.call('rollout.status', { id: 'ro-page', state: 'sideways' }), {
        code: 'E_USAGE',
        message: /rollout\.status: argument state: /,
      });
      await t.rejects(admin.call('rollout.status', { id: 'ro-page', wave: 0 }), {
        code: 'E_USAGE',
        message: /rollout\.status: argument wave: /,
      });
      // device.ls's page, checked by the coordinator as well (not only by otactl's flags).
      await t.rejects(admin.call('device.ls', { limit: 0 }), {
        code: 'E_USAGE',
        message: /device\.ls: argument limit: /,
      });
      await t.rejects(admin.call('device.ls', { after: 'no spaces' }), {
        code: 'E_USAGE',
        message: /device\.ls: argument after: /,
      });
      t.same(await admin.call('device.ls', { after: 'zzzz' }), [], 'after every id: an empty page');
    });
  });

  await t.test('audit: ls, verify, export; a tampered chain exits 1 naming the first bad seq', async (t) => {
    const events = await okJson<{ seq: number; action: string; actor: string }[]>(t, [
      'audit',
      'ls',
      '--limit',
      '1000',
    ]);
    t.ok(events.length > 10);
    t.match(events[0], { seq: 1, ts: String, actor: String, action: String, details: Object, hash: /^[0-9a-f]{64}$/ });
    const forRollout = await okJson<{ subject: string | null; action: string }[]>(t, [
      'audit',
      'ls',
      '--rollout',
      'ro-bad',
    ]);
    t.ok(
      forRollout.some((e) => e.action === 'rollout.halted'),
      'the halt is in the rollout trail',
    );
    t.equal((await okJson<unknown[]>(t, ['audit', 'ls', '--limit', '2'])).length, 2);
    t.match((await ok(t, ['audit', 'ls', '--rollout', 'ro-bad'])).stdout, /SEQ\s+TIME\s+ACTOR\s+ACTION/);

    const verdict = await okJson<{ ok: boolean; count: number; head: string }>(t, ['audit', 'verify']);
    t.match(verdict, { ok: true, count: Number, head: /^[0-9a-f]{64}$/, firstBad: null });
    const human = await ok(t, ['audit', 'verify']);
    t.match(human.stdout, /audit chain\s+verifies/);
    t.match(human.stdout, new RegExp(`events\\s+${verdict.count}`));

    const exported = await ok(t, ['audit', 'export']);
    const lines = exported.stdout
      .trim()
      .split('\n')
      .map((l) => json<Record<string, unknown>>(l));
    const last = lines.pop();
    t.match(last, { verdict: { ok: true, count: verdict.count, head: verdict.head } });
    t.equal(lines.length, verdict.count, 'every event, then the verdict');
    t.same(
      lines.map((e) => e.seq),
      lines.map((_, i) => i + 1),
    );
    await ok(t, ['audit', 'export', '--out', at('audit.ndjson')]);
    t.equal((await fs.readFile(at('audit.ndjson'), 'utf8')).trim(), exported.stdout.trim());

    // Someone with the database file edits a row behind the coordinator's back.
    const db = new Database(path.join(dataDir, 'coordinator.db'));
    const triggers = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")
      .all() as { name: string }[];
    for (const { name } of triggers) db.exec(`DROP TRIGGER "${name}"`);
    db.prepare('UPDATE audit SET actor = ? WHERE seq = ?').run('mallory', 3);
    db.close();
    const bad = await run(['audit', 'verify']);
    t.equal(bad.code, 1);
    t.match(bad.stdout, /first bad\s+3/);
    t.match(bad.stderr, /E_AUDIT_CHAIN/);
    t.match(bad.stderr, /first bad seq 3/);
    const badJson = await run(['audit', 'verify', '--json']);
    t.equal(badJson.code, 1);
    t.match(json(badJson.stdout), { ok: false, firstBad: 3 });
    const badExport = await run(['audit', 'export']);
    t.equal(badExport.code, 1);
    t.match(json(badExport.stdout.trim().split('\n').at(-1) ?? ''), { verdict: { ok: false, firstBad: 3 } });
  });
});
