import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

// `npm run demo` must keep working: it drives the whole scenario through the otactl binary (a
// coordinator process, six real agents, v1 -> v2 in gated waves -> a bad v3 that halts and is
// reverted) and checks every step's exit code itself. Here it is held to its verdict and to the
// output a person sees at the key steps.
t.setTimeout(240_000);

t.test('the demo runs every step as shown and leaves nothing running', async (t) => {
  const demo = fileURLToPath(new URL('../dist/scripts/demo.js', import.meta.url));
  const child = spawn(process.execPath, [demo], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  t.equal(code, 0, `demo exit code (stderr: ${stderr.slice(-2000)}; stdout tail: ${stdout.slice(-3000)})`);
  t.match(stdout, /demo: every step behaved as shown/);
  t.match(stdout, /coordinator ready: mqtt mqtt:\/\/127\.0\.0\.1:\d+/);
  t.match(stdout, /\$ otactl rollout approve demo-v2/);
  t.match(stdout, /\$ otactl rollout status demo-v3 --watch/);
  t.match(stdout, /halted/i, 'the bad rollout halts');
  t.match(stdout, /E_PROBE_FAILED/, 'and says why');
  t.notMatch(stdout, /!! /, 'no step misbehaved');
});
