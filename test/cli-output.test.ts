import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import { startCoordinator } from '../coordinator/service.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import { createLogger } from '../shared/logger.js';
import { OTACTL, otactl } from './helpers/cli.js';
import { freePort } from './helpers/coordinator-process.js';

// What otactl's output looks like to a program reading it: a reader that goes away early
// (`| head -1`) ends otactl quietly, every object's id is `id` under --json, and under --json
// an error is one JSON object on stderr with the usual exit code.

const silent = createLogger('silent', process.stdout, 'ota-coordinator');
const json = <T = unknown>(text: string): T => JSON.parse(text) as T;

interface ClosedPipeResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What otactl wrote on the stream that stayed open. */
  other: string;
}

/**
 * Runs otactl with one of its output streams a real pipe whose reading end is closed before
 * otactl writes (as `head -1` does once it has its line): every write on it fails with EPIPE.
 * The close happens in the same turn as the spawn, long before the child has loaded Node.
 */
function withClosedPipe(
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; stream: 'stdout' | 'stderr' },
): Promise<ClosedPipeResult> {
  const child = spawn(process.execPath, [OTACTL, ...args], {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const closed = options.stream === 'stdout' ? child.stdout : child.stderr;
  const open = options.stream === 'stdout' ? child.stderr : child.stdout;
  closed.destroy();
  let other = '';
  open.on('data', (d: Buffer) => {
    other += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, other }));
  });
}

