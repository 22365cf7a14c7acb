import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { goodModel, nanModel } from '../scripts/tiny-models.js';
import { AgentFixture } from './helpers/agent-fixture.js';

// Issue 11 B with a real agent: a revert to the version the canary ran healthy arrives while the
// canary is rolling back from the candidate that failed its probe. The device must end healthy on
// that version, with the failed candidate neither `current` nor `previous` (the next update's
// rollback target), and without a new download.
//
// The rollback is held open by the model's reload action (the agent runs it after restoring the
// links): a script that, once the test armed it, waits for a file the test creates. The script
// itself says when it is waiting and when it is done, so the test knows from the disk, not from a
// delay, that the revert arrived mid-rollback.

t.setTimeout(120_000);

const HOLD = `#!/bin/sh
# $1 the model's current link, $2 armed, $3 waiting, $4 release, $5 done.
# Holds the reload (so the rollback) open while armed and current is the version restored.
if [ -e "$2" ] && [ "$(readlink "$1")" = "2.0.0" ]; then
  : > "$3"
  while [ ! -e "$4" ]; do sleep 0.05; done
  : > "$5"
fi
`;

t.test('a revert arriving while the canary rolls back ends healthy on the version it ran before', async (t) => {
  const f = await AgentFixture.create(t);
  const script = path.join(f.dir, 'hold-reload.sh');
  await fs.writeFile(script, HOLD, { mode: 0o755 });
  const file = (name: string) => path.join(f.dir, name);
  const current = path.join(f.stateDir('cam-r'), 'models', 'det', 'current');
  f.startAgent(
    'cam-r',
    {},
    {
      reloadAllowlist: [script],
      reloadActions: {
        det: { path: script, argv: [current, file('armed'), file('waiting'), file('release'), file('done')] },
      },
    },
  );
  const deviceSeq = () => f.observer.last('cam-r')?.seq ?? 0;

  // 2.0.0 healthy.
  const v2 = f.release('det', '2.0.0', goodModel(2), { counter: 2 });
  await f.observer.publishDesired('cam-r', f.signers.desired('cam-r', { det: { envelope: v2, rolloutId: 'r2' } }, 1));
  await f.observer.waitFor('2.0.0 healthy', () => {
    const m = f.observer.last('cam-r')?.models.det;
    return m?.state === 'healthy' && m.version === '2.0.0';
  });

  // The 3.0.0 canary fails its probe; its rollback (back to 2.0.0) is held in the reload action.
  await fs.writeFile(file('armed'), '');
  const v3 = f.release('det', '3.0.0', nanModel(), { counter: 3 });
  await f.observer.publishDesired('cam-r', f.signers.desired('cam-r', { det: { envelope: v3, rolloutId: 'r3' } }, 2));
  await f.observer.waitFor('the rollback held in the reload action', () => existsSync(file('waiting')));
  t.match(
    f.observer.last('cam-r')?.models.det,
    { state: 'probing', version: '3.0.0', error: { code: 'E_PROBE_NONFINITE' } },
    'rolling back from 3.0.0',
  );

  // The revert to 2.0.0 arrives mid-rollback: acknowledged (its seq), and it waits for the rollback.
  await f.observer.publishDesired('cam-r', f.signers.desired('cam-r', { det: { envelope: v2, rolloutId: null } }, 3));
  const ack = await f.observer.waitFor('the revert acknowledged', () => {
    const r = f.observer.last('cam-r');
    return r && r.seq === 3 ? r : undefined;
  });
  t.notOk(existsSync(file('done')), 'acknowledged while the rollback was still running');
  t.match(ack.models.det, { state: 'probing', version: '3.0.0', error: { code: 'E_PROBE_NONFINITE' } });
  const reportsBefore = f.observer.reports.get('cam-r')?.length ?? 0;

  await fs.rm(file('armed'));
  await fs.writeFile(file('release'), '');
  const settled = await f.observer.waitFor('healthy on 2.0.0 again', () => {
    const r = f.observer.last('cam-r');
    return r?.models.det?.state === 'healthy' && r.models.det.version === '2.0.0' ? r : undefined;
  });
  t.match(settled.models.det, { current: '2.0.0', previousVersion: null, rolloutId: null, error: null });
  t.equal(await f.link('cam-r', 'det', 'current'), '2.0.0');
  t.equal(await f.link('cam-r', 'det', 'previous'), null, 'the failed 3.0.0 is not the rollback target');
  const after = (f.observer.reports.get('cam-r') ?? []).slice(reportsBefore);
  t.same(
    after.map((r) => `${r.models.det?.state} ${r.models.det?.version}`),
    ['rolled_back 3.0.0', 'healthy 2.0.0'],
    'the rollback is reported, then 2.0.0 is healthy at once: no download, install or probe',
  );
  t.equal(deviceSeq(), 3);
  await f.observer.waitFor('3.0.0 garbage-collected', async () => {
    return (await f.versionsOnDisk('cam-r', 'det')).join() === '2.0.0' || undefined;
  });
});
