import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CommandClient } from '../coordinator/client/command-client.js';
import { ArtifactStore } from '../coordinator/http/artifact-store.js';
import {
  contentSecurityPolicy,
  importMap,
  loadDashboardAssets,
  packageRoot,
} from '../coordinator/http/dashboard-assets.js';
import { createHttpServer } from '../coordinator/http/http-server.js';
import { createMetrics } from '../coordinator/http/metrics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';

// The dashboard as the coordinator serves it (design section 10): a real coordinator, real HTTP.
// The page, its CSP, and every module the page can import, found by following the imports from
// the page itself: a missing or unserved file fails here, not in an operator's browser.

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The specifiers a served ES module imports (static and dynamic), minified or not. */
function importsOf(source: string): string[] {
  const out = new Set<string>();
  for (const m of source.matchAll(/\b(?:import|export)\s*(?:[^'"`;()]*?\bfrom\s*)?["']([^"']+)["']/g))
    out.add(m[1] as string);
  for (const m of source.matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g)) out.add(m[1] as string);
  return [...out];
}

t.test('the coordinator serves the page with a strict CSP and every module it imports', async (t) => {
  const { running } = await startInProcessCoordinator(t);
  const base = running.httpUrl;
  const page = await get(`${base}/`);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html/);
  const csp = page.headers.get('content-security-policy') ?? '';
  t.match(csp, /default-src 'self'/);
  t.match(csp, /connect-src 'self'/);
  t.match(csp, /frame-ancestors 'none'/);
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/, 'no inline, no eval, no other origin');
  t.equal(page.headers.get('x-content-type-options'), 'nosniff');
  t.equal(page.headers.get('referrer-policy'), 'no-referrer');
  t.equal(page.headers.get('x-frame-options'), 'DENY');
  t.match(page.text, '<meta name="ota-topic-prefix" content="ota/v1" />');

  // The one inline script is the import map, allowed by its hash and nothing else.
  const inline = [...page.text.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
  const bodies = inline.filter((m) => (m[2] as string).trim() !== '');
  t.equal(bodies.length, 1, 'one inline script');
  t.match(bodies[0]?.[1], /type="importmap"/);
  const mapText = bodies[0]?.[2] as string;
  const hash = createHash('sha256').update(mapText).digest('base64');
  t.match(csp, `'sha256-${hash}'`, "the CSP allows exactly the import map's hash");
  const map = JSON.parse(mapText) as { imports: Record<string, string> };
  t.same(Object.keys(map.imports).sort(), ['htm', 'htm/preact', 'mqtt', 'preact', 'preact/hooks']);

  // Follow every import from the page's entry module: each must be served, as JavaScript.
  const entry = /<script type="module" src="([^"]+)"/.exec(page.text)?.[1] as string;
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const url = queue.shift() as string;
    if (seen.has(url)) continue;
    seen.add(url);
    const res = await get(`${base}${url}`);
    t.equal(res.status, 200, `${url} is served`);
    if (res.status !== 200) continue;
    t.match(res.headers.get('content-type'), /^text\/javascript/, `${url} is JavaScript`);
    t.ok(res.headers.get('content-security-policy'), `${url} carries the CSP`);
    for (const spec of importsOf(res.text)) {
      if (Object.hasOwn(map.imports, spec)) queue.push(map.imports[spec] as string);
      else if (spec.startsWith('.')) queue.push(new URL(spec, `http://x${url}`).pathname);
      else t.fail(`${url} imports ${spec}, which the import map does not map`);
    }
  }
  t.ok(
    seen.has('/ui/vendor/mqtt.js') && seen.has('/ui/shared/states.js'),
    'the graph reaches mqtt.js and the shared states',
  );
  t.ok(seen.size >= 20, `${seen.size} modules`);

  for (const url of ['/ui/style.css', '/ui/icon.svg']) t.equal((await get(`${base}${url}`)).status, 200, url);
});

