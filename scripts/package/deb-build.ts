import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { type DebArch, elfMachine } from './deb-arch.js';
import {
  type BundledComponent,
  changelogFile,
  conffilesFile,
  controlFile,
  copyrightFile,
  DEFAULTS_PATH,
  DOC_DIR,
  defaultsFile,
  LIB_DIR,
  lintianOverrides,
  manPage,
  NODE_PATH,
  OWN_CONFIG_PATH,
  ownConfigScript,
  PACKAGE,
  packagedUnit,
  pathUnit,
  postinstScript,
  postrmScript,
  prermScript,
  sysusersFile,
  UNIT_DIR,
  WRAPPER_PATH,
  wrapperScript,
} from './deb-files.js';
import { fetchNodeRuntime, NODE_RUNTIME } from './node-runtime.js';
import {
  importSpecifiers,
  isBuiltin,
  packageName,
  type ResolvedPackage,
  resolveRuntimePackages,
} from './runtime-deps.js';

const execFileAsync = promisify(execFile);

export interface BuildOptions {
  arch: DebArch;
  /** The project: package.json, dist/ (built), node_modules/ (npm ci), systemd/, README.md. */
  projectDir: string;
  outDir: string;
  /** Where the verified Node.js runtime tarballs are kept between builds. */
  cacheDir: string;
  /** Defaults to package.json's version. */
  version?: string;
  maintainer?: string;
  /** Seconds since the epoch for the changelog and man page dates (SOURCE_DATE_EPOCH). */
  sourceDateEpoch?: number;
  /** xz level (0-9, dpkg-deb -z). 6, dpkg's default, for releases; tests use less to save a minute. */
  xzLevel?: number;
  log?: (line: string) => void;
}

export interface BuildResult {
  file: string;
  /** Bytes of the .deb. */
  debBytes: number;
  /** Installed-Size: KiB of the files it installs. */
  installedKiB: number;
  version: string;
  packages: ResolvedPackage[];
}

/** Top-level directories of npm packages that hold no run-time code. */
const NON_RUNTIME_DIRS = new Set([
  'test',
  'tests',
  '__tests__',
  'bench',
  'benchmark',
  'benchmarks',
  'example',
  'examples',
  'docs',
  'doc',
]);

/**
 * Files of npm packages a device never loads: types, source maps, TypeScript sources, docs,
 * tests, dotfiles (VCS and CI settings), and nested node_modules (each dependency is resolved and
 * copied on its own; a nested install holds a package's development tools, such as
 * protobufjs/cli's 16 MB).
 */
export function droppedFromNpmPackage(relative: string, isDir: boolean): boolean {
  const base = path.basename(relative);
  const parts = relative.split(path.sep);
  if (parts.some((p) => p === 'node_modules' || p.startsWith('.'))) return true;
  if (isDir) return parts.length === 1 && NON_RUNTIME_DIRS.has(base);
  if (parts.length === 1 && /\.html?$/i.test(base)) return true;
  if (/\.(d\.[cm]?ts|map|[cm]?ts|tsx)$/.test(base) && !/\.(js|cjs|mjs|json|node)$/.test(base)) return true;
  if (/^(README|CHANGELOG|HISTORY|CONTRIBUTING)(\..*)?$/i.test(base)) return true;
  if (/\.md$/i.test(base) && !/^(LICEN[CS]E|COPYING|NOTICE)/i.test(base)) return true;
  return false;
}

/** onnxruntime-node: only this architecture's binaries (the others are 200+ MB), no install script. */
export function droppedFromOnnxruntime(relative: string, arch: DebArch): boolean {
  const parts = relative.split(path.sep);
  if (parts[0] === 'script') return true;
  if (parts[0] !== 'bin' || parts.length < 3) return false;
  // bin/napi-v6/<os>/<cpu>/…: other systems' directories go whole, then other CPUs'.
  const [os, cpu] = arch.onnxruntimeDir.split('/');
  return parts[2] !== os || (parts.length >= 4 && parts[3] !== cpu);
}

async function copyTree(
  from: string,
  to: string,
  keep: (relative: string, isDir: boolean) => boolean,
  rel = '',
): Promise<void> {
  await fs.mkdir(to, { recursive: true });
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const relative = path.join(rel, entry.name);
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (!keep(relative, entry.isDirectory())) continue;
    if (entry.isDirectory()) await copyTree(src, dst, keep, relative);
    else if (entry.isSymbolicLink()) await fs.symlink(await fs.readlink(src), dst);
    else if (entry.isFile()) await fs.copyFile(src, dst);
  }
}

