import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { AGENT_NODE_FLAGS, childExecArgv } from '../agent/node-flags.js';
import { COORDINATOR_NODE_FLAGS } from '../coordinator/node-flags.js';
import { packagedUnit, pathUnit } from '../scripts/package/deb-files.js';
import { createNotifier, withoutNotifyEnv } from '../shared/systemd-notify.js';

/**
 * systemd integration: the unit's sandbox score (systemd-analyze), the notifier against a real
 * AF_UNIX datagram socket with the real systemd-notify binary, and install-agent.sh in --root
 * (dry-run) mode. Each part skips with a reason when its tool is missing on this machine.
 */

const REPO = fileURLToPath(new URL('..', import.meta.url));
const UNIT = path.join(REPO, 'systemd', 'ota-agent.service');
const INSTALL = path.join(REPO, 'scripts', 'install-agent.sh');
const MAX_EXPOSURE = 2.0;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started at all (ENOENT: not installed). */
  spawnError?: NodeJS.ErrnoException;
}

function run(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
  return new Promise<RunResult>((resolve) => {
    execFile(
      file,
      args,
      { env: options.env ?? process.env, timeout: options.timeoutMs ?? 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
        if (e && typeof e.code === 'string') {
          resolve({ code: null, stdout: String(stdout), stderr: String(stderr), spawnError: e });
          return;
        }
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout, stderr });
      },
    );
  });
}

async function missing(file: string, args: string[]): Promise<string | false> {
  const r = await run(file, args, { timeoutMs: 10_000 });
  return r.spawnError ? `${file} is not installed (${r.spawnError.code})` : false;
}

const noSystemdAnalyze = await missing('systemd-analyze', ['--version']);
const noSystemdNotify = await missing('systemd-notify', ['--version']);
const noPython = await missing('python3', ['--version']);
const noBash = await missing('bash', ['--version']);

t.test('the unit', async (t) => {
  const unit = await fs.readFile(UNIT, 'utf8');
  const directives = unit
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#') && !line.startsWith('['));
  for (const expected of [
    'Type=notify',
    'NotifyAccess=all',
    'WatchdogSec=60',
    'Restart=on-failure',
    'User=ota-agent',
    'StateDirectory=ota-agent',
    'ConfigurationDirectory=ota-agent',
    'ProtectSystem=strict',
    'CapabilityBoundingSet=',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
    'ExecStart=/usr/local/bin/ota-agent --config /etc/ota-agent/config.json',
  ]) {
    t.ok(directives.includes(expected), expected);
  }
  // V8's JIT needs writable+executable pages; ProcSubset=pid would hide /proc/cpuinfo and meminfo.
  t.notOk(
    directives.some((d) => d.startsWith('MemoryDenyWriteExecute=')),
    'no MemoryDenyWriteExecute',
  );
  t.notOk(
    directives.some((d) => d.startsWith('ProcSubset=')),
    'no ProcSubset',
  );
  t.notOk(
    directives.some((d) => d.startsWith('DynamicUser=')),
    'a static user',
  );
});

// Run once up front, so that an old systemd-analyze (no --offline, systemd < 250) skips the test.
const security = noSystemdAnalyze
  ? null
  : await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', UNIT], {
      env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: 'cat' },
    });
const securityOutput = security ? `${security.stdout}\n${security.stderr}` : '';
const noOffline = /unrecognized option|unknown option|invalid option/i.test(securityOutput)
  ? `this systemd-analyze does not support --offline (systemd >= 250 does): ${security?.stderr.trim()}`
  : false;

t.test(
  `systemd-analyze security --offline=yes: overall exposure <= ${MAX_EXPOSURE}`,
  { skip: noSystemdAnalyze || noOffline },
  async (t) => {
    const m = /Overall exposure level for [^:]+: ([0-9]+(?:\.[0-9]+)?)/.exec(securityOutput);
    t.match(securityOutput, /Overall exposure level for/, 'the overall line is printed');
    const exposure = Number(m?.[1]);
    t.ok(exposure <= MAX_EXPOSURE, `exposure ${exposure} <= ${MAX_EXPOSURE}`);
    t.comment(m?.[0] ?? '');
  },
);

