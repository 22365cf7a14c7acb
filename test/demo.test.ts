import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

// `npm run demo` must keep working: run the compiled demo and hold it to its own verdict.
t.test('the demo runs every step as shown', async (t) => {
  const demo = fileURLToPath(new URL('../dist/scripts/demo.js', import.meta.url));
  const r = spawnSync(process.execPath, [demo], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /demo: every step behaved as shown/);
  t.match(r.stdout, /error E_(SIZE|DIGEST): /, 'the tampered model is refused by code');
});
