import { randomBytes } from 'node:crypto';
import { OtaError } from '../../shared/errors.js';
import { ownEntry } from '../../shared/id-record.js';
import type { ReportedModels } from '../../shared/messages.js';
import { type CoordinatorTrust, releaseEligibility } from '../fleet/release-trust.js';
import type { Merged } from '../metrics/series.js';
import type { PlanExecutor } from '../plan/commit-plan.js';
import type { WritePlan } from '../plan/write-plan.js';
import type { RolloutService } from '../rollout/rollout-service.js';
import type { Store } from '../store/store.js';
import { type Comparison, compareArms, lookLevel } from './compare.js';
import {
  assertRunning,
  type CreateExperimentInput,
  evidence,
  planExperimentCreate,
  planExperimentEnd,
  planLook,
} from './plan-experiment.js';
import { lookTimeMs } from './stats/looks.js';
import type { Arm, Experiment, ExperimentDevice } from './types.js';

/** How often the automatic judge checks whether a running experiment reached its next planned look. */
export const LOOK_CHECK_EVERY_MS = 60_000;
/**
 * Experiments whose cohort rows are kept once read: they answer `compare` again for as long as
 * no summary was committed since (reading 10,000 rows takes ~150 ms of the coordinator's one
 * thread, bench:experiments, and every open dashboard page asks every few seconds). Never stale:
 * any commit, of any device, reads them again.
 */
const SERIES_CACHE_ENTRIES = 4;

export interface ExperimentServiceDeps {
  store: Store;
  /** The one executor of write plans. */
  executor: PlanExecutor;
  now: () => Date;
  /** What each device of the experiment sent since it started, per device and version (metrics store). */
  cohortSeries: (experimentId: string) => Map<string, Map<string, Merged>>;
  /** Changes whenever the metrics store commits (MetricsRecorder.version); without it nothing is cached. */
  metricsVersion?: () => number;
  rollouts: Pick<RolloutService, 'create' | 'resolveTarget'>;
  /** Channel moves (FleetService.setChannel). */
  setChannel: (
    input: { model: string; channel: string; version: string; yes?: boolean | undefined },
    actor: string,
    options: { releasing?: string; amend?: (plan: WritePlan) => void },
  ) => unknown;
  /** The models of a device's last report (from memory where the shell keeps it). */
  lastModels?: (deviceId: string) => ReportedModels | null | undefined;
  /** Whether a device is connected now (from memory where the shell keeps it); default: the store's copy. */
  isOnline?: (deviceId: string) => boolean;
  releaseTrust?: () => CoordinatorTrust;
  onError?: (err: unknown, what: string) => void;
}

export interface CreateExperimentRequest extends Omit<CreateExperimentInput, 'id'> {
  id?: string | undefined;
}

export interface PromoteRequest {
  /** Hand the candidate to a rollout over the experiment's group with these waves... */
  waves?: unknown;
  maxFailureRate?: number | undefined;
  /** ...whose completion moves this channel (default stable), or move this channel now. */
  channel?: string | undefined;
  /** `channel`: move the channel at once instead of a rollout (confirm above 5 devices with yes). */
  moveChannel?: boolean | undefined;
  yes?: boolean | undefined;
  /** What the rollout's analysis gates check (`:analysis` in the waves, docs/rollouts.md). */
  analysis?: unknown;
  /** Promote although a metric is worse or the sample ratio is off. */
  force?: boolean | undefined;
}

/** An experiment as `ls` and `status` show it. */
export interface ExperimentView {
  id: string;
  model: string;
  status: Experiment['status'];
  control: string;
  candidate: string;
  group: string;
  split: number;
  arms: { control: number; candidate: number };
  metrics: string[];
  minDurationMs: number;
  minDevices: number;
  alpha: number;
  startedAt: string;
  endedAt: string | null;
  endReason: string | null;
  looksDone: number;
  lastLook: Experiment['lastLook'];
  nextLookAt: string | null;
  promotedTo: Experiment['promotedTo'];
  createdBy: string;
}

export interface ExperimentStatusResult extends ExperimentView {
  /** Per arm: what its devices report now for the model (the arm's version running, in progress, rolled back). */
  devices: { id: string; arm: Arm; state: string | null; current: string | null; online: boolean }[];
}

