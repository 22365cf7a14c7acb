import t from 'tap';
import { DeviceGroups } from '../coordinator/metrics/device-groups.js';
import type { GroupRecord } from '../coordinator/store/records.js';
import type { AuditEvent } from '../shared/messages.js';

// The groups a device's metric summaries roll up into: one answer per device, shared between the
// devices that give the same one, dropped when a group is created or a device enrolled or removed.

const AT = '2026-12-07T00:00:00.000Z';
const group = (name: string, g: Partial<GroupRecord>): GroupRecord => ({
  name,
  devices: null,
  selector: null,
  createdAt: AT,
  ...g,
});
const event = (action: string, subject: string): AuditEvent =>
  ({ seq: 1, ts: AT, actor: 'admin', action, subject, details: {}, prevHash: '', hash: '' }) as unknown as AuditEvent;

t.test(
  'devices with the same groups share one answer; a new group or a re-enrolled device is asked again',
  async (t) => {
    const groups: GroupRecord[] = [
      group('hall-a', { selector: { site: 'a' } }),
      group('pilots', { devices: ['cam-1', 'constructor'] }),
    ];
    const labels = new Map<string, Record<string, string>>([
      ['cam-1', { site: 'a' }],
      ['cam-2', { site: 'a' }],
      ['cam-3', { site: 'b' }],
      ['constructor', { site: 'b' }],
    ]);
    let listed = 0;
    const dg = new DeviceGroups({
      listGroups: () => {
        listed++;
        return groups;
      },
      labelsOf: (id) => labels.get(id) ?? null,
    });
    t.same(dg.groupsOf('cam-1'), ['hall-a', 'pilots']);
    t.same(dg.groupsOf('cam-2'), ['hall-a']);
    t.same(dg.groupsOf('cam-3'), []);
    t.same(dg.groupsOf('constructor'), ['pilots'], 'an id named like a prototype key is a device like any other');
    t.same(dg.groupsOf('gone'), [], 'not enrolled: no groups');
    t.equal(dg.groupsOf('cam-2'), dg.groupsOf('cam-2'), 'cached');
    labels.set('cam-4', { site: 'a' });
    t.equal(dg.groupsOf('cam-4'), dg.groupsOf('cam-2'), 'the same answer is one shared array');
    t.ok(Object.isFrozen(dg.groupsOf('cam-2')), 'which nobody can change for the others');
    t.equal(listed, 1, 'the groups were read once');

    groups.push(group('everyone-a', { selector: { site: 'a' } }));
    dg.onAudit([event('group.created', 'group:everyone-a')]);
    t.same(dg.groupsOf('cam-2'), ['hall-a', 'everyone-a'], 'a new group: asked again');
    t.equal(listed, 2);

    t.same(dg.groupsOf('cam-3'), []);
    labels.set('cam-3', { site: 'a' });
    t.same(dg.groupsOf('cam-3'), [], 'labels do not change without a re-enrolment: still cached');
    dg.onAudit([event('device.removed', 'device:cam-3'), event('device.enrolled', 'device:cam-3')]);
    t.equal(dg.groupsOf('cam-3'), dg.groupsOf('cam-2'), 're-enrolled: asked again, and shares the answer');
  },
);