async function walk(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const relative = path.join(rel, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path.join(dir, entry.name), relative)));
    else out.push(relative);
  }
  return out;
}

/**
 * Checks the staged agent's imports: every relative one resolves inside the package, every bare
 * one is a builtin or a packaged dependency. Returns the bare package names the agent imports.
 */
export async function checkAgentImports(libDir: string): Promise<string[]> {
  const bare = new Set<string>();
  const problems: string[] = [];
  for (const rel of await walk(path.join(libDir, 'dist'))) {
    if (!rel.endsWith('.js')) continue;
    const file = path.join(libDir, 'dist', rel);
    for (const spec of importSpecifiers(await fs.readFile(file, 'utf8'))) {
      if (spec.startsWith('.')) {
        const target = path.resolve(path.dirname(file), spec);
        const exists = await fs.stat(target).then(
          (s) => s.isFile(),
          () => false,
        );
        if (!exists) problems.push(`dist/${rel} imports ${spec}, which is not in the package`);
      } else if (!isBuiltin(spec)) {
        bare.add(packageName(spec));
      }
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `the agent imports code outside dist/agent and dist/shared:\n  ${problems.join('\n  ')}\n` +
        'the package carries only those two: move the shared code into shared/',
    );
  }
  return [...bare].sort();
}

/** Every ELF file below `dir` must be for `arch` (another platform's binary would not load). */
export async function checkNativeFiles(dir: string, arch: DebArch): Promise<string[]> {
  const elf: string[] = [];
  const wrong: string[] = [];
  for (const rel of await walk(dir)) {
    const handle = await fs.open(path.join(dir, rel), 'r');
    const header = Buffer.alloc(20);
    try {
      await handle.read(header, 0, 20, 0);
    } finally {
      await handle.close();
    }
    const machine = elfMachine(header);
    if (machine === undefined) continue;
    elf.push(rel);
    if (machine !== arch.elfMachine) wrong.push(`${rel} (ELF machine ${machine})`);
  }
  if (wrong.length > 0) {
    throw new Error(`native files for another architecture than ${arch.deb}: ${wrong.join(', ')}`);
  }
  return elf;
}

function rfc2822(date: Date): string {
  // Debian changelog dates: "Sun, 06 Dec 2026 18:00:00 +0000".
  return date.toUTCString().replace('GMT', '+0000');
}

