import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { ROLLOUT_STATUSES, type RolloutStatus } from '../../shared/messages.js';
import { METRIC_SOURCES } from '../../shared/metrics/limits.js';

/**
 * The coordinator's Prometheus metrics (`GET /metrics`). Each call builds its own Registry, never
 * prom-client's global default one, so several coordinators (tests, embedded use) in one process
 * do not share or double-register metrics.
 *
 * Every metric of the coordinator's own is named `ota_*` (Prometheus naming practice: a prefix
 * for the application's domain). prom-client's process and Node.js metrics keep their standard
 * `process_*` and `nodejs_*` names, which ready-made dashboards expect.
 *
 * Cardinality is bounded on purpose: no metric is labelled with a device id, a model version or
 * anything else that grows with the fleet. The only labels are the rollout status (five values),
 * the transport of an authentication failure (two), the source of device metrics (two) and the
 * table of the metrics store (three).
 */
export interface CoordinatorMetrics {
  readonly registry: Registry;
  /** Devices whose MQTT session is up right now. */
  readonly connectedDevices: Gauge;
  /** Device reports accepted; `rate(ota_reports_total[1m])` gives reports per second. */
  readonly reports: Counter;
  /** Rollouts per status (every status is always present, 0 when none). */
  readonly rollouts: Gauge<'status'>;
  /** Transitions of a rollout into `halted` (automatic or by hand). */
  readonly rolloutHalts: Counter;
  /** Rows in the audit chain. */
  readonly auditRows: Gauge;
  /**
   * Refused credentials, by transport: MQTT CONNECTs refused for bad credentials or a client id
   * that is not the device id (`mqtt`), release uploads refused with 401 (`http`).
   */
  readonly authFailures: { inc(labels: { transport: AuthTransport }, value?: number): void };
  /**
   * Release upload bytes written to disk (temporaries included, whether the upload is accepted
   * or not): an upload refused before its body is read adds nothing.
   */
  readonly uploadBytesWritten: Counter;
  /** Authentication failures that got no audit row of their own (rate limits, auth-failure-limits.ts). */
  readonly authFailuresNotAudited: Counter;
  /** Refused CONNECTs whose CONNACK was held back (their address failed too often). */
  readonly authRefusalsHeld: Counter;
  /** MQTT connections closed for announcing a packet over the size cap (before it was buffered). */
  readonly oversizedPackets: Counter;
  /** Messages from an external broker refused by the coordinator's own checks (schema, size, unknown sender). */
  readonly externalMessagesRefused: Counter;
  readonly slowWatchersCut: Counter;
  /**
   * Device metrics summaries received and stored (docs/metrics.md), and what they summarise:
   * fleet-wide counts by source (`app`, `probe`), never per device or version. A summary sent
   * again after a lost acknowledgement counts again here (the store keeps it once).
   */
  readonly deviceMetricsSummaries: Counter;
  readonly deviceObservations: Counter<'source'>;
  readonly deviceInferenceErrors: Counter<'source'>;
  /** Observations agents said they could not keep (refused lines, series over the cap, dropped windows). */
  readonly deviceObservationsDropped: Counter;
  /** Summaries the store could not commit (their publish refused: the device sends them again later). */
  readonly deviceMetricsNotStored: Counter;
  /** The metrics store's size, read at each scrape. */
  observeMetricsStore(read: () => { rows: Record<string, number>; bytes: { file: number; wal: number } }): void;
  /** Artifact bytes read from disk and sent to clients (`GET /artifacts/...`). */
  readonly artifactBytesServed: Counter;
  /**
   * Starts the rollout picture over from the store's rollouts (at start): the `rollouts` gauge
   * is set from them; no halt is counted.
   */
  resetRollouts(rollouts: Iterable<{ id: string; status: RolloutStatus }>): void;
  /**
   * One rollout's status after a transition (every rollout summary the coordinator publishes):
   * moves it between the `rollouts` gauge's statuses and counts a halt when it enters `halted`.
   */
  observeRollout(id: string, status: RolloutStatus): void;
}

