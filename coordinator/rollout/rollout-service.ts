import { randomBytes } from 'node:crypto';
import { OtaError } from '../../shared/errors.js';
import { ownEntry } from '../../shared/id-record.js';
import type { AuditEvent, ModelState, Reported, ReportedModels, RolloutSummary } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { releaseIdOf, versionOfRelease } from '../../shared/release-id.js';
import { isActiveRollout, isFailure, isOutcome } from '../../shared/states.js';
import type { Topics } from '../../shared/topics.js';
import type { DesiredPublisher, DesiredStates, OutgoingMessage } from '../desired/desired-publisher.js';
import { analysisCohort } from '../experiments/analysis-judge.js';
import { type CoordinatorTrust, type Eligibility, releaseEligibility } from '../fleet/release-trust.js';
import { PacedFlush, type PacedTimers } from '../paced-flush.js';
import { PlanExecutor } from '../plan/commit-plan.js';
import { isEmptyPlan, type WritePlan } from '../plan/write-plan.js';
import type { Store } from '../store/store.js';
import { attentionRank } from './attention-order.js';
import { type DeviceEvent, decide, decideBatch } from './decide.js';
import { decisionPlan } from './decision-plan.js';
import { LiveDeviceIndex } from './device-index.js';
import { planRolloutCreate } from './plan-create.js';
import { revertTarget, runningRelease } from './revert-target.js';
import { summarize } from './summary.js';
import type {
  Decision,
  DecisionInputs,
  DevicePage,
  Rollout,
  RolloutDevice,
  RolloutDeviceView,
  RolloutEvent,
  RolloutStatusResult,
} from './types.js';

/** Finished rollouts remembered for late reports (a device that converges after the end). */
const FINISHED_CACHE = 64;

interface Finished {
  rollout: Rollout;
  /** Devices a late report can still move. */
  open: Set<string>;
}

export interface RolloutTarget {
  group?: string | undefined;
  devices?: string[] | undefined;
  selector?: Record<string, string> | undefined;
}

export interface CreateRolloutInput {
  model: string;
  version: string;
  target: RolloutTarget;
  strategy: unknown;
  channel?: string | undefined;
  id?: string | undefined;
}

export interface RolloutServiceDeps {
  store: Store;
  desired: DesiredPublisher;
  topics: Topics;
  publish: (messages: OutgoingMessage[], desired?: DesiredStates) => Promise<void>;
  now: () => Date;
  onAudit?: (events: AuditEvent[]) => void;
  onSummary?: (summary: RolloutSummary) => void;
  onError?: (err: unknown, what: string) => void;
  /** Device events are decided at most once per this many ms under load (PacedFlush); default 20. */
  decideEveryMs?: number;
  /**
   * The models of a device's last report, newest first from memory (the shell writes reports
   * behind); default: the store's copy.
   */
  lastModels?: (deviceId: string) => ReportedModels | null | undefined;
  /**
   * Whether a device is connected now, from memory (the shell's presence recorder); default: the
   * store's copy. `rollout.status` reads it for every device of the rollout.
   */
  isOnline?: (deviceId: string) => boolean;
  /** The one executor of write plans (one per coordinator); default: one of its own. */
  executor?: PlanExecutor;
  /** The timers batching waits with (default the real ones; tests pass their own). */
  timers?: PacedTimers;
  /**
   * The release keys and threshold the coordinator counts now (FleetService.releaseTrust): a
   * revoked release is never assigned (fleet/release-trust.ts). Without it every published
   * release counts as assignable.
   */
  releaseTrust?: () => CoordinatorTrust;
}

interface Live {
  rollout: Rollout;
  /** The rollout's rows and wave tallies, kept in step with every commit. */
  devices: LiveDeviceIndex;
}

/**
 * The imperative shell around the pure rollout engine (design section 6): it loads a rollout,
 * asks `decide`, writes the decision (rollout patch, device rows, desired entries, channel move,
 * audit rows) in ONE SQLite transaction, then publishes the signed desired states, the retained
 * rollout summary and the audit events. Active rollouts are kept in memory (loaded at start), so
 * a report costs one decision and one small transaction, not a reload of the rollout.
 *
 * Everything here is synchronous up to the publish: JavaScript runs one report at a time, so two
 * reports can never interleave inside a decision.
 */