/** Builds ota-agent_<version>_<arch>.deb in `outDir`. */
export async function buildAgentDeb(options: BuildOptions): Promise<BuildResult> {
  const log = options.log ?? (() => {});
  const { arch, projectDir } = options;
  const pkgJson = JSON.parse(await fs.readFile(path.join(projectDir, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
  };
  const version = options.version ?? pkgJson.version;
  if (!/^[0-9][A-Za-z0-9.+~-]*$/.test(version)) {
    throw new Error(`version ${version} is not a Debian version (policy 5.6.12): digits first, then [A-Za-z0-9.+~-]`);
  }
  if (
    options.xzLevel !== undefined &&
    !(Number.isInteger(options.xzLevel) && options.xzLevel >= 0 && options.xzLevel <= 9)
  ) {
    throw new Error(`xz level ${options.xzLevel} is out of range: use 0 (fastest) to 9 (smallest)`);
  }
  const maintainer = options.maintainer ?? 'ota-models maintainers <maintainers@ota-models.org>';
  const agentMain = path.join(projectDir, 'dist', 'agent', 'main.js');
  if (!(await fs.stat(agentMain).catch(() => undefined))) {
    throw new Error(`${agentMain} is missing: run npm run build first`);
  }
  const date = new Date((options.sourceDateEpoch ?? Math.floor(Date.now() / 1000)) * 1000);

  await fs.mkdir(options.outDir, { recursive: true });
  const stage = await fs.mkdtemp(path.join(options.outDir, `.${PACKAGE}-${arch.deb}-stage-`));
  try {
    const at = (p: string) => path.join(stage, p);
    const lib = at(LIB_DIR);

    // 1. The compiled agent and the shared protocol code it imports (no source maps, no types).
    for (const part of ['agent', 'shared']) {
      await copyTree(
        path.join(projectDir, 'dist', part),
        path.join(lib, 'dist', part),
        (rel, isDir) => isDir || rel.endsWith('.js'),
      );
    }
    const roots = await checkAgentImports(lib);
    log(`agent imports: ${roots.join(', ')}`);

    // 2. Its npm dependencies, nothing else (the coordinator's stay behind).
    const packages = await resolveRuntimePackages(roots, projectDir);
    for (const p of packages) {
      await copyTree(p.dir, path.join(lib, p.relative), (rel, isDir) => {
        if (p.name === 'onnxruntime-node' && droppedFromOnnxruntime(rel, arch)) return false;
        return !droppedFromNpmPackage(rel, isDir);
      });
    }
    log(`npm packages: ${packages.length}`);
    const onnx = packages.find((p) => p.name === 'onnxruntime-node');
    if (onnx) {
      const binding = path.join(lib, onnx.relative, 'bin', 'napi-v6', arch.onnxruntimeDir, 'onnxruntime_binding.node');
      if (!(await fs.stat(binding).catch(() => undefined))) {
        throw new Error(
          `onnxruntime-node has no binary for ${arch.onnxruntimeDir} (${binding}): reinstall it with npm ci`,
        );
      }
    }
    await fs.writeFile(
      path.join(lib, 'package.json'),
      `${JSON.stringify({ name: pkgJson.name, version, private: true, type: 'module', description: 'ota-agent, as packaged' }, null, 2)}\n`,
    );

    // 3. The Node.js runtime for the target: the verified tarball's bin/node and LICENSE only.
    const tarball = await fetchNodeRuntime(arch, options.cacheDir);
    const tgz = path.join(stage, 'node-runtime.tgz');
    await fs.writeFile(tgz, tarball);
    const nodeDir = path.join(lib, 'node');
    await fs.mkdir(nodeDir, { recursive: true });
    await execFileAsync('tar', [
      '-xzf',
      tgz,
      '-C',
      nodeDir,
      '--strip-components=1',
      '--no-same-owner',
      'package/bin/node',
      'package/LICENSE',
    ]);
    await fs.rm(tgz);
    log(`node ${NODE_RUNTIME.version} (${arch.nodePackage})`);
    await checkNativeFiles(lib, arch);

    // 4. Wrapper, units, user, defaults, documentation.
    const put = async (p: string, content: string | Uint8Array) => {
      await fs.mkdir(path.dirname(at(p)), { recursive: true });
      await fs.writeFile(at(p), content);
    };
    await put(WRAPPER_PATH, wrapperScript());
    await put(OWN_CONFIG_PATH, ownConfigScript());
    await put(
      `${UNIT_DIR}/ota-agent.service`,
      packagedUnit(await fs.readFile(path.join(projectDir, 'systemd', 'ota-agent.service'), 'utf8')),
    );
    await put(`${UNIT_DIR}/ota-agent.path`, pathUnit());
    await put('/usr/lib/sysusers.d/ota-agent.conf', sysusersFile());
    await put(DEFAULTS_PATH, defaultsFile());
    const { stdout: help } = await execFileAsync(process.execPath, [agentMain, '--help']);
    const manDate = date.toISOString().slice(0, 10);
    await put('/usr/share/man/man1/ota-agent.1.gz', gzipSync(manPage(help, version, manDate), { level: 9 }));
    const readme = await fs.readFile(path.join(projectDir, 'README.md'), 'utf8');
    await put(`${DOC_DIR}/README.md`, agentReadme(readme));
    const components: BundledComponent[] = [
      {
        files: `${LIB_DIR.slice(1)}/node`,
        name: 'Node.js and the libraries its LICENSE lists',
        version: NODE_RUNTIME.version,
        license: 'Expat',
      },
      ...packages.map((p) => ({
        files: `${LIB_DIR.slice(1)}/${p.relative}`,
        name: p.name,
        version: p.version,
        license: p.license,
      })),
    ];
    await put(`${DOC_DIR}/copyright`, copyrightFile(components, date.getUTCFullYear()));
    await put(`${DOC_DIR}/changelog.gz`, gzipSync(changelogFile(version, maintainer, rfc2822(date)), { level: 9 }));
    await put(`/usr/share/lintian/overrides/${PACKAGE}`, lintianOverrides());

    // 5. Modes: root-owned (dpkg-deb --root-owner-group), nothing writable by others.
    const executables = new Set([WRAPPER_PATH, OWN_CONFIG_PATH, NODE_PATH].map((p) => p.slice(1)));
    await normaliseModes(stage, executables);

    // 6. Control area.
    const installedKiB = await installedSizeKiB(stage);
    const debian = at('DEBIAN');
    await fs.mkdir(debian, { mode: 0o755 });
    const control: [string, string, number][] = [
      ['control', controlFile({ version, arch: arch.deb, installedSizeKiB: installedKiB, maintainer }), 0o644],
      ['conffiles', conffilesFile(), 0o644],
      ['md5sums', await md5sums(stage), 0o644],
      ['postinst', postinstScript(), 0o755],
      ['prerm', prermScript(), 0o755],
      ['postrm', postrmScript(), 0o755],
    ];
    for (const [name, content, mode] of control) {
      await fs.writeFile(path.join(debian, name), content);
      await fs.chmod(path.join(debian, name), mode);
    }

    // 7. The archive. xz: a third smaller than gzip on node and onnxruntime.
    const file = path.join(options.outDir, `${PACKAGE}_${version}_${arch.deb}.deb`);
    const partial = `${file}.partial`;
    try {
      const level = options.xzLevel ?? 6;
      await execFileAsync('dpkg-deb', ['--root-owner-group', '-Zxz', `-z${level}`, '--build', stage, partial], {
        env: { ...process.env, SOURCE_DATE_EPOCH: String(Math.floor(date.getTime() / 1000)) },
        maxBuffer: 1 << 20,
      });
    } catch (e) {
      const err = e as { code?: string; stderr?: string; message: string };
      await fs.rm(partial, { force: true });
      if (err.code === 'ENOENT')
        throw new Error('dpkg-deb not found: install it (Debian/Ubuntu: apt-get install dpkg)');
      throw new Error(`dpkg-deb failed: ${(err.stderr || err.message).trim()}`);
    }
    // Renamed into place only when complete: a failed build never leaves a half-written .deb.
    await fs.rename(partial, file);
    const debBytes = (await fs.stat(file)).size;
    return { file, debBytes, installedKiB, version, packages };
  } finally {
    await fs.rm(stage, { recursive: true, force: true });
  }
}

async function normaliseModes(stage: string, executables: Set<string>): Promise<void> {
  const visit = async (rel: string): Promise<void> => {
    const abs = path.join(stage, rel);
    const st = await fs.lstat(abs);
    if (st.isSymbolicLink()) return;
    if (st.isDirectory()) {
      await fs.chmod(abs, 0o755);
      for (const name of await fs.readdir(abs)) await visit(path.join(rel, name));
      return;
    }
    // Scripts with a #! line (npm packages' bin entries) stay runnable, as lintian expects.
    await fs.chmod(abs, executables.has(rel) || (await startsWithShebang(abs)) ? 0o755 : 0o644);
  };
  for (const name of await fs.readdir(stage)) await visit(name);
}

async function startsWithShebang(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(2);
    await handle.read(head, 0, 2, 0);
    return head.toString('latin1') === '#!';
  } finally {
    await handle.close();
  }
}

/** Installed-Size (policy 5.6.20): KiB, each file rounded up to 1 KiB as dpkg-gencontrol does. */
async function installedSizeKiB(stage: string): Promise<number> {
  let kib = 0;
  const visit = async (abs: string): Promise<void> => {
    const st = await fs.lstat(abs);
    if (st.isDirectory()) {
      kib += 1;
      for (const name of await fs.readdir(abs)) await visit(path.join(abs, name));
    } else {
      kib += Math.ceil(st.size / 1024) || 1;
    }
  };
  for (const name of await fs.readdir(stage)) await visit(path.join(stage, name));
  return kib;
}

/** DEBIAN/md5sums: dpkg --verify and debsums check installed files against it. */
async function md5sums(stage: string): Promise<string> {
  const lines: string[] = [];
  for (const rel of (await walk(stage)).sort()) {
    const abs = path.join(stage, rel);
    if ((await fs.lstat(abs)).isSymbolicLink()) continue;
    if (`/${rel}` === DEFAULTS_PATH) continue; // conffiles are tracked by dpkg itself
    const digest = createHash('md5')
      .update(await fs.readFile(abs))
      .digest('hex');
    lines.push(`${digest}  ${rel}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The README that goes to /usr/share/doc/ota-agent: the "Installing the agent on a device"
 * section of the project's README, with a pointer to the rest.
 */
export function agentReadme(projectReadme: string): string {
  const heading = '## Installing the agent on a device';
  const start = projectReadme.indexOf(heading);
  if (start < 0) throw new Error(`README.md has no "${heading}" section: the package's README comes from it`);
  const next = projectReadme.indexOf('\n## ', start + heading.length);
  const section = projectReadme.slice(start, next < 0 ? undefined : next).trimEnd();
  return `# ota-agent\n\nThe device agent of ota-models (man ota-agent). From the project's README:\n\n${section}\n`;
}