/**
 * Which status each rollout is in, and how many rollouts per status: what the `rollouts` gauge
 * shows and when a halt happens. Pure bookkeeping (no I/O), fed by every summary.
 */
export class RolloutStatusBook {
  private readonly byId = new Map<string, RolloutStatus>();
  private readonly perStatus = new Map<RolloutStatus, number>(ROLLOUT_STATUSES.map((s) => [s, 0]));

  reset(rollouts: Iterable<{ id: string; status: RolloutStatus }>): void {
    this.byId.clear();
    for (const s of ROLLOUT_STATUSES) this.perStatus.set(s, 0);
    for (const r of rollouts) this.observe(r.id, r.status);
  }

  /**
   * Records `status` for rollout `id`. Returns true when this is a halt: the rollout was in
   * another status (or unknown) and is `halted` now. A summary published again while the rollout
   * stays halted (a device's report or presence changed) is not a halt.
   */
  observe(id: string, status: RolloutStatus): boolean {
    const previous = this.byId.get(id);
    if (previous === status) return false;
    if (previous !== undefined) this.perStatus.set(previous, (this.perStatus.get(previous) ?? 0) - 1);
    this.perStatus.set(status, (this.perStatus.get(status) ?? 0) + 1);
    this.byId.set(id, status);
    return status === 'halted';
  }

  count(status: RolloutStatus): number {
    return this.perStatus.get(status) ?? 0;
  }
}

/** Where a refused credential came from: the `transport` label of `ota_auth_failures_total`. */
export const AUTH_TRANSPORTS = ['mqtt', 'http'] as const;
export type AuthTransport = (typeof AUTH_TRANSPORTS)[number];

/**
 * prom-client's default metrics it also exports per type: these totals are gauges named
 * `*_total`, which `promtool check metrics` refuses ("non-counter metrics should not have _total
 * suffix"); `sum(nodejs_active_handles)` gives the same number.
 */
const MISNAMED_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export interface MetricsOptions {
  /** Also register prom-client's default process and Node.js metrics (default true). */
  defaultMetrics?: boolean;
}

