import { promises as fs } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';

/**
 * What the agent needs at run time, found from its compiled code rather than from a hand-kept
 * list: the import specifiers of every shipped .js file, then npm packages' `dependencies`
 * resolved as Node resolves them (node_modules directories from the requiring package upwards).
 * So a new import in the agent is packaged without anyone remembering to, and an import the
 * package cannot satisfy stops the build instead of the agent on a device.
 */

/** The module specifiers a compiled ES module imports, statically or with `import()`. */
export function importSpecifiers(source: string): string[] {
  const found = new Set<string>();
  // `import x from '…'`, `import '…'`, `export … from '…'` (tsc writes them one per statement),
  // and `import('…')` with a literal. Comments are not parsed out: a specifier named only in a
  // comment is harmless extra work (it must still resolve, which keeps comments honest).
  const patterns = [
    /(?:^|[\s;}])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]/g,
    /(?:^|[\s;}])import\s*['"]([^'"]+)['"]/g,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of patterns) {
    for (const m of source.matchAll(re)) found.add(m[1] as string);
  }
  return [...found];
}

const BUILTINS = new Set(builtinModules);

/** True for `node:fs` and bare builtins such as `fs`. */
export function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || BUILTINS.has(specifier.split('/')[0] as string);
}

/** `@scope/name/sub/path` → `@scope/name`; `name/sub` → `name`. */
export function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

export interface ResolvedPackage {
  name: string;
  version: string;
  license: string;
  /** Absolute directory in the build machine's node_modules. */
  dir: string;
  /** Path relative to the root node_modules' parent (e.g. `node_modules/a/node_modules/b`). */
  relative: string;
  /** The first package found to need it (`the agent` for a direct import). */
  neededBy: string;
}

interface PackageJson {
  name?: string;
  version?: string;
  license?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

async function readPackageJson(dir: string): Promise<PackageJson | undefined> {
  try {
    return JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8')) as PackageJson;
  } catch {
    return undefined;
  }
}

/** Node's lookup: `<dir>/node_modules/<name>`, then each parent's, stopping at `root`. */
async function locate(name: string, fromDir: string, root: string): Promise<string | undefined> {
  let dir = fromDir;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (await readPackageJson(candidate)) return candidate;
    if (dir === root) return undefined;
    const parent = path.dirname(dir);
    // A package dir is <x>/node_modules/<name> or <x>/node_modules/@scope/<name>: go to <x>.
    dir = path.basename(parent) === 'node_modules' ? path.dirname(parent) : path.dirname(path.dirname(parent));
    if (!dir.startsWith(root)) return undefined;
  }
}

/**
 * Every package the `roots` need, with their dependencies, from `projectDir`'s node_modules.
 * Optional dependencies that are not installed (another platform's) are skipped; a required one
 * that is missing is an error naming who needs it.
 */
export async function resolveRuntimePackages(roots: string[], project: string): Promise<ResolvedPackage[]> {
  const projectDir = path.resolve(project);
  const found = new Map<string, ResolvedPackage>();
  const queue: { name: string; from: string; neededBy: string; optional: boolean }[] = roots.map((name) => ({
    name,
    from: projectDir,
    neededBy: 'the agent',
    optional: false,
  }));
  for (let item = queue.shift(); item; item = queue.shift()) {
    // Type declarations only: nothing loads them at run time (mqtt lists one in dependencies).
    if (item.name.startsWith('@types/')) continue;
    const dir = await locate(item.name, item.from, projectDir);
    if (!dir) {
      if (item.optional) continue;
      throw new Error(
        `${item.name} (needed by ${item.neededBy}) is not installed under ${projectDir}/node_modules: run npm ci first`,
      );
    }
    if (found.has(dir)) continue;
    const pkg = (await readPackageJson(dir)) as PackageJson;
    const resolved: ResolvedPackage = {
      name: item.name,
      version: pkg.version ?? '0.0.0',
      license: pkg.license ?? 'UNKNOWN',
      dir,
      relative: path.relative(projectDir, dir),
      neededBy: item.neededBy,
    };
    found.set(dir, resolved);
    for (const name of Object.keys(pkg.dependencies ?? {})) {
      queue.push({ name, from: dir, neededBy: `${item.name}@${resolved.version}`, optional: false });
    }
    for (const name of Object.keys(pkg.optionalDependencies ?? {})) {
      queue.push({ name, from: dir, neededBy: `${item.name}@${resolved.version}`, optional: true });
    }
  }
  return [...found.values()].sort((a, b) => a.relative.localeCompare(b.relative));
}