export class RolloutService {
  private readonly live = new Map<string, Live>();
  /** Finished rollouts recently named by a report, oldest first (bounded: FINISHED_CACHE). */
  private readonly finished = new Map<string, Finished | null>();
  /**
   * The rollout that finished last with devices still at work (or was read back for late
   * reports), kept in memory while its late reports keep coming: dropped by the first round of
   * decisions that has none of them, once none of its devices is left to report, and by the next
   * rollout's creation.
   *
   * Why: each round of a finished rollout's late reports was decided on all its rows read back
   * from the store (~150 ms of the thread at 50,000 devices); an aborted wave's devices still at
   * work send theirs for a second or more after the abort. Dropped early so that a finished
   * rollout's rows do not stay in memory beside the next one's.
   */
  private lingering: { id: string; entry: Live } | null = null;
  private readonly queue = new Map<string, DeviceEvent[]>();
  private readonly pacer: PacedFlush;
  private readonly executor: PlanExecutor;

  constructor(private readonly deps: RolloutServiceDeps) {
    this.executor = deps.executor ?? new PlanExecutor(deps);
    this.pacer = new PacedFlush(
      () => this.decideQueued(),
      deps.decideEveryMs ?? 20,
      () => deps.now().getTime(),
      deps.timers,
    );
    for (const rollout of deps.store.listRollouts({ active: true })) this.load(rollout.id);
  }

  /** The finished rollout whose rows are kept in memory for its late reports, if any (tests, diagnostics). */
  get lingeringRollout(): string | null {
    return this.lingering?.id ?? null;
  }

  private load(id: string): Live | null {
    const cached = this.live.get(id);
    if (cached) return cached;
    const rollout = this.deps.store.getRollout(id);
    if (!rollout) return null;
    const entry: Live = {
      rollout,
      devices: new LiveDeviceIndex(this.deps.store.rolloutDevices(id), rollout.strategy.waves.length),
    };
    if (isActiveRollout(rollout.status)) this.live.set(id, entry);
    return entry;
  }

  /**
   * A finished rollout that a late report names: its fields and the devices a late report can
   * still move (sent it, no outcome, not sent back), kept for the next reports (a fleet
   * reconnecting after the end names the same few rollouts); null when there is none. Small: ids
   * of the open devices only, never the rollout's rows (a 10,000-device rollout has a handful of
   * late devices; an aborted canary's devices that were never sent it are not among them).
   */
  private finishedInfo(id: string): Finished | null {
    if (this.finished.has(id)) return this.finished.get(id) ?? null;
    const rollout = this.live.has(id) ? null : this.deps.store.getRollout(id);
    const info =
      rollout && !isActiveRollout(rollout.status)
        ? { rollout, open: new Set(this.deps.store.openRolloutDevices(id)) }
        : null;
    this.finished.set(id, info);
    if (this.finished.size > FINISHED_CACHE) {
      const oldest = this.finished.keys().next().value as string;
      this.finished.delete(oldest);
    }
    return info;
  }

  private lastModels(deviceId: string): ReportedModels | null | undefined {
    return this.deps.lastModels
      ? this.deps.lastModels(deviceId)
      : this.deps.store.getDevice(deviceId)?.lastReport?.models;
  }

  /** Whether a published release may be assigned now (not revoked). */
  private eligibility(release: Parameters<typeof releaseEligibility>[0], trust?: CoordinatorTrust): Eligibility {
    const current = trust ?? this.deps.releaseTrust?.();
    return current ? releaseEligibility(release, current) : { eligible: true };
  }

  /** The snapshot a decision about `model` may read (DecisionInputs), memoised per decision. */
  private inputsFor(model: string, rolloutId?: string): DecisionInputs {
    // Per release: undefined when not published here, else why it is revoked, or null.
    const verdicts = new Map<string, string | null | undefined>();
    let trust: CoordinatorTrust | undefined;
    const verdict = (releaseId: string): string | null | undefined => {
      if (verdicts.has(releaseId)) return verdicts.get(releaseId);
      const release = this.deps.store.getRelease(releaseId);
      let known: string | null | undefined;
      if (!release) known = undefined;
      else {
        trust ??= this.deps.releaseTrust?.();
        const e = this.eligibility(release, trust);
        known = e.eligible ? null : e.reason;
      }
      verdicts.set(releaseId, known);
      return known;
    };
    // A revoked release is no revert target: like one not published here (revert-target.ts).
    const isPublished = (releaseId: string) => verdict(releaseId) === null;
    return {
      revertTargetOf: (deviceId) => {
        const running = runningRelease(model, ownEntry(this.lastModels(deviceId), model));
        return running === undefined ? undefined : revertTarget(running, isPublished);
      },
      revokedReason: (releaseId) => verdict(releaseId) ?? null,
      ownedElsewhere: (deviceId) =>
        this.deps.store.runningExperimentsFor(deviceId, model).length > 0 ||
        this.deps.store.activeRolloutsFor(deviceId, model).some((r) => r.id !== rolloutId),
    };
  }

