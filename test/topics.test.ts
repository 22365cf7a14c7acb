import t from 'tap';
import { createTopics, senderReplyTopics } from '../shared/topics.js';

const topics = createTopics();

t.test('builders and parser agree for every topic', async (t) => {
  t.same(topics.parse(topics.desired('cam-01')), { kind: 'desired', deviceId: 'cam-01' });
  t.same(topics.parse(topics.reported('cam-01')), { kind: 'reported', deviceId: 'cam-01' });
  t.same(topics.parse(topics.status('cam_01.a')), { kind: 'status', deviceId: 'cam_01.a' });
  t.same(topics.parse(topics.metrics('d')), { kind: 'metrics', deviceId: 'd' });
  t.same(topics.parse(topics.rollout('r-1')), { kind: 'rollout', rolloutId: 'r-1' });
  t.same(topics.parse(topics.audit()), { kind: 'audit' });
  t.same(topics.parse(topics.fleet()), { kind: 'fleet' });
  t.equal(topics.fleet(), 'ota/v1/fleet');
  t.same(topics.parse(topics.cmd('rollout-create')), { kind: 'cmd', op: 'rollout-create' });
  t.equal(topics.cmd('rollout.create', 'alice'), 'ota/v1/cmd/rollout.create/alice');
  t.same(topics.parse(topics.cmd('rollout.create', 'alice')), { kind: 'cmd', op: 'rollout.create', operator: 'alice' });
  t.throws(() => topics.cmd('rollout.create', 'a/b'), { code: 'E_TOPIC' });
  t.same(senderReplyTopics(topics, 'alice'), ['ota/v1/reply/alice']);
  t.same(senderReplyTopics(topics, 'alice@otactl-1'), ['ota/v1/reply/alice@otactl-1', 'ota/v1/reply/alice/otactl-1']);
  t.same(topics.parse(topics.reply('otactl-1', 'c1')), { kind: 'reply', clientId: 'otactl-1', rest: 'c1' });
  t.equal(topics.desired('cam-01'), 'ota/v1/devices/cam-01/desired');
  t.equal(topics.replyPrefix('ops'), 'ota/v1/reply/ops/');
  // An operator's session client id (name@suffix, acl.ts) names a reply topic too.
  t.same(topics.parse(topics.reply('bob@otactl-3f2a', 'r')), { kind: 'reply', clientId: 'bob@otactl-3f2a', rest: 'r' });
  for (const bad of ['@x', 'bob@', 'bob@x@y', 'a/b@c', 'bob@+']) {
    t.throws(() => topics.replyPrefix(bad), { code: 'E_TOPIC' }, bad);
  }
  t.throws(() => topics.desired('bob@x'), { code: 'E_TOPIC' }, 'a device id has no @');
  t.equal(topics.allDevices('reported'), 'ota/v1/devices/+/reported');
  t.equal(topics.allCommands(), 'ota/v1/cmd/#');
  t.equal(topics.allRollouts(), 'ota/v1/rollouts/+');
});

t.test('a custom prefix', async (t) => {
  const custom = createTopics('plant-7/ota');
  t.equal(custom.status('a'), 'plant-7/ota/devices/a/status');
  t.equal(custom.fleet(), 'plant-7/ota/fleet');
  t.same(custom.parse('plant-7/ota/fleet'), { kind: 'fleet' });
  t.same(custom.parse('plant-7/ota/devices/a/status'), { kind: 'status', deviceId: 'a' });
  t.throws(() => custom.parse('ota/v1/devices/a/status'), { code: 'E_TOPIC' });
  for (const bad of ['', 'a//b', 'a/+', '#', '/a']) t.throws(() => createTopics(bad), { code: 'E_CONFIG' }, bad);
});

t.test('ids that could widen a subscription or escape a level are refused by builders', async (t) => {
  for (const bad of ['+', '#', 'a/b', '..', '', 'a b', 'x'.repeat(65), 'caf\u00e9']) {
    t.throws(() => topics.desired(bad), { code: 'E_TOPIC' }, JSON.stringify(bad));
  }
  t.throws(() => topics.cmd('a/b'), { code: 'E_TOPIC' });
  t.throws(() => topics.reply('c', '#'), { code: 'E_TOPIC' });
});

t.test('malformed topics are rejected by the parser with E_TOPIC', async (t) => {
  const bad = [
    'other/v1/devices/a/desired',
    'ota/v1',
    'ota/v1/',
    'ota/v1/devices',
    'ota/v1/devices/a',
    'ota/v1/devices/a/unknown',
    'ota/v1/devices/a/desired/extra',
    'ota/v1/devices/+/desired',
    'ota/v1/devices/#',
    'ota/v1/devices//desired',
    'ota/v1/rollouts',
    'ota/v1/rollouts/r/x',
    'ota/v1/rollouts/..',
    'ota/v1/audit/x',
    'ota/v1/fleet/x',
    'ota/v1/fleet/',
    'ota/v1/fleet/+',
    'ota/v1/cmd',
    'ota/v1/cmd/a/b/c',
    'ota/v1/cmd/a/b+',
    'ota/v1/cmd/+',
    'ota/v1/reply/c',
    'ota/v1/reply/+/x',
    'ota/v1/reply/c/#',
    'ota/v1/reply/c/',
    'ota/v1/nothing',
  ];
  for (const topic of bad) t.throws(() => topics.parse(topic), { code: 'E_TOPIC' }, topic);
});
