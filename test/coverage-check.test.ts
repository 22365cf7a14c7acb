import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';

// The per-file coverage gate (.ci/coverage-check.mjs, npm test's posttest), run as npm runs it,
// over a made-up project: sources, a tap json-summary report, the processinfo of the last run,
// and a policy.

const CHECK = path.resolve(import.meta.dirname, '../.ci/coverage-check.mjs');

const metric = (covered: number, total: number) => ({ total, covered, skipped: 0, pct: (covered / total) * 100 });
const entry = (lines: number, branches = 100, functions = 100) => ({
  lines: metric(lines, 100),
  statements: metric(lines, 100),
  branches: metric(branches, 100),
  functions: metric(functions, 100),
});

interface Project {
  report?: Record<string, ReturnType<typeof entry>>;
  policy?: object;
  ran?: string[];
  args?: string[];
}

/** A project with agent/{good,weak,types}.ts and two test files; runs the check in it. */
function check(t: Test, { report, policy, ran = ['test/a.test.ts', 'test/b.test.ts'], args = [] }: Project = {}) {
  const root = t.testdir({
    agent: { 'good.ts': 'export const a = 1;', 'weak.ts': 'export const b = 2;', 'types.ts': 'export type T = 1;' },
    // The build: types.ts compiled to no code.
    dist: { agent: { 'types.js': '/** doc */\nexport {};\n//# sourceMappingURL=types.js.map\n' } },
    test: { 'a.test.ts': '', 'b.test.ts': '' },
    '.ci': {
      'coverage-policy.json': JSON.stringify(
        policy ?? { include: ['agent'], default: { lines: 85, branches: 70, functions: 85 } },
      ),
    },
  });
  const files = report ?? { 'agent/good.ts': entry(95), 'agent/weak.ts': entry(90) };
  const summary = Object.fromEntries(Object.entries(files).map(([f, e]) => [path.join(root, f), e]));
  mkdirSync(path.join(root, '.tap/report'), { recursive: true });
  writeFileSync(path.join(root, '.tap/report/coverage-summary.json'), JSON.stringify({ total: entry(0), ...summary }));
  // One processinfo root per test file the last run ran, and a child process of one of them.
  mkdirSync(path.join(root, '.tap/processinfo'), { recursive: true });
  ran.forEach((f, i) => {
    const info = { parent: null, cwd: root, argv: ['node', path.join(root, f)] };
    writeFileSync(path.join(root, `.tap/processinfo/${i}.json`), JSON.stringify(info));
  });
  const child = { parent: '0', cwd: root, argv: ['node', 'dist/agent/main.js'] };
  writeFileSync(path.join(root, '.tap/processinfo/child.json'), JSON.stringify(child));
  const r = spawnSync(process.execPath, [CHECK, '--root', root, ...args], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

t.test('every file at or above the default passes; a types-only file needs no coverage', async (t) => {
  const r = check(t);
  t.equal(r.status, 0, r.out);
  t.match(r.out, /coverage: 3 source files at or above their thresholds \(0 excluded by name\)/);
});

t.test('a file below the default fails, named with each metric below', async (t) => {
  const r = check(t, { report: { 'agent/good.ts': entry(95), 'agent/weak.ts': entry(60, 50, 90) } });
  t.equal(r.status, 1);
  t.match(r.out, /1 of 3 source files below the per-file gate/);
  t.match(r.out, /agent\/weak\.ts: lines 60% < 85%, branches 50% < 70%\n/);
  t.notMatch(r.out, /good\.ts/);
});

t.test("a file's floor replaces the default for the metrics it names", async (t) => {
  const policy = {
    include: ['agent'],
    default: { lines: 85, branches: 70 },
    floors: { 'agent/weak.ts': { lines: 55 } },
  };
  const pass = check(t, { policy, report: { 'agent/good.ts': entry(95), 'agent/weak.ts': entry(60) } });
  t.equal(pass.status, 0, pass.out);
  const fail = check(t, { policy, report: { 'agent/good.ts': entry(95), 'agent/weak.ts': entry(50, 60) } });
  t.equal(fail.status, 1);
  t.match(fail.out, /agent\/weak\.ts: lines 50% < 55%, branches 60% < 70%/);
});

t.test('a file no test loaded counts as 0%; excluded by name with a reason, it is left out', async (t) => {
  const missing = check(t, { report: { 'agent/good.ts': entry(95) } });
  t.equal(missing.status, 1);
  t.match(missing.out, /agent\/weak\.ts: not loaded by any test \(0%\); test it in-process, or exclude it by name/);
  const policy = {
    include: ['agent'],
    default: { lines: 85 },
    excluded: { 'agent/weak.ts': 'runs only as a process' },
  };
  const excluded = check(t, { policy, report: { 'agent/good.ts': entry(95) } });
  t.equal(excluded.status, 0, excluded.out);
  t.match(excluded.out, /\(1 excluded by name\)/);
});

t.test('the policy cannot name a file that does not exist, nor exclude one without a reason', async (t) => {
  const policy = {
    include: ['agent'],
    default: { lines: 85 },
    excluded: { 'agent/gone.ts': 'was a CLI', 'agent/weak.ts': ' ' },
    floors: { 'agent/old.ts': { lines: 10 } },
  };
  const r = check(t, { policy });
  t.equal(r.status, 1);
  t.match(r.out, /agent\/gone\.ts: named in the coverage policy but no such source file; remove it/);
  t.match(r.out, /agent\/old\.ts: named in the coverage policy but no such source file/);
  t.match(r.out, /agent\/weak\.ts: excluded without a reason/);
});

t.test('a run of some test files only: the gate says so and passes', async (t) => {
  const r = check(t, { ran: ['test/a.test.ts'], report: { 'agent/good.ts': entry(10) } });
  t.equal(r.status, 0, r.out);
  t.match(r.out, /left out 1 test file\(s\) \(test\/b\.test\.ts\): per-file gate skipped/);
});

t.test('--suggest-floors: 5 points under each metric below the default + 3, never above the default', async (t) => {
  const r = check(t, {
    args: ['--suggest-floors'],
    report: { 'agent/good.ts': entry(95, 95, 95), 'agent/weak.ts': entry(60, 72, 87) },
  });
  t.equal(r.status, 0, r.out);
  t.same(JSON.parse(r.out), { 'agent/weak.ts': { lines: 55, branches: 67, functions: 82 } });
});
