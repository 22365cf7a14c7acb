// The per-file coverage gate, run after tap by `npm test` (posttest).
//
//   node .ci/coverage-check.mjs [--summary .tap/report/coverage-summary.json]
//                               [--policy .ci/coverage-policy.json] [--root .] [--suggest-floors]
//
// --suggest-floors prints, instead of checking, the `floors` the policy's rule gives for the
// last report (after a whole `npm test`): for each metric of a file below the default + 3
// points, 5 points under its value (never above the default). For after a refactor that moved
// code between files; review the output before pasting it into the policy.
//
// tap (node-tap 21) only checks the whole run's totals. This checks every source file under the
// policy's `include` folders (TypeScript, not .d.ts) against the policy's `default` thresholds
// (% of lines, branches, functions), or the file's own entry in `floors`. A file that is
// missing from tap's report was never loaded by a test and counts as 0%, unless it compiles to
// no code at all (types only: its dist/ .js is empty but for `export {};`). Files that cannot
// be covered by the tests are listed by name, each with the reason, in `excluded`. An excluded
// or floored file that no longer exists is an error too, so the policy cannot keep names that
// mean nothing. Exit status 1 with one line per problem.
//
// Code run in child processes (otactl, agents, the coordinator, probe and facts children, all
// started from dist/) counts for its TypeScript source: tap's processinfo loader follows every
// node child (NODE_OPTIONS), and the report maps dist/*.js back to the .ts through the source
// maps the build writes, so no dist/ path appears in the report.
//
// The gate is for the whole suite: when the last tap run did not run every test file (e.g.
// `npm test -- test/x.test.ts`), it says so and passes, since per-file numbers of a partial run
// mean nothing.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const METRICS = ['lines', 'branches', 'functions'];

/**
 * Pure: the problems found, as lines of text (empty when every file passes).
 * `summary` is istanbul's json-summary keyed by absolute path; `sources` the repo-relative paths
 * of the source files; `root` the absolute repo root the summary's paths are under.
 */
export function checkCoverage({ summary, policy, sources, root, typesOnly = () => false }) {
  const problems = [];
  const excluded = policy.excluded ?? {};
  const floors = policy.floors ?? {};
  const byFile = new Map();
  for (const [file, entry] of Object.entries(summary)) {
    if (file === 'total') continue;
    byFile.set(path.relative(root, file).split(path.sep).join('/'), entry);
  }
  const known = new Set(sources);
  for (const name of [...Object.keys(excluded), ...Object.keys(floors)]) {
    if (!known.has(name)) problems.push(`${name}: named in the coverage policy but no such source file; remove it`);
  }
  for (const [name, reason] of Object.entries(excluded)) {
    if (typeof reason !== 'string' || reason.trim() === '') {
      problems.push(`${name}: excluded without a reason; say why it cannot be covered in-process`);
    }
  }
  for (const name of sources) {
    if (Object.hasOwn(excluded, name)) continue;
    const want = { ...policy.default, ...(Object.hasOwn(floors, name) ? floors[name] : {}) };
    const entry = byFile.get(name);
    if (!entry) {
      if (typesOnly(name)) continue;
      problems.push(`${name}: not loaded by any test (0%); test it in-process, or exclude it by name with the reason`);
      continue;
    }
    const below = METRICS.filter((m) => want[m] !== undefined && pct(entry[m]) < want[m]).map(
      (m) => `${m} ${pct(entry[m])}% < ${want[m]}%`,
    );
    if (below.length) problems.push(`${name}: ${below.join(', ')}`);
  }
  return problems;
}

