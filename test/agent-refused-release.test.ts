import t from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import type { RolloutSummary } from '../shared/messages.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// A release a device cannot take (another architecture, too little memory) is refused before a
// byte is fetched. The real agent's report must name the version it refused (docs/protocol.md:
// `version` is the version the state is about), so the operator sees which release the device
// cannot take and the rollout, which counts reports by version, counts the refusal as a failure.

t.setTimeout(180_000);

t.test('a release refused for its requirements is reported failed with its version and counted', async (t) => {
  const f = await FleetFixture.create(t);
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  await f.enrol('cam-1');
  await f.waitForDevice('cam-1', 'det', 'healthy', '1.0.0');

  const cases = [
    { version: '2.0.0-other-arch', requires: { arch: ['no-such-arch'] }, why: /architecture no-such-arch/ },
    { version: '2.0.0-big-memory', requires: { minMemoryMB: 100_000_000 }, why: /100000000 MB of memory/ },
  ];
  for (const [i, c] of cases.entries()) {
    await f.publish('det', c.version, goodModel(2 + i), { counter: 2 + i, manifest: { requires: c.requires } });
    const rolloutId = `r-refused-${i}`;
    await f.admin.call<RolloutSummary>('rollout.create', {
      id: rolloutId,
      model: 'det',
      version: c.version,
      devices: ['cam-1'],
      waves: '100',
      maxFailureRate: 0,
    });
    const refused = await f.waitFor(`cam-1 refuses ${c.version}`, () => {
      const m = f.lastReport('cam-1')?.models.det;
      return m?.state === 'failed' && m.rolloutId === rolloutId ? m : undefined;
    });
    t.match(
      refused,
      { version: c.version, current: '1.0.0', error: { code: 'E_REQUIREMENTS', message: c.why } },
      `${c.version}: the report names the refused version`,
    );
    t.equal(await f.link('cam-1', 'det'), '1.0.0', `${c.version}: still running 1.0.0`);
    const summary = await f.waitForRollout(rolloutId, (s) => s.failures.count === 1, 'the refusal counted');
    t.equal(summary.waves[0]?.counts.failed, 1, `${c.version}: the device is failed in its wave`);
    await f.waitForRollout(rolloutId, (s) => s.status === 'halted', 'halted by the refusal');
    await f.admin.call('rollout.abort', { id: rolloutId, policy: 'keep' });
  }
});
