import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { checkQueryBudget, metricsQueries } from '../coordinator/metrics/metrics-queries.js';
import { MetricsQueryArgsSchema } from '../coordinator/metrics/query-args.js';
import { MetricsRecorder } from '../coordinator/metrics/recorder.js';
import { OtaError } from '../shared/errors.js';

// `metrics.query` as the command API runs it: arguments checked, a group resolved to its members
// now, a device list checked against the fleet, and a query that would hold up the coordinator
// refused before it reads anything, saying how to narrow it.

const args = (a: Record<string, unknown>) => MetricsQueryArgsSchema.parse({ model: 'det', ...a });

t.test('the budget: what is refused, with the numbers and the fix', async (t) => {
  t.doesNotThrow(
    () => checkQueryBudget(args({ sinceSeconds: 86_400 }), 10_000, 10_000),
    '24 h by version, 10,000 devices',
  );
  t.throws(() => checkQueryBudget(args({ sinceSeconds: 14 * 86_400 }), 10_000, 10_000), {
    code: 'E_USAGE',
    message:
      /about 3,370,000 device-hours to count devices \(10000 devices report det, x 337 hours\).*at most 199 hours here/,
  });
  // A group reads the device-hours of every device of the model, then picks its members.
  t.throws(() => checkQueryBudget(args({ group: 'canary', sinceSeconds: 14 * 86_400 }), 10_000, 100), {
    message: /10000 devices report det/,
  });
  t.doesNotThrow(() => checkQueryBudget(args({ by: 'device' }), 10_000, 10_000), 'by device, 1 h, 10,000 devices');
  t.throws(() => checkQueryBudget(args({ by: 'device', sinceSeconds: 86_400 }), 10_000, 10_000), {
    message: /device-hours \(10000 devices x 25 hours\).*at most 5 hours here\), a smaller --group, or --devices/,
  });
  t.throws(() => checkQueryBudget(args({ by: 'device', group: 'lab', sinceSeconds: 86_400 }), 10_000, 5_000), {
    message: /group lab's 5000 devices/,
  });
  // No range fits 40,000 devices by device: the fix is fewer devices, not a shorter range.
  t.throws(() => checkQueryBudget(args({ by: 'device' }), 40_000, 40_000), {
    message: /one query may read without holding up the coordinator; a smaller --group, or --devices$/,
  });
  t.doesNotThrow(() => checkQueryBudget(args({ by: 'device' }), 40_000, 500), 'a group of 500 of them');
  t.doesNotThrow(
    () => checkQueryBudget(args({ devices: ['a', 'b'], sinceSeconds: 7 * 86_400 }), 0, 0),
    '2 devices, 7 days',
  );
  t.throws(
    () =>
      checkQueryBudget(args({ devices: Array.from({ length: 1000 }, (_, i) => `d${i}`), sinceSeconds: 86_400 }), 0, 0),
    { message: /windows \(1000 devices x 1440 minutes\).*use a group/ },
  );
});

t.test('groups resolve to their members now; a name that does not resolve is an error', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-mq-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const recorder = new MetricsRecorder({
    file: path.join(dir, 'metrics.db'),
    now: () => new Date(),
    logger: pino({ level: 'silent' }),
    groupsOf: () => [],
  });
  t.teardown(() => recorder.close());
  const seen: unknown[] = [];
  const queries = metricsQueries({
    reader: {
      query: (q) => {
        seen.push(q);
        return recorder.query(q);
      },
    },
    now: () => new Date('2026-12-06T12:00:00.000Z'),
    modelDevices: () => 3,
    resolveTarget: (target) => {
      if (target.group === 'lab') return ['cam-1', 'cam-2'];
      if (target.devices) {
        const unknown = target.devices.filter((d) => !d.startsWith('cam-'));
        if (unknown.length > 0) throw new OtaError('E_NOT_FOUND', `${unknown.join(', ')} do not resolve`);
        return target.devices;
      }
      throw new OtaError('E_NOT_FOUND', `no group ${JSON.stringify(target.group)}`);
    },
  });
  const r = queries.query(args({ group: 'lab', sinceSeconds: 7200 })) as { rows: unknown[]; from: string };
  t.same(r.rows, [], 'nothing stored yet');
  t.match(seen[0], {
    model: 'det',
    source: 'app',
    by: 'version',
    since: new Date('2026-12-06T10:00:00.000Z'),
    until: new Date('2026-12-06T12:00:00.000Z'),
    group: { name: 'lab' },
  });
  t.same([...(seen[0] as { group: { members: Set<string> } }).group.members], ['cam-1', 'cam-2']);
  t.throws(() => queries.query(args({ group: 'nope' })), { code: 'E_NOT_FOUND' });
  t.throws(() => queries.query(args({ devices: ['cam-1', 'x'] })), {
    code: 'E_NOT_FOUND',
    message: /x do not resolve/,
  });
  queries.query(args({ devices: ['cam-1'], version: '1.0.0', source: 'probe', by: 'device' }));
  t.match(seen.at(-1), { devices: ['cam-1'], version: '1.0.0', source: 'probe', by: 'device' });
  t.throws(() => MetricsQueryArgsSchema.parse({ model: 'det', group: 'a', devices: ['b'] }), /not both/);
  t.throws(() => MetricsQueryArgsSchema.parse({ model: 'det', sinceSeconds: 30 }), /at least 60 seconds/);
});