  private mustLoad(id: string): Live {
    const entry = this.load(id);
    if (!entry) throw new OtaError('E_NOT_FOUND', `no rollout ${JSON.stringify(id)}: see \`otactl rollout ls\``);
    return entry;
  }

  /** Resolves a target to device ids; names that do not resolve are listed in the error. */
  resolveTarget(target: RolloutTarget): string[] {
    return this.resolveWithPresence(target).ids;
  }

  /** resolveTarget, with whether each device is online (read in the same one statement: target-reads.ts). */
  private resolveWithPresence(target: RolloutTarget): { ids: string[]; online: Map<string, boolean> } {
    const { store } = this.deps;
    const given = [target.group, target.devices, target.selector].filter((v) => v !== undefined).length;
    if (given !== 1) {
      throw new OtaError('E_USAGE', 'name exactly one target: a group, a device list, or a label selector');
    }
    let ids: string[];
    if (target.group !== undefined) {
      const group = store.getGroup(target.group);
      if (!group)
        throw new OtaError('E_NOT_FOUND', `no group ${JSON.stringify(target.group)}: see \`otactl group ls\``);
      if (group.devices) ids = group.devices;
      else ids = this.select(group.selector ?? {});
    } else if (target.devices !== undefined) {
      ids = target.devices;
    } else {
      ids = this.select(target.selector ?? {});
    }
    const online = store.devicesOnline(ids);
    const unknown = ids.filter((id) => !online.has(id));
    if (unknown.length > 0) {
      throw new OtaError(
        'E_NOT_FOUND',
        `${unknown.length} device name(s) do not resolve: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? ', ...' : ''}; enrol them (\`otactl device add\`) or fix the target`,
      );
    }
    // An empty target is the planner's refusal (planRolloutCreate).
    return { ids: [...new Set(ids)], online };
  }

  private select(selector: Record<string, string>): string[] {
    const pairs = Object.entries(selector);
    const ids: string[] = [];
    for (const d of this.deps.store.eachDeviceLabels()) {
      if (pairs.every(([k, v]) => ownEntry(d.labels, k) === v)) ids.push(d.id);
    }
    return ids;
  }

