import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The dashboard's files (design section 10), read once at start and served from memory: the page,
 * its stylesheet, the compiled app (`dist/ui`, built by `tsc -p dashboard`) and the browser builds
 * of its libraries straight from their npm packages. Nothing comes from a CDN and nothing is
 * bundled at run time; the page maps bare imports (`preact`, `mqtt`) to these files through an
 * import map.
 *
 * Only files listed here are served: a URL is looked up in a Map, never joined onto a directory,
 * so no path can reach another file on the server.
 */

export interface DashboardAsset {
  body: Buffer;
  contentType: string;
  etag: string;
}

export interface DashboardAssets {
  /** URL path (`/`, `/ui/...`) to file. */
  files: Map<string, DashboardAsset>;
  /** The Content-Security-Policy header for every dashboard response. */
  csp: string;
}

/** Bare import specifiers the app uses, and the file of each package's browser ES module build. */
const VENDOR: readonly { specifier: string; pkg: string; file: string }[] = [
  { specifier: 'preact', pkg: 'preact', file: 'dist/preact.module.js' },
  { specifier: 'preact/hooks', pkg: 'preact', file: 'hooks/dist/hooks.module.js' },
  { specifier: 'htm', pkg: 'htm', file: 'dist/htm.module.js' },
  { specifier: 'htm/preact', pkg: 'htm', file: 'preact/index.module.js' },
  { specifier: 'mqtt', pkg: 'mqtt', file: 'dist/mqtt.esm.js' },
];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/**
 * Where the package is installed: the nearest folder with a package.json above this file (it runs
 * as dist/coordinator/http/dashboard-assets.js, and from source under the tests).
 */
export function packageRoot(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir)
      throw new Error('the coordinator is not inside its package (no package.json above it)');
  }
}

/** Node's lookup of `node_modules/<pkg>`, from `from` upwards (packages may be hoisted above us). */
function findPackageDir(pkg: string, from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', pkg);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`the dashboard needs the npm package ${pkg}: run npm install`);
  }
}

function asset(body: Buffer, file: string): DashboardAsset {
  const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
  const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`;
  return { body, contentType: type, etag };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(full)));
    else if (entry.name.endsWith('.js')) out.push(full);
  }
  return out;
}

/** The import map: inline in the page, so the CSP allows exactly its hash (no 'unsafe-inline'). */
export function importMap(): string {
  const imports: Record<string, string> = {};
  for (const v of VENDOR) imports[v.specifier] = vendorUrl(v.specifier);
  return JSON.stringify({ imports });
}

function vendorUrl(specifier: string): string {
  return `/ui/vendor/${specifier.replace('/', '-')}.js`;
}

/**
 * Strict CSP (design section 10): scripts only from this origin plus the import map's hash, no
 * inline styles in markup, connections only back to this origin (the MQTT WebSocket), no frames,
 * no plugins, no base-URI games, and forms only to this origin (the sign-in form never submits).
 */
export function contentSecurityPolicy(importMapText: string): string {
  const hash = createHash('sha256').update(importMapText).digest('base64');
  return [
    "default-src 'self'",
    `script-src 'self' 'sha256-${hash}'`,
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/**
 * Reads the dashboard's files. `null` when the app is not built (a source checkout before `npm
 * run build`): the coordinator then answers `/` with a message saying so, and runs without it.
 */
export async function loadDashboardAssets(options: {
  topicPrefix: string;
  root?: string;
}): Promise<DashboardAssets | null> {
  const root = options.root ?? packageRoot();
  const appDir = path.join(root, 'dist', 'ui');
  const pageDir = path.join(root, 'dashboard');
  if (!existsSync(path.join(appDir, 'dashboard', 'src', 'main.js'))) return null;
  const files = new Map<string, DashboardAsset>();
  const map = importMap();
  const html = (await fs.readFile(path.join(pageDir, 'index.html'), 'utf8'))
    .replace('{"imports":{}}', () => map)
    .replace('{{TOPIC_PREFIX}}', () => escapeAttribute(options.topicPrefix));
  files.set('/', asset(Buffer.from(html), 'index.html'));
  files.set('/ui/style.css', asset(await fs.readFile(path.join(pageDir, 'style.css')), 'style.css'));
  files.set('/ui/icon.svg', asset(await fs.readFile(path.join(pageDir, 'icon.svg')), 'icon.svg'));
  // The app's modules and the shared ones it imports at run time (the state vocabulary, the id
  // alphabet it checks device ids from a URL against, the error type that one imports, the
  // devices list's filter, whose states it offers, and the list's row of a device it opens).
  const appFiles = [
    ...(await listFiles(path.join(appDir, 'dashboard'))),
    ...['states.js', 'names.js', 'errors.js', 'device-filter.js', 'device-row.js'].map((f) =>
      path.join(appDir, 'shared', f),
    ),
  ];
  for (const file of appFiles) {
    const url = `/ui/${path.relative(appDir, file).split(path.sep).join('/')}`;
    files.set(url, asset(await fs.readFile(file), file));
  }
  for (const v of VENDOR) {
    const dir = findPackageDir(v.pkg, root);
    files.set(vendorUrl(v.specifier), asset(await fs.readFile(path.join(dir, v.file)), v.file));
  }
  return { files, csp: contentSecurityPolicy(map) };
}

function escapeAttribute(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