t.test(`the coordinator unit too: exposure <= ${MAX_EXPOSURE}`, { skip: noSystemdAnalyze || noOffline }, async (t) => {
  const unit = path.join(REPO, 'systemd', 'ota-coordinator.service');
  const r = await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], {
    env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: 'cat' },
  });
  const m = /Overall exposure level for [^:]+: ([0-9]+(?:\.[0-9]+)?)/.exec(`${r.stdout}\n${r.stderr}`);
  t.ok(m, 'the overall line is printed');
  t.ok(Number(m?.[1]) <= MAX_EXPOSURE, `exposure ${m?.[1]} <= ${MAX_EXPOSURE}`);
});

t.test(
  `the .deb's units: exposure <= ${MAX_EXPOSURE}, and verify accepts both`,
  { skip: noSystemdAnalyze || noOffline },
  async (t) => {
    // The agent's package (scripts/package/deb-files.ts) rewrites ExecStart= and adds
    // ExecStartPre=+ (own-config, as root): the sandbox must score as before.
    const dir = t.testdir({});
    const unit = path.join(dir, 'ota-agent.service');
    await fs.writeFile(unit, packagedUnit(await fs.readFile(UNIT, 'utf8')));
    const r = await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], {
      env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: 'cat' },
    });
    const m = /Overall exposure level for [^:]+: ([0-9]+(?:\.[0-9]+)?)/.exec(`${r.stdout}\n${r.stderr}`);
    t.ok(m, 'the overall line is printed');
    t.ok(Number(m?.[1]) <= MAX_EXPOSURE, `exposure ${m?.[1]} <= ${MAX_EXPOSURE}`);

    // verify needs the programs to exist here: the same units with /bin/true in their place.
    await fs.writeFile(
      unit,
      packagedUnit(await fs.readFile(UNIT, 'utf8'))
        .replace(/^ExecStart=\S+/m, 'ExecStart=/bin/true')
        .replace(/^ExecStartPre=\+\S+/m, 'ExecStartPre=+/bin/true'),
    );
    // …and verify runs `man` for each man: link: ota-agent(1) is not installed here.
    const noMan = (text: string) => text.replace(/ ?man:ota-agent\(1\)/g, '');
    await fs.writeFile(unit, noMan(await fs.readFile(unit, 'utf8')));
    await fs.writeFile(path.join(dir, 'ota-agent.path'), noMan(pathUnit()));
    const v = await run('systemd-analyze', ['verify', unit, path.join(dir, 'ota-agent.path')], {
      env: { ...process.env, SYSTEMD_COLORS: '0' },
    });
    t.equal(v.code, 0, `exit code\n${v.stdout}${v.stderr}`);
    t.notMatch(v.stderr, /ota-agent\.(service|path):\d+:/, 'no complaint about a line of either unit');
  },
);

t.test('systemd-analyze verify accepts the unit', { skip: noSystemdAnalyze }, async (t) => {
  // verify insists that ExecStart= exists on this machine; the agent is not installed here,
  // so check a copy that starts /bin/true instead (every other line unchanged).
  const dir = t.testdir({});
  const unit = await fs.readFile(UNIT, 'utf8');
  const copy = path.join(dir, 'ota-agent.service');
  await fs.writeFile(copy, unit.replace(/^ExecStart=\S+/m, 'ExecStart=/bin/true'));
  const r = await run('systemd-analyze', ['verify', copy], { env: { ...process.env, SYSTEMD_COLORS: '0' } });
  t.equal(r.code, 0, `exit code\n${r.stdout}${r.stderr}`);
  t.notMatch(r.stderr, /ota-agent\.service:\d+:/, 'no complaint about a line of the unit');
});