t.test('otactl output for programs', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  await fs.mkdir(work);
  const at = (f: string) => path.join(work, f);
  const running = await startCoordinator(resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {}), {
    logger: silent,
  });
  t.teardown(() => running.stop());
  const clean = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: '' };
  const env = { ...clean, OTA_DATA: dataDir };
  const run = (args: string[]) => otactl(args, { cwd: work, env });
  const ok = async (args: string[]) => {
    const r = await run(args);
    t.equal(r.code, 0, `otactl ${args.join(' ')}`, { stderr: r.stderr });
    return r;
  };

  // Something of every kind, so that each list prints rows on stdout.
  await fs.writeFile(at('v1.onnx'), goodModel(1));
  await fs.writeFile(at('probe.json'), JSON.stringify(goodProbe()));
  const keygen = json<Record<string, string>>((await ok(['keygen', '--out', at('release.key'), '--json'])).stdout);
  await ok(['key', 'add', at('release.key.pub'), '--name', 'ci']);
  for (const id of ['cam-1', 'cam-2', 'cam-3']) await ok(['device', 'add', id, '--label', 'site=a']);
  await ok(['group', 'create', 'site-a', '--selector', 'site=a']);
  const release = ['release', 'publish', '--model', 'det', '--version', '1.0.0', '--file', at('v1.onnx')];
  await ok([...release, '--key', at('release.key'), '--probe', at('probe.json'), '--channel', 'stable']);
  await ok(['operator', 'add', 'vera', '--role', 'viewer']);

  await t.test('a reader that closes the pipe early ends otactl quietly, exit 0', async (t) => {
    const commands = [
      ['--help'],
      ['device', 'ls'],
      ['device', 'ls', '--json'],
      ['device', 'show', 'cam-1'],
      ['key', 'ls'],
      ['group', 'ls', '--json'],
      ['release', 'ls'],
      ['channel', 'ls'],
      ['operator', 'ls'],
      ['audit', 'ls'],
      ['audit', 'export'],
      ['audit', 'verify'],
      ['rollout', 'ls', '--json'],
      ['release', 'verify', '--envelope', at('missing.json'), '--file', at('v1.onnx'), '--pubkey', at('x')],
    ];
    // The last one fails before writing to stdout: it must still report on stderr, exit 1.
    const results = await Promise.all(
      commands.map((args) => withClosedPipe(args, { cwd: work, env, stream: 'stdout' })),
    );
    for (const [i, args] of commands.entries()) {
      const r = results[i] as ClosedPipeResult;
      const name = `otactl ${args.join(' ')} | head -1`;
      t.notMatch(r.other, /EPIPE|Unhandled 'error' event|\n\s+at /, `${name}: no stack trace`);
      if (args[1] === 'verify' && args[0] === 'release') {
        t.equal(r.code, 1, `${name}: a failure still exits 1`);
        t.match(r.other, /^error E_[A-Z_]+: /, `${name}: and says why on stderr`);
      } else {
        t.equal(r.code, 0, `${name}: exit 0`, { stderr: r.other });
        t.equal(r.signal, null);
      }
    }

    // `2>&1 | head`-like: stderr is the closed pipe; an error cannot be shown, but no crash.
    const err = await withClosedPipe(['device', 'show', 'nope'], { cwd: work, env, stream: 'stderr' });
    t.equal(err.signal, null);
    t.equal(err.other, '', 'nothing on stdout');
    t.not(err.code, null);
  });

  await t.test('every object names its own id `id` under --json', async (t) => {
    t.match(keygen, { id: /^[0-9a-f]{32}$/, privateKey: String, publicKey: String }, 'keygen');
    t.notOk('keyId' in keygen);
    const lists: [string[], string[]][] = [
      [
        ['device', 'ls'],
        ['cam-1', 'cam-2', 'cam-3'],
      ],
      [['key', 'ls'], [keygen.id as string]],
      [['group', 'ls'], ['site-a']],
      [['release', 'ls'], ['det@1.0.0']],
      [['channel', 'ls'], ['det/stable']],
      [
        ['operator', 'ls'],
        ['admin', 'vera'],
      ],
    ];
    for (const [args, ids] of lists) {
      const rows = json<Record<string, unknown>[]>((await ok([...args, '--json'])).stdout);
      t.same(rows.map((r) => r.id).sort(), ids, `${args.join(' ')}: ids under "id"`);
      // (A key's `name` is a label an admin gives it, not its id.)
      const other = args[0] === 'key' ? 'keyId' : 'name';
      t.notOk(
        rows.some((r) => other in r),
        `${args.join(' ')}: no "${other}" beside "id"`,
      );
    }
    const channel = json<Record<string, unknown>[]>((await ok(['channel', 'ls', '--json'])).stdout)[0];
    t.match(channel, { id: 'det/stable', model: 'det', channel: 'stable', releaseId: 'det@1.0.0' });
    t.match(json((await ok(['group', 'create', 'two', '--devices', 'cam-1,cam-2', '--json'])).stdout), {
      id: 'two',
      devices: ['cam-1', 'cam-2'],
    });
    t.match(json((await ok(['operator', 'add', 'otto', '--role', 'operator', '--json'])).stdout), {
      id: 'otto',
      role: 'operator',
      token: String,
    });
    t.match(json((await ok(['channel', 'set', 'det', 'canary', '1.0.0', '--json'])).stdout), {
      channel: { id: 'det/canary', releaseId: 'det@1.0.0' },
    });
    await ok(['keygen', '--out', at('second.key')]);
    const second = json<{ id: string }>((await ok(['key', 'add', at('second.key.pub'), '--json'])).stdout);
    t.match(second, { id: /^[0-9a-f]{32}$/, revoked: false });
    t.same(json((await ok(['key', 'revoke', second.id, '--json'])).stdout), {
      id: second.id,
      revoked: true,
      affected: { releases: [], channels: [], devices: 0 },
    });
  });

  await t.test('under --json an error is one JSON object on stderr, with the usual exit code', async (t) => {
    const closed = `mqtt://127.0.0.1:${await freePort()}`;
    const cases: [string[], number, string, RegExp][] = [
      [['device', 'show', 'nope', '--json'], 1, 'E_NOT_FOUND', /no device "nope"/],
      [['device', 'ls', '--json', '--url', closed], 1, 'E_CONNECT', /is ota-coordinator running/],
      [['device', 'ls', '--bogus', '--json'], 2, 'E_USAGE', /^unknown option '--bogus'/],
      [['device', 'show', '--json'], 2, 'E_USAGE', /^missing required argument 'id'/],
      // A command group has no --json: that is the usage error.
      [['device', '--json'], 2, 'E_USAGE', /^unknown option '--json'/],
      [['rollout', 'abort', 'ro-1', '--policy', 'nope', '--json'], 2, 'E_USAGE', /Allowed choices are keep, revert/],
      [['group', 'create', 'g', '--json'], 2, 'E_USAGE', /^give either --devices/],
      [['audit', 'ls', '--limit', '5000', '--json'], 2, 'E_USAGE', /above 1000/],
      [['key', 'revoke', 'abc', '--json'], 2, 'E_USAGE', /32 hex digits/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    for (const [i, [args, code, errorCode, message]] of cases.entries()) {
      const r = results[i] as Awaited<ReturnType<typeof run>>;
      const name = `otactl ${args.join(' ')}`;
      t.equal(r.code, code, `${name}: exit ${code}`);
      t.equal(r.stdout, '', `${name}: nothing on stdout`);
      const lines = r.stderr.trim().split('\n');
      t.equal(lines.length, 1, `${name}: one line on stderr`, { stderr: r.stderr });
      let doc: { error?: { code?: string; message?: string } } = {};
      t.doesNotThrow(() => {
        doc = JSON.parse(lines[0] as string);
      }, `${name}: stderr is JSON`);
      t.equal(doc.error?.code, errorCode, `${name}: code`);
      t.match(doc.error?.message, message, `${name}: message`);
    }
    // The generic fix from docs/errors.md rides along when there is one.
    const notFound = json<{ error: { fix?: string } }>(results[0]?.stderr ?? '');
    t.match(notFound.error.fix, /\S/);
    // Without --json the same error is text, as before.
    const text = await run(['device', 'show', 'nope']);
    t.equal(text.code, 1);
    t.match(text.stderr, /^error E_NOT_FOUND: no device "nope"/);
  });
});