/**
 * The imperative shell around the experiment planners (docs/experiments.md): loads the
 * snapshots, commits the plans through the one executor, and runs the automatic judge at each
 * planned look (`tick`, every LOOK_CHECK_EVERY_MS from the coordinator). It also tells the
 * metrics store which devices are in which running experiment (`cohortsOf`), so their
 * summaries accumulate per experiment as they arrive.
 */
export class ExperimentService {
  /** The cohort rows last read per experiment, with the store's version then. */
  private readonly seriesCache = new Map<string, { version: number; series: Map<string, Map<string, Merged>> }>();
  /** Running experiments' devices: device id -> the experiments (of a model) it is in. */
  private readonly cohorts = new Map<string, { id: string; model: string; since: number }[]>();

  constructor(private readonly deps: ExperimentServiceDeps) {
    for (const e of deps.store.listExperiments({ running: true })) this.index(e);
  }

  private index(e: Experiment): void {
    const since = Date.parse(e.startedAt);
    for (const d of this.deps.store.experimentDevices(e.id)) {
      const list = this.cohorts.get(d.deviceId);
      const entry = { id: e.id, model: e.model, since };
      if (list) list.push(entry);
      else this.cohorts.set(d.deviceId, [entry]);
    }
  }

  private unindex(id: string): void {
    for (const [device, list] of this.cohorts) {
      const kept = list.filter((c) => c.id !== id);
      if (kept.length === 0) this.cohorts.delete(device);
      else if (kept.length !== list.length) this.cohorts.set(device, kept);
    }
  }

  /** The running experiments a device's series of `model` counts in (MetricsRecorder.cohortsOf). */
  cohortsOf(deviceId: string, model: string): { cohort: string; since: number }[] {
    const list = this.cohorts.get(deviceId);
    if (!list) return [];
    return list.filter((c) => c.model === model).map((c) => ({ cohort: c.id, since: c.since }));
  }

  /** What an end must know that the experiment's rows do not say: is the control still assignable, which devices still exist. */
  private endFacts(e: Experiment): { controlRevoked: string | null; exists: (deviceId: string) => boolean } {
    const { store } = this.deps;
    const control = store.getRelease(e.control.releaseId);
    const trust = this.deps.releaseTrust?.();
    const eligibility = control && trust ? releaseEligibility(control, trust) : { eligible: true as const };
    return {
      controlRevoked: eligibility.eligible ? null : eligibility.reason,
      exists: (deviceId) => store.getDevice(deviceId) !== null,
    };
  }

  private mustGet(id: string): Experiment {
    const e = this.deps.store.getExperiment(id);
    if (!e) throw new OtaError('E_NOT_FOUND', `no experiment ${JSON.stringify(id)}: see \`otactl experiment ls\``);
    return e;
  }