/** A real AF_UNIX SOCK_DGRAM socket (python3) that prints each datagram it receives as a JSON line. */
const RECEIVER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(float(sys.argv[2]))
print(json.dumps("bound"), flush=True)
while True:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    # recv() without an ancillary buffer: the kernel closes the fd systemd-notify passes with
    # BARRIER=1, which ends its wait as the service manager would.
    print(json.dumps(data.decode("utf-8", "replace")), flush=True)
`;

interface Receiver {
  socket: string;
  /** Resolves with the next n datagrams that are not BARRIER=1. */
  next(n: number): Promise<string[]>;
  child: ChildProcess;
}

async function startReceiver(t: Test): Promise<Receiver> {
  // AF_UNIX paths are limited to 108 bytes: a short directory under the system temp dir.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-notify-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const socket = path.join(dir, 'notify.sock');
  const child = spawn('python3', ['-c', RECEIVER, socket, '30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const received: string[] = [];
  let waiter: (() => void) | null = null;
  let bound: () => void = () => {};
  const isBound = new Promise<void>((resolve) => {
    bound = resolve;
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const message = JSON.parse(line) as string;
    if (message === 'bound') bound();
    else if (message !== 'BARRIER=1') received.push(message);
    waiter?.();
  });
  let bindTimer: NodeJS.Timeout | undefined;
  await Promise.race([
    isBound,
    new Promise((_, reject) => {
      bindTimer = setTimeout(() => reject(new Error('the python3 receiver did not bind')), 10_000);
    }),
  ]).finally(() => clearTimeout(bindTimer));
  return {
    socket,
    child,
    async next(n) {
      const deadline = Date.now() + 10_000;
      while (received.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} datagrams, got ${JSON.stringify(received)}`);
        await new Promise<void>((resolve) => {
          waiter = resolve;
          setTimeout(resolve, 100);
        });
      }
      return received.splice(0, n);
    },
  };
}

t.test('the notifier delivers through the real systemd-notify', { skip: noSystemdNotify || noPython }, async (t) => {
  const receiver = await startReceiver(t);
  const errors: Error[] = [];
  const notifier = createNotifier(
    { PATH: process.env.PATH, NOTIFY_SOCKET: receiver.socket, WATCHDOG_USEC: '60000000' },
    { onError: (err) => errors.push(err) },
  );
  t.equal(notifier.enabled, true);
  t.equal(notifier.watchdogIntervalMs, 30_000, 'WATCHDOG_USEC / 2, in ms');

  await notifier.ready();
  t.same(await receiver.next(1), ['READY=1']);
  await notifier.watchdog();
  t.same(await receiver.next(1), ['WATCHDOG=1']);
  await notifier.status('downloading detector 2.1.0 (42%)');
  t.same(await receiver.next(1), ['STATUS=downloading detector 2.1.0 (42%)']);
  await notifier.ready('broker not reachable yet; working offline');
  t.same(await receiver.next(1), ['READY=1\nSTATUS=broker not reachable yet; working offline']);
  // A newline cannot smuggle in another assignment; a leading "--" is not taken for an option.
  await notifier.status('--help\nREADY=1');
  t.same(await receiver.next(1), ['STATUS=--help READY=1']);
  await notifier.stopping();
  t.same(await receiver.next(1), ['STOPPING=1']);

  // Calls made without waiting arrive in call order; queued watchdog pings collapse into one.
  await Promise.all([
    notifier.status('one'),
    notifier.watchdog(),
    notifier.watchdog(),
    notifier.watchdog(),
    notifier.status('two'),
  ]);
  t.same(await receiver.next(3), ['STATUS=one', 'WATCHDOG=1', 'STATUS=two']);
  t.same(errors, [], 'no errors');
  t.equal(notifier.lastError, null);
});

