import t from 'tap';
import { resolveCoordinatorConfig } from '../coordinator/config.js';

// The device metrics retention settings (docs/coordinator.md): defaults, env, and a raw retention
// longer than the rollups' refused with a message that names both variables.

t.test('metrics retention: defaults, env overrides, and what is refused', async (t) => {
  const base = { data: '/tmp/x' };
  const d = resolveCoordinatorConfig(base, {});
  t.equal(d.metricsRetentionDays, 14);
  t.equal(d.metricsRawRetentionDays, null, 'raw windows follow the retention unless set');
  const set = resolveCoordinatorConfig(base, { OTA_METRICS_RETENTION_DAYS: '30', OTA_METRICS_RAW_RETENTION_DAYS: '2' });
  t.equal(set.metricsRetentionDays, 30);
  t.equal(set.metricsRawRetentionDays, 2);
  t.throws(
    () => resolveCoordinatorConfig(base, { OTA_METRICS_RETENTION_DAYS: '7', OTA_METRICS_RAW_RETENTION_DAYS: '8' }),
    { code: 'E_CONFIG', message: /OTA_METRICS_RAW_RETENTION_DAYS \(8\) is more than OTA_METRICS_RETENTION_DAYS \(7\)/ },
  );
  t.throws(() => resolveCoordinatorConfig(base, { OTA_METRICS_RETENTION_DAYS: 'two weeks' }), {
    code: 'E_CONFIG',
    message: /metricsRetentionDays/,
  });
  t.throws(() => resolveCoordinatorConfig(base, { OTA_METRICS_RETENTION_DAYS: '0' }), { code: 'E_CONFIG' });
});
