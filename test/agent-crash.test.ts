import t from 'tap';
import type { CrashPoint } from '../agent/runtime/agent-runtime.js';
import { goodModel } from '../scripts/tiny-models.js';
import { deviceOnV1, HOOKS, REPEAT } from './helpers/crash.js';

// kill -9 at every step of the pipeline (test-only injection points), then restart: `current`
// always points at a complete verified version, and the agent converges without help.

// Eight tests of three rounds, each round three agent processes: more than the default file timeout.
// (The rollback and the resumed download are in agent-crash-recovery.test.ts.)
t.setTimeout(400_000);

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
      const exit = await crashing.exitsWithin(60_000, `crash at ${point}`);
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
