import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { resolveCoordinatorConfig } from '../coordinator/config.js';
import type { AdminTokenFile } from '../coordinator/identity/bootstrap.js';
import { startCoordinator } from '../coordinator/service.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import { createLogger } from '../shared/logger.js';
import { OTACTL, otactl } from './helpers/cli.js';
import { freePort } from './helpers/coordinator-process.js';

// `otactl completion bash`, sourced into a real bash and called as bash calls it on TAB
// (COMP_LINE, COMP_POINT, COMP_WORDS, COMP_CWORD set), against a real coordinator: commands,
// flags, and the ids the coordinator holds.

const silent = createLogger('silent', process.stdout, 'ota-coordinator');
const json = <T = unknown>(text: string): T => JSON.parse(text) as T;

t.test('shell completion with ids from the coordinator', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'work');
  const bin = path.join(dir, 'bin');
  await fs.mkdir(work);
  await fs.mkdir(bin);
  const at = (f: string) => path.join(work, f);
  // `otactl` on PATH, as after `npm install -g` (the scripts call it by name).
  await fs.writeFile(path.join(bin, 'otactl'), `#!/bin/sh\nexec "${process.execPath}" "${OTACTL}" "$@"\n`, {
    mode: 0o755,
  });
  const running = await startCoordinator(resolveCoordinatorConfig({ data: dataDir, mqttPort: 0, httpPort: 0 }, {}), {
    logger: silent,
  });
  t.teardown(() => running.stop());
  const adminToken = json<AdminTokenFile>(await fs.readFile(running.adminTokenFile, 'utf8'));
  const admin = await CommandClient.connect({ url: running.mqttUrl, user: 'admin', token: adminToken.token });
  t.teardown(() => admin.close());
  const clean = { OTA_URL: '', OTA_HTTP_URL: '', OTA_USER: '', OTA_TOKEN: '', OTA_CA: '', OTA_DATA: '' };
  const env = { ...clean, OTA_DATA: dataDir };

  // A fleet: devices, a group, a release of det, a rollout.
  await fs.writeFile(at('v1.onnx'), goodModel(1));
  await fs.writeFile(at('probe.json'), JSON.stringify(goodProbe()));
  const run = (args: string[]) => otactl(args, { cwd: work, env });
  t.equal((await run(['keygen', '--out', at('release.key')])).code, 0);
  t.equal((await run(['key', 'add', at('release.key.pub')])).code, 0);
  for (const id of ['cam-1', 'cam-2', 'gw-1']) await admin.call('device.add', { id });
  await admin.call('group.create', { name: 'hall-a', devices: ['cam-1'] });
  const publish = await run([
    ...['release', 'publish', '--model', 'det', '--version', '1.0.0', '--file', at('v1.onnx')],
    ...['--key', at('release.key'), '--probe', at('probe.json')],
  ]);
  t.equal(publish.code, 0, publish.stderr);
  await admin.call('rollout.create', {
    id: 'ro-first',
    model: 'det',
    version: '1.0.0',
    devices: ['gw-1'],
    waves: '100',
  });

  const script = at('otactl.bash');
  const generated = await run(['completion', 'bash']);
  t.equal(generated.code, 0, generated.stderr);
  await fs.writeFile(script, generated.stdout);
  await promisify(execFile)('bash', ['-n', script]);

  /** What bash would offer for `line` (the cursor at its end). */
  const tab = async (line: string, extra: NodeJS.ProcessEnv = {}) => {
    const r = await promisify(execFile)(
      'bash',
      [
        '-c',
        // COMP_WORDS split at blanks (bash also splits at COMP_WORDBREAKS; the script reads COMP_LINE).
        `source "$1"
COMP_LINE=$2; COMP_POINT=\${#COMP_LINE}
read -r -a COMP_WORDS <<<"$COMP_LINE"; [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
_otactl
printf "%s\\n" "\${COMPREPLY[@]}"`,
        'tab',
        script,
        line,
      ],
      { cwd: work, env: { ...process.env, ...env, ...extra, PATH: `${bin}:${process.env.PATH}` } },
    );
    return { words: r.stdout.split('\n').filter((w) => w !== ''), stderr: r.stderr };
  };

  t.same((await tab('otactl ro')).words, ['rollout'], 'a command');
  t.same((await tab('otactl rollout ')).words.sort(), [
    'abort',
    'approve',
    'create',
    'halt',
    'ls',
    'promote',
    'resume',
    'status',
  ]);
  t.same((await tab('otactl device add cam-9 --agent-c')).words.sort(), ['--agent-ca-file', '--agent-config'], 'flags');
  t.same((await tab('otactl operator add x --role v')).words, ['viewer'], 'choices');
  t.notOk((await tab('otactl ')).words.includes('__complete'), 'the hidden command is not offered');

  t.same((await tab('otactl rollout status ')).words, ['ro-first'], 'rollout ids');
  t.same((await tab('otactl rollout abort ro-')).words, ['ro-first']);
  t.same((await tab('otactl device show cam-')).words, ['cam-1', 'cam-2'], 'device ids');
  t.same((await tab('otactl rollout create --model ')).words, ['det'], 'model names');
  t.same((await tab('otactl rollout create --model det --version 2 --group ')).words, ['hall-a'], 'group names');
  t.same(
    (await tab('otactl rollout create --devices cam-1,')).words,
    ['cam-1,cam-2', 'cam-1,gw-1'],
    'the next device of a list',
  );
  t.same((await tab('otactl channel set ')).words, ['det'], 'a model as the first argument');
  t.same((await tab('otactl release publish --file v')).words, ['v1.onnx'], 'file names');

  // Connection flags typed on the line are used (a URL has ':', which bash splits words at).
  const elsewhere = { OTA_DATA: path.join(dir, 'nowhere') };
  await fs.writeFile(at('admin.token.txt'), `${adminToken.token}\n`);
  const typed = await tab(
    `otactl --url ${running.mqttUrl} --user admin --token-file ${at('admin.token.txt')} device rm g`,
    elsewhere,
  );
  t.same(typed.words, ['gw-1'], 'ids with the flags on the line');

  // No coordinator: no ids, quietly and at once (exit 0, nothing on stderr).
  const down = await tab('otactl device show ', { OTA_URL: `mqtt://127.0.0.1:${await freePort()}` });
  t.same(down.words, []);
  t.equal(down.stderr, '');
  const nothing = await tab('otactl device show ', elsewhere);
  t.same(nothing.words, [], 'no connection settings at all: nothing');
  t.same((await tab('otactl dev', elsewhere)).words, ['device'], 'commands still complete');

  // zsh and fish scripts go through the same `otactl __complete`.
  const zsh = await run(['completion', 'zsh']);
  t.match(zsh.stdout, /^#compdef otactl/);
  t.match(zsh.stdout, /otactl __complete -- /);
  const fish = await run(['completion', 'fish']);
  t.match(fish.stdout, /complete -c otactl -f -a '\(__otactl_complete\)'/);
  const bad = await run(['completion', 'tcsh']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /Allowed choices are bash, zsh, fish/);
});
