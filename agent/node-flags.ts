/**
 * The V8 flags the agent runs with on a device (the wrapper scripts/install-agent.sh writes, and
 * `npm run bench:update`; test/systemd.test.ts keeps the wrapper in step with this list).
 *
 * The agent idles most of its life and its hot paths are native (sha256, file I/O, node:crypto
 * Ed25519), so memory matters more than JavaScript speed: `--no-opt` skips the optimising
 * compiler (its code and type feedback; the baseline compiler still runs), and
 * `--max-semi-space-size=1` (MB) keeps the young generation small, so short-lived garbage is
 * collected early. Measured: idle RSS ~73 -> ~64 MB, a download's peak ~90 -> ~75 MB, the update
 * path still below the single-pass floor. `--lite-mode` saved 2 MB more but made large downloads
 * up to 1.3x slower (BENCHMARKS.md, agent memory).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--no-opt'];

/**
 * Node flags for the agent's child processes (probe, model inspection, facts): the parent's,
 * without debugger flags (a child must not fight for the inspector port) and without
 * AGENT_NODE_FLAGS: children are short-lived and run the JavaScript-heavy work (output checks of
 * large tensors), at full speed.
 */
export function childExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  return execArgv.filter((a) => !/^--(inspect|debug)/.test(a) && !AGENT_NODE_FLAGS.includes(a));
}
