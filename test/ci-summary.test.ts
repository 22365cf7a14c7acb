import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';

// .ci/run's closing line "N passed, N failed" (.ci/summary.mjs): tap's test points plus one point
// each for typecheck and lint. Run as CI runs them: node over the script, and .ci/run itself with
// a stand-in `npm` on PATH (the real one would reinstall node_modules).

const ROOT = path.resolve(import.meta.dirname, '..');

function summary(dir: string, ...args: string[]): { line: string; status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, '.ci/summary.mjs'), dir, ...args], { encoding: 'utf8' });
  return { line: r.stdout.trim(), status: r.status, stderr: r.stderr };
}

const GREEN = 'TAP version 14\nok 1 - a\nok 2 - b\nnot ok 3 - c # SKIP not here\n1..3\n';

t.test('tap points, then one point per check: a failed typecheck or lint is a failed point', async (t) => {
  const dir = t.testdir({ test: { 'a.test.ts.tap': GREEN } });
  t.equal(summary(dir, '0').line, '2 passed, 0 failed', 'skipped points count as neither');
  t.equal(summary(dir, '0', 'typecheck=0', 'lint=0').line, '4 passed, 0 failed');
  t.equal(summary(dir, '0', 'typecheck=2', 'lint=0').line, '3 passed, 1 failed', 'typecheck failed');
  t.equal(summary(dir, '0', 'typecheck=0', 'lint=1').line, '3 passed, 1 failed', 'lint failed');
  t.equal(
    summary(dir, '1', 'typecheck=2', 'lint=1').line,
    '2 passed, 3 failed',
    'and a red npm test with no failing point',
  );
});

t.test('a file that ended without a plan counts as one failure; failing points count each', async (t) => {
  const dir = t.testdir({
    test: { 'crashed.test.ts.tap': 'ok 1 - a\n', 'red.test.ts.tap': 'not ok 1 - a\nnot ok 2 - b\nok 3 - c\n1..3\n' },
  });
  t.equal(summary(dir, '1', 'typecheck=0', 'lint=0').line, '4 passed, 3 failed');
});

t.test('a malformed check is an error, not a silent pass', async (t) => {
  const dir = t.testdir({ test: { 'a.test.ts.tap': GREEN } });
  const r = summary(dir, '0', 'typecheck=');
  t.equal(r.status, 2);
  t.match(r.stderr, /a check is <name>=<exit status> \(e\.g\. typecheck=0\), got "typecheck="/);
  t.equal(summary(dir, 'x').status, 2, 'a tap status that is no number');
});

const hasBash = (() => {
  try {
    execFileSync('bash', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('.ci/run ends with the line, counting a failed typecheck', { skip: hasBash ? false : 'no bash' }, async (t) => {
  const dir = t.testdir({
    repo: { '.ci': {} },
    bin: {
      // Stands in for npm: `ci` succeeds, typecheck and lint exit with $FAKE_TC / $FAKE_LINT, and
      // `test` writes a green tap result the way tap does.
      npm: [
        '#!/usr/bin/env bash',
        'case "$*" in',
        '  --version) echo 10.0.0;;',
        '  ci*) exit 0;;',
        '  "run --silent typecheck") echo "error TS2322: stand-in"; exit "$FAKE_TC";;',
        '  "run --silent lint") exit "$FAKE_LINT";;',
        `  test) mkdir -p .tap/test-results/test && printf 'ok 1 - a\\nok 2 - b\\n1..2\\n' > .tap/test-results/test/a.test.ts.tap; exit 0;;`,
        '  *) echo "unexpected npm $*" >&2; exit 99;;',
        'esac',
      ].join('\n'),
    },
  });
  await fs.chmod(path.join(dir, 'bin/npm'), 0o755);
  for (const f of ['run', 'summary.mjs']) await fs.copyFile(path.join(ROOT, '.ci', f), path.join(dir, 'repo/.ci', f));
  const run = (env: Record<string, string>) => {
    const r = spawnSync('bash', [path.join(dir, 'repo/.ci/run')], {
      encoding: 'utf8',
      env: {
        ...process.env,
        PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`,
        FAKE_TC: '0',
        FAKE_LINT: '0',
        ...env,
      },
    });
    return { last: r.stdout.trimEnd().split('\n').at(-1), status: r.status };
  };
  t.same(run({}), { last: '4 passed, 0 failed', status: 0 }, 'all green');
  t.same(run({ FAKE_TC: '2' }), { last: '3 passed, 1 failed', status: 1 }, 'typecheck failed');
  t.same(run({ FAKE_LINT: '1' }), { last: '3 passed, 1 failed', status: 1 }, 'lint failed');
});