t.test('a failed send resolves and is reported, never thrown', { skip: noSystemdNotify }, async (t) => {
  const dir = t.testdir({});
  const errors: Error[] = [];
  const notifier = createNotifier(
    { PATH: process.env.PATH, NOTIFY_SOCKET: path.join(dir, 'no-such.sock') },
    { onError: (err) => errors.push(err) },
  );
  await notifier.ready('x');
  t.equal(errors.length, 1);
  t.match(notifier.lastError?.message, /systemd-notify READY=1/);
});

t.test('a missing binary resolves and is reported', async (t) => {
  const errors: Error[] = [];
  const notifier = createNotifier(
    { NOTIFY_SOCKET: '/run/systemd/notify' },
    { binary: '/nonexistent/systemd-notify', onError: (err) => errors.push(err) },
  );
  await notifier.watchdog();
  await notifier.status('still here');
  t.equal(errors.length, 2);
  t.match(notifier.lastError?.message, /ENOENT/);
});

t.test('without NOTIFY_SOCKET the notifier does nothing', async (t) => {
  const errors: Error[] = [];
  const notifier = createNotifier(
    { WATCHDOG_USEC: '60000000', PATH: process.env.PATH },
    { binary: '/nonexistent/systemd-notify', onError: (err) => errors.push(err) },
  );
  t.equal(notifier.enabled, false);
  t.equal(notifier.watchdogIntervalMs, null);
  await notifier.ready('x');
  await notifier.watchdog();
  await notifier.status('y');
  await notifier.stopping();
  t.same(errors, [], 'nothing was run');
  t.equal(notifier.lastError, null);
  t.equal(createNotifier({ NOTIFY_SOCKET: '' }).enabled, false, 'an empty NOTIFY_SOCKET counts as unset');
});

t.test('the watchdog interval', async (t) => {
  const interval = (env: NodeJS.ProcessEnv) => createNotifier({ NOTIFY_SOCKET: '/x', ...env }).watchdogIntervalMs;
  t.equal(interval({}), null, 'no WATCHDOG_USEC');
  t.equal(interval({ WATCHDOG_USEC: '60000000' }), 30_000);
  t.equal(interval({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: String(process.pid) }), 30_000, 'meant for us');
  t.equal(interval({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: String(process.pid + 1) }), null, 'another PID');
  for (const bad of ['0', '-5', 'abc', '1e6', '']) t.equal(interval({ WATCHDOG_USEC: bad }), null, bad);
  t.same(
    withoutNotifyEnv({ NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '1', WATCHDOG_PID: '2', PATH: '/bin' }),
    { PATH: '/bin' },
    'children get an environment without the socket',
  );
});

