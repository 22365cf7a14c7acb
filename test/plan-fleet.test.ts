import t from 'tap';
import { CHANNEL_CONFIRM_ABOVE, planChannelMove } from '../coordinator/fleet/plan-channel-move.js';
import { planEnrol } from '../coordinator/fleet/plan-enrol.js';
import { isEmptyPlan } from '../coordinator/plan/write-plan.js';

// The channel-move and enrolment planners (design section 6, two of the writers of desired
// state): pure functions of a snapshot, table-tested like the rollout engine.

const follower = (id: string, desiredReleaseId: string | null, inRollout = false) => ({
  id,
  desiredReleaseId,
  inRollout,
});

t.test('channel move: who is re-targeted, who is left to a rollout, and the confirmation rule', async (t) => {
  // [name, followers, yes, retargeted, skipped, refused]
  const many = Array.from({ length: CHANNEL_CONFIRM_ABOVE + 1 }, (_, i) => follower(`m${i}`, 'det@1.0.0'));
  const cases: [string, ReturnType<typeof follower>[], boolean, string[], string[], RegExp | null][] = [
    ['nobody follows', [], false, [], [], null],
    ['already there', [follower('a', 'det@2.0.0')], false, [], [], null],
    ['on another release, or none', [follower('a', 'det@1.0.0'), follower('b', null)], false, ['a', 'b'], [], null],
    ['owned by a rollout', [follower('a', 'det@1.0.0', true), follower('b', 'det@1.0.0')], false, ['b'], ['a'], null],
    [
      `exactly ${CHANNEL_CONFIRM_ABOVE}: no confirmation needed`,
      many.slice(0, CHANNEL_CONFIRM_ABOVE),
      false,
      many.slice(0, CHANNEL_CONFIRM_ABOVE).map((f) => f.id),
      [],
      null,
    ],
    [
      `${CHANNEL_CONFIRM_ABOVE + 1} without yes`,
      many,
      false,
      [],
      [],
      /re-targets 6 devices at once \(more than 5\), so nothing was changed: confirm with --yes/,
    ],
    [`${CHANNEL_CONFIRM_ABOVE + 1} with yes`, many, true, many.map((f) => f.id), [], null],
  ];
  for (const [name, followers, yes, retargeted, skipped, refused] of cases) {
    const run = () =>
      planChannelMove(
        { model: 'det', channel: 'stable', releaseId: 'det@2.0.0', yes },
        { releaseExists: true, eligibility: { eligible: true }, followers },
        'alice',
      );
    if (refused) {
      t.throws(run, { code: 'E_USAGE', message: refused }, name);
      continue;
    }
    const { move, plan } = run();
    t.strictSame(move.retarget, retargeted, `${name}: re-targeted`);
    t.strictSame(move.inRollout, skipped, `${name}: left to the rollout`);
    t.strictSame(plan.channelMoves, [{ model: 'det', channel: 'stable', releaseId: 'det@2.0.0' }], `${name}: moves`);
    t.strictSame(
      plan.desired.map((d) => d.kind === 'set' && [d.deviceId, d.releaseId, d.source, d.rolloutId]),
      retargeted.map((id) => [id, 'det@2.0.0', 'channel', null]),
      `${name}: desired states`,
    );
    t.match(plan.audit, [
      { action: 'channel.moved', details: { retargeted: retargeted.length, skippedInRollout: skipped } },
    ]);
  }
  t.throws(
    () =>
      planChannelMove(
        { model: 'det', channel: 'stable', releaseId: 'det@9.0.0', yes: true },
        { releaseExists: false, eligibility: { eligible: true }, followers: [] },
        'alice',
      ),
    { code: 'E_NOT_FOUND', message: /no release det@9\.0\.0: see `otactl release ls --model det`/ },
  );
});

t.test("enrolment: the device row and its channel's release of every model that has one", async (t) => {
  const plan = planEnrol(
    { id: 'cam-1', labels: { site: 'a' }, channel: 'stable', tokenHash: 'h' },
    [
      { model: 'det', releaseId: 'det@2.0.0' },
      { model: 'seg', releaseId: 'seg@1.0.0' },
    ],
    'alice',
  );
  t.strictSame(plan.createDevice, { id: 'cam-1', labels: { site: 'a' }, channel: 'stable', tokenHash: 'h' });
  t.strictSame(
    plan.desired.map((d) => d.kind === 'set' && [d.model, d.releaseId, d.source]),
    [
      ['det', 'det@2.0.0', 'enrolment'],
      ['seg', 'seg@1.0.0', 'enrolment'],
    ],
  );
  t.match(plan.audit, [{ action: 'device.enrolled', details: { releases: ['det@2.0.0', 'seg@1.0.0'] } }]);
  const bare = planEnrol({ id: 'cam-2', labels: {}, channel: 'lab', tokenHash: 'h' }, [], 'alice');
  t.strictSame(bare.desired, [], 'a channel with no releases: nothing to send');
  t.notOk(isEmptyPlan(bare), 'the device row is still written');
});
