import t, { type Test } from 'tap';
import type { CrashPoint } from '../agent/runtime/agent-runtime.js';
import { goodModel, wrongOutputsModel } from '../scripts/tiny-models.js';
import { AgentFixture } from './helpers/agent-fixture.js';
import { paddedGoodModel } from './helpers/models.js';

// kill -9 at every step of the pipeline (test-only injection points), then restart: `current`
// always points at a complete verified version, and the agent converges without help.

// Ten tests of three rounds, each round three agent processes: more than the default file timeout.
t.setTimeout(400_000);

const HOOKS = { OTA_AGENT_TEST_HOOKS: '1' };
const REPEAT = 3;

/** A device running v1, its agent stopped cleanly; returns the fixture and the v1 bytes. */
async function deviceOnV1(t: Test, deviceId: string) {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent(deviceId);
  const v1 = goodModel(1);
  await f.assign(deviceId, { det: { envelope: f.release('det', '1.0.0', v1, { counter: 1 }) } });
  await f.observer.waitForState(deviceId, 'det', 'healthy');
  await agent.stop();
  return { f, v1 };
}

const GOOD_PATH: CrashPoint[] = [
  'download-start',
  'downloaded',
  'verify',
  'apply-start',
  'installed',
  'swapped',
  'probe-start',
  'probed',
];

for (const point of GOOD_PATH) {
  t.test(`kill -9 at ${point}, restart: converges to the new version`, async (t) => {
    for (let round = 1; round <= REPEAT; round++) {
      const device = `crash-${point}-${round}`;
      const { f, v1 } = await deviceOnV1(t, device);
      const v2 = goodModel(2);
      const crashing = f.startAgent(device, { ...HOOKS, OTA_AGENT_TEST_CRASH_AT: point });
      await f.assign(device, { det: { envelope: f.release('det', '2.0.0', v2, { counter: 2 }), rolloutId: 'r' } });
      const exit = await crashing.exited;
      t.equal(exit.signal, 'SIGKILL', `round ${round}: killed at ${point}`);
      // Right after the crash: current is a complete, verified version, old or new.
      const current = await f.link(device, 'det', 'current');
      const visible = await f.appVisible(device, 'det');
      t.ok(
        (current === '1.0.0' && Buffer.from(v1).equals(visible ?? Buffer.alloc(0))) ||
          (current === '2.0.0' && Buffer.from(v2).equals(visible ?? Buffer.alloc(0))),
        `round ${round}: current=${current} is complete`,
      );
      const restarted = f.startAgent(device);
      const r = await f.observer.waitFor(`${device} healthy on 2.0.0`, () => {
        const last = f.observer.last(device);
        return last?.models.det?.state === 'healthy' && last.models.det.version === '2.0.0' ? last : undefined;
      });
      t.match(r.models.det, { current: '2.0.0', previousVersion: '1.0.0', error: null });
      t.same(await f.appVisible(device, 'det'), Buffer.from(v2));
      await restarted.stop();
    }
  });
}

t.test('kill -9 during a rollback, restart: the rollback completes', async (t) => {
  for (let round = 1; round <= REPEAT; round++) {
    const device = `crash-rollback-${round}`;
    const { f, v1 } = await deviceOnV1(t, device);
    const crashing = f.startAgent(device, { ...HOOKS, OTA_AGENT_TEST_CRASH_AT: 'rollback' });
    await f.assign(device, { det: { envelope: f.release('det', '2.0.0', wrongOutputsModel(), { counter: 2 }) } });
    t.equal((await crashing.exited).signal, 'SIGKILL');
    t.equal(await f.link(device, 'det', 'current'), '1.0.0', 'the swap back happened before the kill');
    f.startAgent(device);
    const r = await f.observer.waitFor(`${device} rolled back`, () => {
      const last = f.observer.last(device);
      return last?.models.det?.state === 'rolled_back' ? last : undefined;
    });
    t.match(r.models.det, { version: '2.0.0', current: '1.0.0', error: { code: 'E_PROBE_FAILED' } });
    t.same(await f.appVisible(device, 'det'), Buffer.from(v1));
  }
});

t.test('a download killed mid-way resumes where it stopped', async (t) => {
  for (let round = 1; round <= REPEAT; round++) {
    const device = `resume-${round}`;
    const { f } = await deviceOnV1(t, device);
    const big = paddedGoodModel(6 * 1024 * 1024, round);
    const envelope = f.release('det', '2.0.0', big, { counter: 2 });
    const sha = (JSON.parse(envelope.manifest) as { sha256: string }).sha256;
    f.artifacts.throttle = { bytes: 256 * 1024, everyMs: 20 };
    const crashing = f.startAgent(device, { ...HOOKS, OTA_AGENT_TEST_CRASH_AT: 'download-mid' });
    await f.assign(device, { det: { envelope } });
    t.equal((await crashing.exited).signal, 'SIGKILL');
    const firstBytes = f.artifacts.bytesSentFor(sha);
    f.startAgent(device);
    await f.observer.waitFor(`${device} healthy`, () => {
      const last = f.observer.last(device);
      return last?.models.det?.state === 'healthy' && last.models.det.version === '2.0.0' ? last : undefined;
    });
    const requests = f.artifacts.requests.filter((r) => r.path.endsWith(sha));
    t.equal(requests.length, 2, 'one request before the kill, one after');
    t.match(requests[1]?.range ?? '', /^bytes=\d+-$/, 'the second request asks for the rest (Range)');
    const resumedAt = Number(/bytes=(\d+)-/.exec(requests[1]?.range ?? '')?.[1]);
    t.ok(resumedAt >= big.length / 4, `resumed at byte ${resumedAt} of ${big.length}`);
    const total = f.artifacts.bytesSentFor(sha);
    // Bytes sent twice are at most what was in flight at the kill (socket buffers), not the file.
    t.ok(total - big.length <= firstBytes - resumedAt, `sent ${total} bytes for a ${big.length}-byte file`);
    t.ok(total <= big.length * 1.25, 'downloaded twice: bounded');
  }
});