/** Everything below root: relative path -> type, mode, content or link target, mtime. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string) => {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const rel = path.relative(root, full);
      const st = await fs.lstat(full);
      const mode = (st.mode & 0o7777).toString(8);
      if (entry.isSymbolicLink()) out[rel] = `link ${await fs.readlink(full)}`;
      else if (entry.isDirectory()) {
        out[rel] = `dir ${mode}`;
        await walk(full);
      } else out[rel] = `file ${mode} ${st.mtimeMs} ${(await fs.readFile(full)).toString('base64')}`;
    }
  };
  await walk(root);
  return out;
}

const FAKE_AGENT = `#!/usr/bin/env node
// Stands in for dist/agent/main.js: --check-config accepts a config with a deviceId.
const fs = require('node:fs');
const file = process.argv[process.argv.indexOf('--config') + 1];
const config = JSON.parse(fs.readFileSync(file, 'utf8'));
if (!config.deviceId) {
  process.stderr.write('ota-agent: error E_CONFIG: ' + file + ': key "deviceId": Required\\n');
  process.exit(1);
}
process.stdout.write(JSON.stringify({ ok: true, deviceId: config.deviceId }) + '\\n');
`;

t.test('install-agent.sh --root installs, is idempotent and rejects bad input', { skip: noBash }, async (t) => {
  const token = 'tok-3f9a7c1e-secret';
  const dir = t.testdir({
    pkg: {
      'package.json': JSON.stringify({ name: 'ota-models', version: '0.1.0', type: 'commonjs' }),
      dist: { agent: { 'main.js': FAKE_AGENT } },
      node_modules: { mqtt: { 'index.js': 'module.exports = {};\n' }, '.bin': {} },
    },
    'config.json': JSON.stringify({ deviceId: 'cam-01', token }),
    'config-2.json': JSON.stringify({ deviceId: 'cam-02', token }),
    'no-device.json': JSON.stringify({ token }),
    'not-json.json': 'deviceId=cam-01',
  });
  await fs.symlink('../mqtt/index.js', path.join(dir, 'pkg/node_modules/.bin/mqtt'));
  const root = path.join(dir, 'root');
  const at = (f: string) => path.join(dir, f);
  // Always --root: this machine's real /etc and /opt are never touched, even when tests run as root.
  const install = (args: string[]) =>
    run('bash', [INSTALL, '--root', root, ...args], {
      env: { ...process.env, TMPDIR: dir },
      timeoutMs: 60_000,
    });
  const base = ['--package', at('pkg'), '--node', process.execPath];

  const first = await install([...base, '--config', at('config.json')]);
  t.equal(first.code, 0, `first run\n${first.stdout}${first.stderr}`);
  t.notMatch(first.stdout + first.stderr, token, 'the token is never printed');
  t.match(first.stdout, /\[dry-run\] useradd --system/);
  t.match(first.stdout, /\[dry-run\] systemctl enable ota-agent/);

  const files = await snapshot(root);
  const node = await fs.realpath(process.execPath);
  t.same(
    Object.keys(files)
      .filter((f) => !files[f]?.startsWith('dir'))
      .sort(),
    [
      'etc/ota-agent/config.json',
      'etc/systemd/system/ota-agent.service',
      'opt/ota-agent/dist/agent/main.js',
      'opt/ota-agent/node_modules/.bin/mqtt',
      'opt/ota-agent/node_modules/mqtt/index.js',
      'opt/ota-agent/package.json',
      'usr/local/bin/ota-agent',
    ],
    'exactly the expected files, no leftovers',
  );
  t.equal(
    await fs.readFile(path.join(root, 'etc/ota-agent/config.json'), 'utf8'),
    await fs.readFile(at('config.json'), 'utf8'),
  );
  t.equal((await fs.stat(path.join(root, 'etc/ota-agent/config.json'))).mode & 0o777, 0o640, 'config 0640');
  t.equal((await fs.stat(path.join(root, 'etc/ota-agent'))).mode & 0o777, 0o750, 'config dir 0750');
  t.equal((await fs.stat(path.join(root, 'usr/local/bin/ota-agent'))).mode & 0o777, 0o755, 'wrapper 0755');
  t.match(
    await fs.readFile(path.join(root, 'usr/local/bin/ota-agent'), 'utf8'),
    `exec ${node} ${AGENT_NODE_FLAGS.join(' ')} /opt/ota-agent/dist/agent/main.js "$@"`,
    'the wrapper runs node with the agent flags (agent/node-flags.ts)',
  );
  t.equal(
    await fs.readFile(path.join(root, 'etc/systemd/system/ota-agent.service'), 'utf8'),
    await fs.readFile(UNIT, 'utf8'),
    'the unit, ExecStart= naming the wrapper',
  );
  t.equal(await fs.readlink(path.join(root, 'opt/ota-agent/node_modules/.bin/mqtt')), '../mqtt/index.js');

  const second = await install([...base, '--config', at('config.json')]);
  t.equal(second.code, 0, `second run\n${second.stdout}${second.stderr}`);
  t.same(await snapshot(root), files, 'the second run changed nothing (not even a timestamp)');
  t.notMatch(second.stdout, /installed /, 'nothing reinstalled');
  t.notMatch(second.stdout, /daemon-reload|restart/, 'nothing to reload or restart');

  const keep = await install(base);
  t.equal(keep.code, 0, `without --config the installed config is kept\n${keep.stderr}`);
  t.match(keep.stdout, /kept \/etc\/ota-agent\/config\.json/);
  t.same(await snapshot(root), files);

  const changed = await install([...base, '--config', at('config-2.json')]);
  t.equal(changed.code, 0, changed.stderr);
  t.match(changed.stdout, /installed \/etc\/ota-agent\/config\.json/);
  t.match(changed.stdout, /unchanged \/opt\/ota-agent/);
  t.match(changed.stdout, /restart ota-agent/, 'a new config restarts the agent');
  t.notMatch(changed.stdout, /daemon-reload/, 'the unit did not change');

  // Bad input: a usage error names the flag (exit 2); a bad file is named and changes nothing.
  const before = await snapshot(root);
  const cases: Array<[string[], number, RegExp]> = [
    [['--bogus', ...base], 2, /unknown option '--bogus'/],
    [[...base, '--config'], 2, /--config needs a value/],
    [['--config', at('config.json')], 2, /--package DIR\|TGZ is required/],
    [['--package', at('nope'), '--config', at('config.json')], 1, /--package .*nope: no such file/],
    [['--package', at('config.json'), '--config', at('config.json')], 1, /--package .*not a readable \.tgz/],
    [['--package', dir, '--config', at('config.json')], 1, /no package\.json/],
    [[...base, '--config', at('nope.json')], 1, /--config .*nope\.json: no such readable file/],
    [[...base, '--config', at('not-json.json')], 1, /--config .*not-json\.json: not a JSON object/],
    [[...base, '--config', at('no-device.json')], 1, /the agent rejects --config .*key "deviceId"/],
    [[...base, '--node', at('nope-node')], 1, /--node .*nope-node: not an executable file/],
  ];
  for (const [args, code, message] of cases) {
    const r = await install(args);
    const name = args.join(' ').replaceAll(dir, '<dir>').replaceAll(process.execPath, '<node>');
    t.equal(r.code, code, `${name}: exit ${code}`);
    t.match(r.stderr, message, name);
    t.notMatch(r.stdout + r.stderr, token, 'the token is never printed');
  }
  t.same(await snapshot(root), before, 'failed runs changed nothing');

  const help = await run('bash', [INSTALL, '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--package DIR\|TGZ/);
});

t.test('the agent flags are accepted by this node, silently', async (t) => {
  const main = path.join(REPO, 'dist/agent/main.js');
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [...AGENT_NODE_FLAGS, main, '--help']);
  t.match(stdout, /ota-agent/);
  t.equal(stderr, '', 'no warning on stderr (journald would log it at every start)');
});

t.test("children run at full speed: the agent's flags and debugger flags are not passed on", async (t) => {
  t.same(childExecArgv([...AGENT_NODE_FLAGS, '--import=loader.mjs', '--inspect=9229', '--max-old-space-size=64']), [
    '--import=loader.mjs',
    '--max-old-space-size=64',
  ]);
});

t.test("the coordinator unit runs node with the coordinator's flags, and node accepts them silently", async (t) => {
  const unit = await fs.readFile(path.join(REPO, 'systemd', 'ota-coordinator.service'), 'utf8');
  t.match(
    unit,
    `\nExecStart=/usr/bin/env node ${COORDINATOR_NODE_FLAGS.join(' ')} /opt/ota-models/dist/coordinator/main.js\n`,
  );
  const main = path.join(REPO, 'dist/coordinator/main.js');
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [...COORDINATOR_NODE_FLAGS, main, '--help']);
  t.match(stdout, /ota-coordinator/);
  t.equal(stderr, '');
});
