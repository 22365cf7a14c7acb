import t from 'tap';
import { goodModel, nanModel } from '../scripts/tiny-models.js';
import type { AuditEvent, RolloutSummary } from '../shared/messages.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// Issue 11 B, the operator's sequence with real agents: v2 stable everywhere; a NaN v3 halts on
// its canary (which rolls back and keeps running v2); `abort --policy keep`; a NaN v4 halts on
// the same device; `abort --policy revert` must send it back to v2, the release it last ran
// healthy, never to v3 (which failed there), and the audit says which device went where.

t.setTimeout(300_000);

interface Shown {
  desired: { model: string; releaseId: string }[];
}

t.test('abort revert goes back to what the device ran healthy, never to a release that failed on it', async (t) => {
  const f = await FleetFixture.create(t);
  await f.publish('det', '2.0.0', goodModel(2), { channel: 'stable', counter: 2 });
  await f.enrol('rv-1');
  await f.waitForDevice('rv-1', 'det', 'healthy', '2.0.0');

  // v3 fails its probe on rv-1: rolled back, still running v2; the rollout halts.
  await f.publish('det', '3.0.0', nanModel(), { counter: 3 });
  await f.admin.call('rollout.create', { id: 'r-v3', model: 'det', version: '3.0.0', devices: ['rv-1'], waves: '100' });
  await f.waitForRollout('r-v3', (s) => s.status === 'halted', 'v3 halted');
  await f.waitForDevice('rv-1', 'det', 'rolled_back', '3.0.0');
  t.equal(await f.link('rv-1', 'det'), '2.0.0', 'rv-1 runs 2.0.0 after the rollback');

  // abort keep: rv-1 keeps what it runs, and its desired state says so (not the failed v3).
  const kept = await f.admin.call<RolloutSummary>('rollout.abort', { id: 'r-v3', policy: 'keep' });
  t.match(kept, { status: 'aborted', abortPolicy: 'keep', reverted: 1, failures: { count: 1 } });
  const afterKeep = await f.admin.call<Shown>('device.show', { id: 'rv-1' });
  t.match(afterKeep.desired, [{ model: 'det', releaseId: 'det@2.0.0' }], 'desired state: what it runs');

  // v4 fails there too; its rollout halts.
  await f.publish('det', '4.0.0', nanModel(), { counter: 4 });
  await f.admin.call('rollout.create', { id: 'r-v4', model: 'det', version: '4.0.0', devices: ['rv-1'], waves: '100' });
  await f.waitForRollout('r-v4', (s) => s.status === 'halted', 'v4 halted');
  await f.waitForDevice('rv-1', 'det', 'rolled_back', '4.0.0');
  const seqBefore = f.lastReport('rv-1')?.seq ?? 0;

  const reverted = await f.admin.call<RolloutSummary>('rollout.abort', { id: 'r-v4', policy: 'revert' });
  t.match(reverted, { status: 'aborted', abortPolicy: 'revert', reverted: 1 });
  t.equal(reverted.failures.count, 1, 'the failure that halted it is still shown (item 1)');
  t.match(reverted.waves[0], { counts: { rolled_back: 1 }, reverted: 1 }, 'the wave keeps its final counts');
  const shown = await f.admin.call<Shown>('device.show', { id: 'rv-1' });
  t.match(shown.desired, [{ model: 'det', releaseId: 'det@2.0.0' }], 'sent back to 2.0.0, not to the failed 3.0.0');

  // The agent took the new desired state (a higher seq) and runs 2.0.0, never downloading 3.0.0.
  const settled = await f.waitFor('rv-1 acknowledged the revert', () => {
    const r = f.lastReport('rv-1');
    return r && r.seq > seqBefore ? r : undefined;
  });
  t.equal(settled.models.det?.current, '2.0.0');
  const reportsAfter = (f.reports.get('rv-1') ?? []).filter((r) => r.seq > seqBefore);
  t.notOk(
    reportsAfter.some((r) => r.models.det?.version === '3.0.0'),
    'no report about 3.0.0 after the revert',
  );
  t.equal(await f.link('rv-1', 'det'), '2.0.0');

  const status = await f.admin.call<{ devices: { id: string; state: string; revertedTo: unknown }[] }>(
    'rollout.status',
    { id: 'r-v4' },
  );
  t.match(status.devices, [{ id: 'rv-1', state: 'rolled_back', revertedTo: { version: '2.0.0' } }]);
  const audit = await f.admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'r-v4' });
  t.match(
    audit.find((e) => e.action === 'rollout.aborted')?.details,
    { policy: 'revert', reverted: 1, setBack: [{ version: '2.0.0', devices: ['rv-1'] }] },
    'the audit says which device went to which version',
  );
});