export function createMetrics(options: MetricsOptions = {}): CoordinatorMetrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }
  const registers = [registry];

  const connectedDevices = new Gauge({
    name: 'ota_connected_devices',
    help: 'Devices with an open MQTT session.',
    registers,
  });
  const reports = new Counter({
    name: 'ota_reports_total',
    help: 'Device reports accepted by the coordinator (its rate is reports per second).',
    registers,
  });
  const rollouts = new Gauge({
    name: 'ota_rollouts',
    help: 'Rollouts by status.',
    labelNames: ['status'] as const,
    registers,
  });
  const rolloutHalts = new Counter({
    name: 'ota_rollout_halts_total',
    help: 'Rollouts that entered halted (failure rate above tolerance, or an operator) since the coordinator started.',
    registers,
  });
  const auditRows = new Gauge({
    name: 'ota_audit_rows',
    help: 'Rows in the append-only audit chain.',
    registers,
  });
  const authFailures = new Counter({
    name: 'ota_auth_failures_total',
    help: 'Refused credentials: MQTT connections (transport="mqtt") and release uploads (transport="http").',
    labelNames: ['transport'] as const,
    registers,
  });
  // Both series exist from the start, so dashboards see 0 instead of "no data".
  for (const transport of AUTH_TRANSPORTS) authFailures.inc({ transport }, 0);
  const uploadBytesWritten = new Counter({
    name: 'ota_upload_bytes_written_total',
    help: 'Release upload bytes written to disk, accepted or not (an upload refused before its body adds none).',
    registers,
  });
  const authFailuresNotAudited = new Counter({
    name: 'ota_auth_failures_not_audited_total',
    help: 'Authentication failures not written to the audit chain (over the per-user, per-address or overall rate limit).',
    registers,
  });
  const authRefusalsHeld = new Counter({
    name: 'ota_mqtt_auth_refusals_held_total',
    help: 'Refused MQTT CONNECTs whose refusal was held back because their address failed too often.',
    registers,
  });
  const deviceMetricsSummaries = new Counter({
    name: 'ota_device_metrics_summaries_total',
    help: 'Device metrics summaries stored (one per device and window; a re-sent one counts again).',
    registers,
  });
  const deviceObservations = new Counter({
    name: 'ota_device_observations_total',
    help: 'Inferences summarised by device metrics, by source (app: applications, probe: the health probe).',
    labelNames: ['source'] as const,
    registers,
  });
  const deviceInferenceErrors = new Counter({
    name: 'ota_device_inference_errors_total',
    help: 'Inferences reported as failed in device metrics, by source.',
    labelNames: ['source'] as const,
    registers,
  });
  for (const source of METRIC_SOURCES) {
    deviceObservations.inc({ source }, 0);
    deviceInferenceErrors.inc({ source }, 0);
  }
  const deviceObservationsDropped = new Counter({
    name: 'ota_device_observations_dropped_total',
    help: 'Observations agents could not keep (refused lines, series over the cap, windows dropped while offline).',
    registers,
  });
  const deviceMetricsNotStored = new Counter({
    name: 'ota_device_metrics_not_stored_total',
    help: 'Device metrics summaries the store could not commit (refused; the device sends them again after its backoff).',
    registers,
  });
  let readMetricsStore: (() => { rows: Record<string, number>; bytes: { file: number; wal: number } }) | null = null;
  new Gauge({
    name: 'ota_device_metrics_rows',
    help: 'Rows of the device metrics store (metrics.db) by table: windows, minute rollups, device hours.',
    labelNames: ['table'] as const,
    registers,
    collect() {
      if (!readMetricsStore) return;
      for (const [table, n] of Object.entries(readMetricsStore().rows)) this.set({ table }, n);
    },
  });
  new Gauge({
    name: 'ota_device_metrics_store_bytes',
    help: 'Bytes of the device metrics store on disk (metrics.db and its WAL).',
    registers,
    collect() {
      if (!readMetricsStore) return;
      const { bytes } = readMetricsStore();
      this.set(bytes.file + bytes.wal);
    },
  });
  const externalMessagesRefused = new Counter({
    name: 'ota_broker_messages_refused_total',
    help: 'Messages from the external broker (--broker) the coordinator refused: bad payload, over the size limit, or an unknown device or operator.',
    registers,
  });
  const oversizedPackets = new Counter({
    name: 'ota_mqtt_oversized_packets_total',
    help: 'MQTT connections closed for announcing a packet over the size limit.',
    registers,
  });
  const slowWatchersCut = new Counter({
    name: 'ota_mqtt_slow_watchers_cut_total',
    help: 'Operator connections (dashboard, otactl, watchers) closed for reading their deliveries too slowly.',
    registers,
  });
  const artifactBytesServed = new Counter({
    name: 'ota_artifact_bytes_served_total',
    help: 'Artifact bytes sent to clients over HTTP.',
    registers,
  });

  const book = new RolloutStatusBook();
  const showRollouts = (): void => {
    for (const status of ROLLOUT_STATUSES) rollouts.set({ status }, book.count(status));
  };
  // Every status exists from the start, so dashboards see 0 instead of "no data".
  showRollouts();

  return {
    registry,
    connectedDevices,
    reports,
    rollouts,
    rolloutHalts,
    auditRows,
    authFailures,
    uploadBytesWritten,
    authFailuresNotAudited,
    authRefusalsHeld,
    oversizedPackets,
    externalMessagesRefused,
    slowWatchersCut,
    artifactBytesServed,
    deviceMetricsSummaries,
    deviceObservations,
    deviceInferenceErrors,
    deviceObservationsDropped,
    deviceMetricsNotStored,
    observeMetricsStore(read) {
      readMetricsStore = read;
    },
    resetRollouts(list) {
      book.reset(list);
      showRollouts();
    },
    observeRollout(id, status) {
      if (book.observe(id, status)) rolloutHalts.inc();
      showRollouts();
    },
  };
}