/** The floors rule of the policy (see --suggest-floors) applied to a report. */
export function suggestFloors({ summary, policy, root }) {
  const floors = {};
  for (const [file, entry] of Object.entries(summary)) {
    if (file === 'total') continue;
    const name = path.relative(root, file).split(path.sep).join('/');
    const floor = {};
    for (const m of METRICS) {
      const want = policy.default[m];
      if (want !== undefined && pct(entry[m]) < want + 3)
        floor[m] = Math.max(0, Math.min(want, Math.floor(pct(entry[m])) - 5));
    }
    if (Object.keys(floor).length) floors[name] = floor;
  }
  return Object.fromEntries(Object.entries(floors).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** istanbul reports 100 for a metric with nothing to cover (total 0), and "Unknown" in old versions. */
function pct(metric) {
  if (!metric || metric.total === 0) return 100;
  return Math.floor((metric.covered / metric.total) * 10000) / 100;
}

/** Repo-relative .ts files (no .d.ts) under the given folders, with '/' separators. */
export function sourceFiles(root, folders) {
  const out = [];
  const walk = (rel) => {
    const abs = path.join(root, rel);
    for (const name of readdirSync(abs).sort()) {
      const child = rel ? `${rel}/${name}` : name;
      if (name === 'node_modules' || name.startsWith('.')) continue;
      if (statSync(path.join(abs, name)).isDirectory()) walk(child);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(child);
    }
  };
  for (const folder of folders) if (existsSync(path.join(root, folder))) walk(folder);
  return out;
}

/** True when the build compiled `file` to no code (types only): nothing to cover. */
export function compiledToNothing(root, file) {
  const js = path.join(root, 'dist', file.replace(/\.ts$/, '.js'));
  if (!existsSync(js)) return false;
  const code = readFileSync(js, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '')
    .replace(/^\s*export \{\};\s*$/m, '');
  return code.trim() === '';
}

/** Test files of the suite not run by the last tap run (.tap/processinfo: one root per test file). */
export function testFilesNotRun(root) {
  const all = [];
  const walk = (rel) => {
    for (const name of readdirSync(path.join(root, rel))) {
      const child = `${rel}/${name}`;
      if (statSync(path.join(root, child)).isDirectory()) walk(child);
      else if (name.endsWith('.test.ts')) all.push(child);
    }
  };
  walk('test');
  const ran = new Set();
  const dir = path.join(root, '.tap/processinfo');
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const info = JSON.parse(readFileSync(path.join(dir, name), 'utf8'));
    if (info.parent) continue;
    for (const a of info.argv ?? [])
      ran.add(
        path
          .relative(root, path.resolve(info.cwd ?? root, a))
          .split(path.sep)
          .join('/'),
      );
  }
  return all.filter((f) => !ran.has(f));
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : process.argv[i + 1];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const root = path.resolve(arg('root', '.'));
  const suggest = process.argv.includes('--suggest-floors');
  const notRun = testFilesNotRun(root);
  if (notRun.length && !suggest) {
    console.log(
      `coverage: the last tap run left out ${notRun.length} test file(s) (${notRun.slice(0, 3).join(', ')}` +
        `${notRun.length > 3 ? ', ...' : ''}): per-file gate skipped; it applies to the whole suite (npm test)`,
    );
    process.exit(0);
  }
  const summaryFile = path.resolve(root, arg('summary', '.tap/report/coverage-summary.json'));
  const policyFile = path.resolve(root, arg('policy', '.ci/coverage-policy.json'));
  let summary;
  try {
    summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
  } catch (err) {
    console.error(
      `coverage: cannot read ${summaryFile} (${err.code ?? err.message}); run the tests first (npm test), ` +
        'with json-summary among the coverage-report types in .taprc',
    );
    process.exit(1);
  }
  const policy = JSON.parse(readFileSync(policyFile, 'utf8'));
  if (suggest) {
    console.log(JSON.stringify(suggestFloors({ summary, policy, root }), null, 2));
    process.exit(0);
  }
  const sources = sourceFiles(root, policy.include);
  const problems = checkCoverage({ summary, policy, sources, root, typesOnly: (f) => compiledToNothing(root, f) });
  if (problems.length) {
    console.error(`coverage: ${problems.length} of ${sources.length} source files below the per-file gate:`);
    for (const p of problems) console.error(`  ${p}`);
    console.error('(thresholds and exclusions: .ci/coverage-policy.json; README.md, "Tests and coverage")');
    process.exit(1);
  }
  const excluded = Object.keys(policy.excluded ?? {}).length;
  console.log(
    `coverage: ${sources.length - excluded} source files at or above their thresholds (${excluded} excluded by name)`,
  );
}
