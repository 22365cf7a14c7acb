import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { ROLLOUT_STATUSES, type RolloutStatus } from '../../shared/messages.js';

/**
 * The coordinator's Prometheus metrics (`GET /metrics`). Each call builds its own Registry, never
 * prom-client's global default one, so several coordinators (tests, embedded use) in one process
 * do not share or double-register metrics.
 *
 * Cardinality is bounded on purpose: no metric is labelled with a device id, a model version or
 * anything else that grows with the fleet. The only label is the rollout status (five values).
 */
export interface CoordinatorMetrics {
  readonly registry: Registry;
  /** Devices whose MQTT session is up right now. */
  readonly connectedDevices: Gauge;
  /** Device reports accepted; `rate(reports_total[1m])` gives reports per second. */
  readonly reports: Counter;
  /** Rollouts per status (every status is always present, 0 when none). */
  readonly rollouts: Gauge<'status'>;
  /** Rollouts halted, automatically (failure rate) or by hand. */
  readonly rolloutHalts: Counter;
  /** Rows in the audit chain. */
  readonly auditRows: Gauge;
  /** MQTT CONNECTs refused for bad credentials or a client id that is not the device id. */
  readonly authFailures: Counter;
  /** Artifact bytes read from disk and sent to clients (`GET /artifacts/...`). */
  readonly artifactBytesServed: Counter;
  /** Sets the `rollouts` gauge from counts per status; statuses missing from `counts` become 0. */
  setRolloutCounts(counts: Partial<Record<RolloutStatus, number>>): void;
}

export interface MetricsOptions {
  /** Also register prom-client's default process and Node.js metrics (default true). */
  defaultMetrics?: boolean;
}

export function createMetrics(options: MetricsOptions = {}): CoordinatorMetrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const connectedDevices = new Gauge({
    name: 'connected_devices',
    help: 'Devices with an open MQTT session.',
    registers,
  });
  const reports = new Counter({
    name: 'reports_total',
    help: 'Device reports accepted by the coordinator (its rate is reports per second).',
    registers,
  });
  const rollouts = new Gauge({
    name: 'rollouts',
    help: 'Rollouts by status.',
    labelNames: ['status'] as const,
    registers,
  });
  const rolloutHalts = new Counter({
    name: 'rollout_halts_total',
    help: 'Rollouts halted (failure rate above tolerance, or by an operator).',
    registers,
  });
  const auditRows = new Gauge({
    name: 'audit_rows',
    help: 'Rows in the append-only audit chain.',
    registers,
  });
  const authFailures = new Counter({
    name: 'mqtt_auth_failures_total',
    help: 'MQTT connections refused for failed authentication.',
    registers,
  });
  const artifactBytesServed = new Counter({
    name: 'artifact_bytes_served_total',
    help: 'Artifact bytes sent to clients over HTTP.',
    registers,
  });

  const setRolloutCounts = (counts: Partial<Record<RolloutStatus, number>>): void => {
    for (const status of ROLLOUT_STATUSES) rollouts.set({ status }, counts[status] ?? 0);
  };
  // Every status exists from the start, so dashboards see 0 instead of "no data".
  setRolloutCounts({});

  return {
    registry,
    connectedDevices,
    reports,
    rollouts,
    rolloutHalts,
    auditRows,
    authFailures,
    artifactBytesServed,
    setRolloutCounts,
  };
}