  create(request: CreateExperimentRequest, actor: string): ExperimentView {
    const { store } = this.deps;
    const id = request.id ?? `exp-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const deviceIds = this.deps.rollouts.resolveTarget({ group: request.group });
    const now = this.deps.now().toISOString();
    const trust = this.deps.releaseTrust?.();
    // One read each for the whole group, not one per device (target-reads.ts).
    const rollouts = store.activeRolloutIdsOf(deviceIds, request.model);
    const experiments = store.runningExperimentIdsOf(deviceIds, request.model);
    const desired = store.desiredReleasesOf(deviceIds, request.model);
    const { experiment, plan } = planExperimentCreate(
      { ...request, id },
      {
        release: (releaseId) => {
          const r = store.getRelease(releaseId);
          if (!r) return null;
          return trust ? releaseEligibility(r, trust) : { eligible: true };
        },
        idTaken: store.getExperiment(id) !== null || store.getRollout(id) !== null,
        deviceIds,
        ownersOf: (deviceId) => [
          ...(rollouts.get(deviceId) ?? []).map((r) => `rollout ${r}`),
          ...(experiments.get(deviceId) ?? []).map((e) => `experiment ${e}`),
        ],
        desiredBefore: (deviceId) => desired.get(deviceId) ?? null,
      },
      actor,
      now,
    );
    this.deps.executor.commit(plan, now);
    this.index(experiment);
    return this.view(experiment);
  }

  list(): ExperimentView[] {
    return this.deps.store.listExperiments().map((e) => this.view(e));
  }

  private view(e: Experiment, devices?: readonly ExperimentDevice[]): ExperimentView {
    const list = devices ?? this.deps.store.experimentDevices(e.id);
    const arms = { control: 0, candidate: 0 };
    for (const d of list) arms[d.arm]++;
    const elapsed = this.deps.now().getTime() - Date.parse(e.startedAt);
    const { index } = lookLevel(e, elapsed);
    return {
      id: e.id,
      model: e.model,
      status: e.status,
      control: e.control.version,
      candidate: e.candidate.version,
      group: e.group,
      split: e.split,
      arms,
      metrics: e.metrics.map((m) => m.text),
      minDurationMs: e.minDurationMs,
      minDevices: e.minDevices,
      alpha: e.alpha,
      startedAt: e.startedAt,
      endedAt: e.endedAt,
      endReason: e.endReason,
      looksDone: e.looksDone,
      lastLook: e.lastLook,
      nextLookAt:
        e.status === 'running'
          ? new Date(
              Date.parse(e.startedAt) + lookTimeMs(Math.max(index, e.looksDone) + 1, e.minDurationMs),
            ).toISOString()
          : null,
      promotedTo: e.promotedTo,
      createdBy: e.createdBy,
    };
  }

  status(id: string): ExperimentStatusResult {
    const e = this.mustGet(id);
    const devices = this.deps.store.experimentDevices(id);
    const { store } = this.deps;
    const lastModels = this.deps.lastModels ?? ((d: string) => store.getDevice(d)?.lastReport?.models);
    const isOnline = this.deps.isOnline ?? ((d: string) => store.getDevice(d)?.online ?? false);
    return {
      ...this.view(e, devices),
      devices: devices.map((d) => {
        const report = ownEntry(lastModels(d.deviceId), e.model);
        return {
          id: d.deviceId,
          arm: d.arm,
          state: report?.state ?? null,
          current: report?.current ?? null,
          online: isOnline(d.deviceId),
        };
      }),
    };
  }

  compare(id: string): Comparison {
    const e = this.mustGet(id);
    return this.compareOf(e, this.deps.store.experimentDevices(id));
  }

  /** The experiment's cohort rows, from the cache while no summary was committed since. */
  private seriesOf(id: string): Map<string, Map<string, Merged>> {
    const version = this.deps.metricsVersion?.();
    if (version === undefined) return this.deps.cohortSeries(id);
    const hit = this.seriesCache.get(id);
    if (hit && hit.version === version) return hit.series;
    const series = this.deps.cohortSeries(id);
    this.seriesCache.delete(id);
    this.seriesCache.set(id, { version, series });
    if (this.seriesCache.size > SERIES_CACHE_ENTRIES) {
      this.seriesCache.delete(this.seriesCache.keys().next().value as string);
    }
    return series;
  }

  private compareOf(e: Experiment, devices: readonly ExperimentDevice[]): Comparison {
    const series = this.seriesOf(e.id);
    return compareArms({
      experiment: e,
      devices,
      seriesOf: (deviceId, version) => series.get(deviceId)?.get(version) ?? null,
      now: this.deps.now(),
    });
  }

  /** `stop` (devices keep their arm's release) or `stop --revert` (the candidate arm goes back to the control). */
  stop(id: string, revert: boolean, actor: string): ExperimentView {
    const e = this.mustGet(id);
    assertRunning(e, 'be stopped');
    const devices = this.deps.store.experimentDevices(id);
    const now = this.deps.now().toISOString();
    const { experiment, plan } = planExperimentEnd(
      e,
      devices,
      {
        status: 'stopped',
        revert,
        reason: `stopped by ${actor}${revert ? ', candidate arm reverted to the control' : ''}`,
        actor,
        comparison: this.compareOf(e, devices),
        ...this.endFacts(e),
      },
      now,
    );
    this.deps.executor.commit(plan, now);
    this.unindex(id);
    return this.view(experiment, devices);
  }

  /**
   * Hands the candidate to a rollout over the experiment's group (or moves a channel to it),
   * recording the comparison as evidence; the experiment ends in the same transaction, so its
   * devices pass to the rollout with no moment owned by neither.
   */
  promote(id: string, request: PromoteRequest, actor: string): ExperimentView & { evidence: string; result: unknown } {
    const e = this.mustGet(id);
    assertRunning(e, 'be promoted');
    if (request.moveChannel && (request.waves !== undefined || request.analysis !== undefined)) {
      throw new OtaError(
        'E_USAGE',
        'experiment promote: give --waves (a rollout over the group) or --move-channel (the channel now), not both',
      );
    }
    const devices = this.deps.store.experimentDevices(id);
    const comparison = this.compareOf(e, devices);
    const worse = comparison.metrics.filter((m) => m.verdict === 'worse');
    if (!request.force && (worse.length > 0 || comparison.srm.flagged)) {
      const why = [
        ...worse.map((m) => `${m.metric} is worse than its threshold`),
        ...(comparison.srm.flagged ? ['the sample ratio is off (SRM)'] : []),
      ];
      throw new OtaError(
        'E_EXPERIMENT_STATE',
        `experiment ${id} was not promoted: ${why.join('; ')} (see \`otactl experiment compare ${id}\`); promote anyway with --force`,
      );
    }
    const proof = evidence(comparison);
    const now = this.deps.now().toISOString();
    let ended: Experiment | null = null;
    const amend = (promotedTo: Experiment['promotedTo']) => (plan: WritePlan) => {
      const end = planExperimentEnd(
        e,
        devices,
        {
          status: 'promoted',
          revert: false,
          reason: `promoted ${e.candidate.version} by ${actor} ${proof.summary}`,
          actor,
          comparison,
          promotedTo,
        },
        now,
      );
      plan.updateExperiment = end.experiment;
      // First: the handover, then what the rollout (or channel move) did with it.
      plan.audit.unshift(...end.plan.audit);
      plan.durable = true;
      ended = end.experiment;
    };
    let result: unknown;
    if (request.moveChannel) {
      const channel = request.channel ?? 'stable';
      result = this.deps.setChannel(
        { model: e.model, channel, version: e.candidate.version, yes: request.yes },
        actor,
        { releasing: id, amend: amend({ channel }) },
      );
    } else {
      if (request.waves === undefined) {
        throw new OtaError(
          'E_USAGE',
          'experiment promote: give --waves for a rollout over the group (e.g. --waves 10,50:manual,100), or --move-channel',
        );
      }
      const rolloutId = `ro-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
      result = this.deps.rollouts.create(
        {
          id: rolloutId,
          model: e.model,
          version: e.candidate.version,
          target: { group: e.group },
          strategy: {
            waves: request.waves,
            maxFailureRate: request.maxFailureRate ?? 0,
            ...(request.analysis !== undefined ? { analysis: request.analysis } : {}),
          },
          channel: request.channel,
        },
        actor,
        { releasing: id, amend: amend({ rolloutId }) },
      );
    }
    this.unindex(id);
    return { ...this.view(ended ?? this.mustGet(id), devices), evidence: proof.summary, result };
  }

  /**
   * The automatic judge: every running experiment that reached its next planned look is compared
   * and decided (plan-experiment.ts planLook). Errors are reported, never thrown: one bad
   * experiment must not stop the others' looks.
   */
  tick(): { looked: string[]; halted: string[] } {
    const looked: string[] = [];
    const halted: string[] = [];
    for (const e of this.deps.store.listExperiments({ running: true })) {
      try {
        const elapsed = this.deps.now().getTime() - Date.parse(e.startedAt);
        if (lookLevel(e, elapsed).index <= e.looksDone) continue;
        const devices = this.deps.store.experimentDevices(e.id);
        const now = this.deps.now().toISOString();
        const decided = planLook(e, devices, this.compareOf(e, devices), now, this.endFacts(e));
        if (!decided) continue;
        this.deps.executor.commit(decided.plan, now);
        looked.push(e.id);
        if (decided.halted) {
          halted.push(e.id);
          this.unindex(e.id);
        }
      } catch (err) {
        this.deps.onError?.(err, `the planned look of experiment ${e.id}`);
      }
    }
    return { looked, halted };
  }
}