t.test('only listed files are served; ETags revalidate; HEAD answers like GET', async (t) => {
  const { running } = await startInProcessCoordinator(t);
  const base = running.httpUrl;
  for (const url of [
    '/ui/',
    '/ui/nope.js',
    '/ui/shared/messages.js',
    '/ui/../package.json',
    '/ui/%2e%2e/%2e%2e/package.json',
    '/ui/dashboard/src/main.ts',
    '/ui/vendor/preact.js.map',
    '/index.html',
  ]) {
    const res = await get(`${base}${url}`);
    t.equal(res.status, 404, `${url} is not served`);
    t.notMatch(res.text, /"type":\s*"module"|\bimport\b.*from/, `${url}: no file content`);
  }
  const first = await get(`${base}/ui/dashboard/src/main.js`);
  const etag = first.headers.get('etag') as string;
  t.match(etag, /^"[0-9a-f]{32}"$/);
  const again = await fetch(`${base}/ui/dashboard/src/main.js`, { headers: { 'if-none-match': etag } });
  t.equal(again.status, 304);
  t.equal(first.headers.get('cache-control'), 'no-cache', 'revalidated at each load: an upgrade shows at once');
  const head = await fetch(`${base}/`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-security-policy'), (await get(`${base}/`)).headers.get('content-security-policy'));
  t.equal(await head.text(), '');
  t.equal((await get(`${base}/?next=%2Frollouts`)).status, 200, 'a query string does not change the file');
});

t.test('the topic prefix goes into the page escaped; an unbuilt app is reported, not crashed on', async (t) => {
  const assets = await loadDashboardAssets({ topicPrefix: 'acme/"ota"<v1>&' });
  const html = assets?.files.get('/')?.body.toString() ?? '';
  t.match(html, 'content="acme/&quot;ota&quot;&lt;v1&gt;&amp;"');
  t.equal(assets?.csp, contentSecurityPolicy(importMap()));

  // A package root without the built app: null, and `/` says how to build it.
  const root = t.testdir({ dashboard: {} });
  t.equal(await loadDashboardAssets({ topicPrefix: 'ota/v1', root }), null);
  const server = createHttpServer({
    artifacts: new ArtifactStore(path.join(root, 'artifacts')),
    metrics: createMetrics(),
    authenticate: () => null,
    publishRelease: async () => null,
    checkRelease: () => null,
    health: () => ({ ok: true }),
    onAuthFailure: () => {},
    dashboard: null,
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  const res = await get(`http://127.0.0.1:${port}/`);
  t.equal(res.status, 503);
  t.match(res.text, /npm run build/);
  t.equal((await get(`http://127.0.0.1:${port}/ui/style.css`)).status, 404);

  // A package whose vendor library is missing says which one to install (outside this checkout,
  // so no node_modules above it).
  const partial = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-dash-'));
  t.teardown(() => fs.rm(partial, { recursive: true, force: true }));
  await fs.mkdir(path.join(partial, 'dist', 'ui', 'dashboard', 'src'), { recursive: true });
  await fs.mkdir(path.join(partial, 'dist', 'ui', 'shared'), { recursive: true });
  await fs.mkdir(path.join(partial, 'dashboard'));
  await fs.writeFile(path.join(partial, 'dist', 'ui', 'dashboard', 'src', 'main.js'), '');
  for (const f of ['states.js', 'names.js', 'errors.js', 'device-filter.js', 'device-row.js']) {
    await fs.writeFile(path.join(partial, 'dist', 'ui', 'shared', f), '');
  }
  for (const f of ['index.html', 'style.css', 'icon.svg']) await fs.writeFile(path.join(partial, 'dashboard', f), '');
  await t.rejects(loadDashboardAssets({ topicPrefix: 'ota/v1', root: partial }), {
    message: /npm package preact: run npm install/,
  });
  t.ok((await fs.stat(path.join(packageRoot(), 'dashboard', 'index.html'))).isFile(), 'packageRoot is the package');
});

t.test('operator.whoami: the name, the role and the ops it may call (what the page offers)', async (t) => {
  const { running, admin } = await startInProcessCoordinator(t);
  const me = await admin.call<{ id: string; role: string; ops: string[] }>('operator.whoami');
  t.equal(me.id, 'admin');
  t.equal(me.role, 'admin');
  t.ok(me.ops.includes('operator.add') && me.ops.includes('rollout.approve'));
  const { token } = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });
  const vera = await CommandClient.connect({ url: running.mqttUrl, user: 'vera', token });
  t.teardown(() => vera.close());
  const her = await vera.call<{ id: string; role: string; ops: string[] }>('operator.whoami');
  t.equal(her.id, 'vera');
  t.equal(her.role, 'viewer');
  t.ok(her.ops.includes('rollout.status') && her.ops.includes('operator.whoami'));
  for (const op of ['rollout.approve', 'rollout.abort', 'release.publish', 'device.add']) {
    t.notOk(her.ops.includes(op), `a viewer is not offered ${op}`);
  }
  await t.rejects(vera.call('operator.whoami', { extra: 1 }), { code: 'E_USAGE' });
});

t.test('audit.ls newest: the last events (what the page loads first), in seq order', async (t) => {
  const { admin } = await startInProcessCoordinator(t);
  for (const name of ['o1', 'o2', 'o3', 'o4']) await admin.call('operator.add', { name, role: 'viewer' });
  type Ev = { seq: number; action: string };
  const all = await admin.call<Ev[]>('audit.ls', { limit: 1000 });
  t.ok(all.length >= 5);
  const last = all.slice(-3).map((e) => e.seq);
  t.same(
    (await admin.call<Ev[]>('audit.ls', { limit: 3, newest: true })).map((e) => e.seq),
    last,
  );
  t.same(
    (await admin.call<Ev[]>('audit.ls', { limit: 3 })).map((e) => e.seq),
    all.slice(0, 3).map((e) => e.seq),
    'without newest: the oldest, as before',
  );
  const from = all.at(-2)?.seq as number;
  t.same(
    (await admin.call<Ev[]>('audit.ls', { afterSeq: from, limit: 10, newest: true })).map((e) => e.seq),
    [all.at(-1)?.seq],
    'after a seq',
  );
  t.same(await admin.call('audit.ls', { rolloutId: 'none', limit: 5, newest: true }), []);
  await t.rejects(admin.call('audit.ls', { newest: 'yes' }), { code: 'E_USAGE' });
});