  /**
   * `options.releasing`: an experiment whose devices this rollout takes over (experiment
   * promote): its ownership does not count, and `options.amend` adds the experiment's end to the
   * same write plan, so the handover is one transaction.
   */
  create(
    input: CreateRolloutInput,
    actor: string,
    options: { releasing?: string; amend?: (plan: WritePlan) => void } = {},
  ): RolloutSummary {
    this.flush();
    const { store } = this.deps;
    const { ids: deviceIds, online } = this.resolveWithPresence(input.target);
    const id = input.id ?? `ro-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    // Desired states and reports name their writer by this id: it must not be an experiment's.
    if (store.getExperiment(id)) {
      throw new OtaError('E_CONFLICT', `the id ${id} is taken by an experiment: pick another rollout id`);
    }
    const now = this.deps.now().toISOString();
    const candidate = store.getRelease(releaseIdOf(input.model, input.version));
    // What owns each device's desired state now, and what that state is: one read each for the
    // whole target, not one per device (~2 s at 50,000 devices: target-reads.ts).
    const rollouts = store.activeRolloutIdsOf(deviceIds, input.model);
    const experiments = store.runningExperimentIdsOf(deviceIds, input.model);
    const desired = store.desiredReleasesOf(deviceIds, input.model);
    const { rollout, devices, plan } = planRolloutCreate(
      { id, model: input.model, version: input.version, strategy: input.strategy, channel: input.channel },
      {
        releaseExists: candidate !== null,
        eligibility: candidate ? this.eligibility(candidate) : { eligible: true },
        rolloutExists: store.getRollout(id) !== null,
        deviceIds,
        online: (deviceId) => online.get(deviceId) ?? false,
        busyIn: (deviceId) => [
          ...(rollouts.get(deviceId) ?? []),
          ...(experiments.get(deviceId) ?? []).filter((e) => e !== options.releasing).map((e) => `experiment ${e}`),
        ],
        desiredBefore: (deviceId) => desired.get(deviceId) ?? null,
        inputs: this.inputsFor(input.model),
      },
      actor,
      now,
    );
    options.amend?.(plan);
    this.finished.delete(id);
    // The plan carries the rows as created and the start decision's changes: the cache starts
    // from the created rows and takes the changes once they are committed.
    // In the store's order (wave, then device id), as load() reads them after a restart or once
    // finished: `rollout.status` pages must list the same order on every call.
    const entry: Live = {
      rollout: { ...rollout },
      devices: new LiveDeviceIndex(devices.map((d) => ({ ...d })).sort(byWaveThenId), rollout.strategy.waves.length),
    };
    this.lingering = null; // this rollout's rows take its place in memory
    this.commitPlan(entry, plan, now);
    // Finished by its start (every device offline: no wave waits for one), it is not live.
    if (isActiveRollout(entry.rollout.status)) this.live.set(id, entry);
    else if (lateReportsPossible(entry)) this.lingering = { id, entry };
    return summarize(entry.rollout, entry.devices, now);
  }

  /** approve / promote / halt / resume / abort: E_ROLLOUT_STATE when it does not apply now. */
  act(id: string, event: Extract<RolloutEvent, { actor: string }>): RolloutSummary {
    this.flush();
    const entry = this.mustLoad(id);
    const now = this.deps.now().toISOString();
    const decision = decide(entry.rollout, entry.devices, event, now, this.inputsFor(entry.rollout.model, id));
    this.commit(entry, decision, now);
    return summarize(entry.rollout, entry.devices, now);
  }

  /**
   * The rollout as an operator reads it: its summary, how it was made, and each device with its
   * wave (from 1), its outcome, where an abort sent it, whether it is online now and what it
   * reports now for the model.
   */
  status(id: string, page: DevicePage = {}): RolloutStatusResult {
    this.flush();
    const entry = this.mustLoad(id);
    const { rollout } = entry;
    // Per row, not a scan of the whole fleet: a canary rollout in a big fleet reads a few devices.
    // From memory where the shell keeps it (presence; the newest report of every device that
    // reported since the start): a dashboard asks for a 9,000-device wave's list every few seconds
    // while the wave runs, and two store reads per device made each answer ~100-200 ms of the
    // coordinator's only thread. A device silent since the start is still read from the store.
    const { store } = this.deps;
    const lastModels = this.deps.lastModels ?? ((id: string) => store.getDevice(id)?.lastReport?.models);
    const isOnline = this.deps.isOnline ?? ((id: string) => store.getDevice(id)?.online ?? false);
    // A page of a large rollout (50,000 devices are a ~15 MB reply, built and held at once), in
    // the store's order (wave, then id) whether live or read back: pages of `limit` from 0 cover
    // every device once. Filtered first by wave and state (the dashboard asks for the one page
    // it shows), and `devicesTotal` counts what matched.
    const { wave, state } = page;
    const every = entry.devices.values();
    const matching =
      wave === undefined && state === undefined
        ? every
        : every.filter(
            (d) => (wave === undefined || d.wave + 1 === wave) && (state === undefined || d.state === state),
          );
    // For a watch showing a few rows of a large wave: what needs attention first.
    const rows =
      page.order === 'attention'
        ? [...matching].sort(
            (a, b) =>
              attentionRank(a.state) - attentionRank(b.state) ||
              (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0),
          )
        : matching;
    const from = Math.min(page.offset ?? 0, rows.length);
    const to = page.limit === undefined ? rows.length : Math.min(rows.length, from + page.limit);
    const devices = rows.slice(from, to).map((d): RolloutDeviceView => {
      const report = ownEntry(lastModels(d.deviceId), rollout.model);
      return {
        id: d.deviceId,
        wave: d.wave + 1,
        state: d.state,
        online: isOnline(d.deviceId),
        assignedAt: d.assignedAt,
        finishedAt: d.finishedAt,
        error: d.error,
        revertedTo: d.revertedTo
          ? { version: d.revertedTo.releaseId === null ? null : versionOfRelease(d.revertedTo.releaseId) }
          : null,
        now: report
          ? {
              state: report.state,
              version: report.version,
              current: report.current,
              progress: report.progress,
              error: report.error,
              updatedAt: report.updatedAt,
            }
          : null,
      };
    });
    return {
      summary: summarize(rollout, entry.devices, this.deps.now().toISOString()),
      rollout: {
        channel: rollout.channel,
        strategy: rollout.strategy,
        promoted: rollout.promoted,
        createdBy: rollout.createdBy,
        createdAt: rollout.createdAt,
      },
      devices,
      devicesTotal: rows.length,
    };
  }

  /**
   * Rollouts waiting at an analysis gate that is baking, with their rows (the analysis judge,
   * experiments/analysis-judge.ts).
   */
  pendingAnalyses(): { rollout: Rollout; devices: Iterable<RolloutDevice> }[] {
    this.flush();
    const out: { rollout: Rollout; devices: Iterable<RolloutDevice> }[] = [];
    for (const live of this.live.values()) {
      const r = live.rollout;
      if (r.status === 'waiting_approval' && r.analysis?.state === 'baking' && r.analysis.wave === r.currentWave) {
        out.push({ rollout: { ...r }, devices: live.devices.byId.values() });
      }
    }
    return out;
  }

  /**
   * The analysis cohorts a device's series of `model` counts in (MetricsRecorder.cohortsOf): the
   * baking analysis gates of the live rollouts it is in, each from the bake's start.
   */
  analysisCohortsOf(deviceId: string, model: string): { cohort: string; since: number }[] {
    const out: { cohort: string; since: number }[] = [];
    for (const live of this.live.values()) {
      const r = live.rollout;
      const a = r.analysis;
      if (r.model !== model || r.status !== 'waiting_approval' || a?.state !== 'baking' || a.wave !== r.currentWave) {
        continue;
      }
      if (!live.devices.byId.has(deviceId)) continue;
      out.push({ cohort: analysisCohort(r.id, a.wave, a.startedAt), since: Date.parse(a.startedAt) });
    }
    return out;
  }

  /** The rollout's summary (rollout ls). */
  summary(id: string): RolloutSummary {
    this.flush();
    const entry = this.mustLoad(id);
    return summarize(entry.rollout, entry.devices, this.deps.now().toISOString());
  }

  /**
   * A device report: every model entry that names a rollout it belongs to. Active rollouts decide
   * on it; a finished one only records a late report about its candidate on a device whose row
   * has no outcome yet (it converged after the end), which costs a lookup only in that case.
   */
  onReport(deviceId: string, report: Reported): void {
    for (const [model, entry] of Object.entries(report.models)) {
      if (!entry.rolloutId) continue;
      const live = this.live.get(entry.rolloutId);
      if (!live) {
        // Finished: only a report about its candidate from a device still without an outcome.
        const finished = this.finishedInfo(entry.rolloutId);
        if (!finished || finished.rollout.model !== model || entry.version !== finished.rollout.version) continue;
        if (!finished.open.has(deviceId)) continue;
      } else if (live.rollout.model !== model || !live.devices.byId.has(deviceId)) {
        continue;
      }
      this.enqueue(
        entry.rolloutId,
        {
          type: 'report',
          deviceId,
          state: entry.state as ModelState,
          version: entry.version ?? '',
          error: entry.error ?? null,
        },
        // A failure may trip the halt rule: decided on the next turn, not after the batch interval.
        isFailure(entry.state),
      );
    }
  }

  /**
   * After a coordinator start: every device an active rollout still counts as online but that has
   * not reconnected (`isOnline` false) is offline now. Rows keep their presence across a restart
   * so waves do not complete before the fleet reconnects; this ends that grace.
   */
  sweepPresence(isOnline: (deviceId: string) => boolean): number {
    let swept = 0;
    for (const live of this.live.values()) {
      for (const d of live.devices.byId.values()) {
        if (d.online && !isOnline(d.deviceId)) {
          this.enqueue(live.rollout.id, { type: 'presence', deviceId: d.deviceId, online: false });
          swept++;
        }
      }
    }
    return swept;
  }

  onPresence(deviceId: string, online: boolean): void {
    for (const live of this.live.values()) {
      if (live.devices.byId.has(deviceId)) this.enqueue(live.rollout.id, { type: 'presence', deviceId, online });
    }
  }

  /**
   * Device events are decided in batches: everything that arrived since the previous decision
   * goes into the next one (decideBatch: one decision, one transaction, one summary per
   * rollout), at most one batch per `decideEveryMs` (PacedFlush). Under light load a batch is one
   * event, decided on the next turn of the event loop; under a 10,000-device wave it is hundreds.
   */
  private enqueue(rolloutId: string, event: DeviceEvent, urgent = false): void {
    const list = this.queue.get(rolloutId);
    if (list) list.push(event);
    else this.queue.set(rolloutId, [event]);
    this.pacer.schedule(urgent);
  }

  /** Decides every queued device event now (also before an operator's command sees the rollout). */
  flush(): void {
    this.pacer.run();
  }

  private decideQueued(): void {
    if (this.queue.size === 0) return; // an operator's command flushed nothing: no round
    const queued = [...this.queue];
    this.queue.clear();
    const lingering = this.lingering;
    this.lingering = null; // kept only by a round that decides on it (or a rollout finishing in it)
    for (const [id, events] of queued) {
      // A finished rollout is read back for its late reports (or still in memory from the last
      // round), and kept for the next round only (lingering).
      let live = this.live.get(id) ?? null;
      const finished = live ? null : this.finished.get(id);
      if (finished) live = lingering?.id === id ? lingering.entry : this.load(id);
      if (!live) continue;
      const now = this.deps.now().toISOString();
      try {
        this.commit(
          live,
          decideBatch(live.rollout, live.devices, events, now, this.inputsFor(live.rollout.model, id)),
          now,
        );
      } catch (err) {
        this.deps.onError?.(err, `deciding ${events.length} device event(s) of rollout ${id}`);
      }
      // While a late report can still move one of its devices (committed outcomes left `open`).
      if (finished && finished.open.size > 0) this.lingering = { id, entry: live };
    }
  }

  /** At start: every rollout summary again (the embedded broker's retained messages are in memory only). */
  summaries(): OutgoingMessage[] {
    const now = this.deps.now().toISOString();
    return this.deps.store.listRollouts().map((r) => {
      const entry = this.load(r.id) as Live;
      return this.summaryMessage(summarize(entry.rollout, entry.devices, now));
    });
  }

  private summaryMessage(summary: RolloutSummary): OutgoingMessage {
    return { topic: this.deps.topics.rollout(summary.id), payload: encodePayload(summary), retain: true };
  }

  /** Writes a decision through the executor (one transaction), updates the cache, then publishes. */
  private commit(entry: Live, decision: Decision, now: string): void {
    this.commitPlan(entry, decisionPlan(entry.rollout, decision), now);
  }

  private commitPlan(entry: Live, plan: WritePlan, now: string): void {
    if (isEmptyPlan(plan)) return;
    const { rollout } = entry;
    this.executor.commit(plan, now, () => {
      // The transaction committed: now the cache may change.
      if (plan.rolloutPatch) Object.assign(rollout, plan.rolloutPatch.patch);
      if (plan.rolloutDevices) entry.devices.apply(plan.rolloutDevices.devices);
      const finished = this.finished.get(rollout.id);
      if (finished && plan.rolloutDevices) {
        for (const d of plan.rolloutDevices.devices) {
          if (isOutcome(d.state) || d.revertedTo) finished.open.delete(d.deviceId);
        }
      }
      // Just finished with devices still at work: they report late, right after (lingering).
      if (!isActiveRollout(rollout.status) && this.live.delete(rollout.id) && lateReportsPossible(entry)) {
        this.lingering = { id: rollout.id, entry };
      }
      const summary = summarize(rollout, entry.devices, now);
      this.deps.onSummary?.(summary);
      return [this.summaryMessage(summary)];
    });
  }
}

/**
 * Whether a late report can still move one of the rollout's devices: one sent it, with no outcome
 * yet and not sent back by an abort (the store's openRolloutDevices). A rollout that ended with
 * every device done is not kept in memory after its end (lingering).
 */
function lateReportsPossible(entry: Live): boolean {
  for (const d of entry.devices.byId.values()) {
    if (d.state !== 'pending' && !isOutcome(d.state) && !d.revertedTo) return true;
  }
  return false;
}

/**
 * The store's order of a rollout's rows (`ORDER BY wave, device_id`): ids are ASCII
 * (shared/messages.ts), so comparing UTF-16 code units orders them as SQLite's BINARY collation.
 */
function byWaveThenId(a: RolloutDevice, b: RolloutDevice): number {
  return a.wave - b.wave || (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0);
}
