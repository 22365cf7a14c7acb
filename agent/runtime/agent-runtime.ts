import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { decodeDesiredMessage } from '../../shared/desired.js';
import { OtaError, toOtaError } from '../../shared/errors.js';
import { digestFile } from '../../shared/file-digest.js';
import { idRecord, ownEntry } from '../../shared/id-record.js';
import type { Logger } from '../../shared/logger.js';
import type { Manifest } from '../../shared/manifest.js';
import type { DeviceFacts, ErrorInfo, Status } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { settleWithin } from '../../shared/settle-within.js';
import { withoutNotifyEnv } from '../../shared/systemd-notify.js';
import { createTopics, type Topics } from '../../shared/topics.js';
import { type AcceptedTrust, verifyTrustSelfSigned } from '../../shared/trust.js';
import type { AgentConfig } from '../config.js';
import { type AgentState, emptyRecord, type Links, type Target, trustRecordOf } from '../core/agent-state.js';
import {
  type AgentEvent,
  type AgentLimits,
  buildReport,
  type Effect,
  heldTrust,
  isTerminal,
  linksAfterSwap,
  step,
} from '../core/machine.js';
import type { DownloadRequest, DownloadResult } from '../download/http-download.js';
import type { ModelStore } from '../install/model-store.js';
import { MqttSession } from '../mqtt/session.js';
import type { ProbeRequest, ProbeResult } from '../probe/run-probe.js';
import type { StateStore } from '../state/state-store.js';
import type { TrustStore } from '../state/trust-store.js';

/** Where a test may make the agent kill itself with SIGKILL (OTA_AGENT_TEST_HOOKS=1 only). */
export type CrashPoint =
  | 'download-start'
  | 'download-mid'
  | 'downloaded'
  | 'verify'
  | 'apply-start'
  | 'installed'
  | 'swapped'
  | 'probe-start'
  | 'probed'
  | 'rollback';

export interface RuntimeDeps {
  config: AgentConfig;
  agentVersion: string;
  logger: Logger;
  now: () => Date;
  random: () => number;
  stateStore: StateStore;
  /** trust.json: the trust document held, written before state.json (agent/state/trust-store.ts). */
  trustStore: TrustStore;
  modelStore: ModelStore;
  download: (req: DownloadRequest) => Promise<DownloadResult>;
  probe: (req: ProbeRequest) => Promise<ProbeResult>;
  /** Pre-apply content check of matching bytes: null to install, or the refusal. */
  inspectModel: (modelFile: string, installDir: string) => Promise<ErrorInfo | null>;
  facts: () => Promise<DeviceFacts>;
  crashPoint: (point: CrashPoint) => void;
  /** A health probe passed: its own inference latency, for the device metrics (source `probe`). */
  onProbeLatency?: (model: string, version: string, latencyMs: number) => void;
}

/**
 * The imperative shell around the pure core (agent/core/machine.ts): it feeds events in one at a
 * time, persists each new state before running its effects, runs the effects (download, verify,
 * install, probe, rollback, reports) and turns their outcomes back into events.
 */
export class AgentRuntime {
  private state!: AgentState;
  private queue: Promise<void> = Promise.resolve();
  private queueBusySince: number | null = null;
  private facts: DeviceFacts | null = null;
  private readonly topics: Topics;
  private readonly session: MqttSession;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly downloads = new Map<string, AbortController>();
  /** Staged files being deleted, by sha256: a fetch of the same artifact waits for its discard. */
  private readonly discarding = new Map<string, Promise<void>>();
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Digests computed while downloading, by `${model}:${generation}`, until verified. */
  private readonly fetchedDigests = new Map<string, { size: number; sha256: string }>();
  private flushing = false;
  private stopped = false;
  private readonly limits: AgentLimits;

  constructor(private readonly deps: RuntimeDeps) {
    const { config } = deps;
    this.topics = createTopics(config.broker.topicPrefix);
    this.limits = {
      maxAttempts: config.download.maxAttempts,
      backoffBaseMs: config.download.backoffBaseMs,
      backoffMaxMs: config.download.backoffMaxMs,
      maxStarts: config.maxStartsPerStep,
      maxArtifactBytes: config.download.maxBytes,
      diskReserveBytes: config.download.reserveMB * 1024 * 1024,
      outboxLimit: config.outboxLimit,
    };
    this.session = new MqttSession({
      url: config.broker.url,
      deviceId: config.deviceId,
      token: config.token,
      ...(config.broker.caFile ? { caFile: config.broker.caFile } : {}),
      keepaliveSeconds: config.broker.keepaliveSeconds,
      topics: this.topics,
      logger: deps.logger,
      now: deps.now,
      random: deps.random,
      status: () => this.status(),
    });
    this.session.on('connected', () => {
      this.resendCurrent();
      this.flushOutbox();
    });
    this.session.on('desired', (payload: Buffer) => this.onDesired(payload));
  }

  /** For the watchdog: the event queue is not wedged (a step is quick: pure step + one fsync'd write). */
  isLive(maxStepMs = 60_000): boolean {
    return this.queueBusySince === null || this.deps.now().getTime() - this.queueBusySince < maxStepMs;
  }

  get connected(): boolean {
    return this.session.connected;
  }

  onceConnected(): Promise<void> {
    return this.session.connected ? Promise.resolve() : new Promise((r) => this.session.once('connected', () => r()));
  }

  snapshot(): AgentState {
    return this.state;
  }

  /**
   * The versions of `model` an application on this device may be running: what `current` and
   * `previous` point to, and the version being installed or probed (a swap can happen under an
   * application between loading and reporting). Undefined for a model this agent does not hold.
   */
  knownVersions(model: string): ReadonlySet<string> | undefined {
    const record = this.state ? ownEntry(this.state.models, model) : undefined;
    if (!record) return undefined;
    const versions = new Set<string>();
    for (const v of [record.links.current, record.links.previous, record.target?.version]) if (v) versions.add(v);
    return versions;
  }

  /** Calls `listener` on every (re)connection to the broker. */
  onConnected(listener: () => void): void {
    this.session.on('connected', listener);
  }

  /** A device metrics summary (QoS 1, not retained): resolves on the broker's PUBACK, rejects if the link drops first. */
  publishMetrics(payload: Buffer): Promise<void> {
    return this.session.publish(this.topics.metrics(this.deps.config.deviceId), payload, false);
  }

  async start(): Promise<void> {
    const { stateStore, modelStore, logger } = this.deps;
    await modelStore.init();
    const loaded = await stateStore.load();
    if (loaded.recoveredFrom)
      logger.error({ file: loaded.recoveredFrom }, 'state.json was unreadable; moved aside, starting from disk');
    this.state = loaded.state;
    this.state = { ...this.state, trust: await this.loadTrust() };
    // The symlinks on disk are the truth about what runs; models present on disk but unknown to
    // the state (state lost) are adopted as idle with their links.
    const links = idRecord<Links>();
    for (const model of new Set([...(await modelStore.listModels()), ...Object.keys(this.state.models)])) {
      links[model] = await modelStore.readLinks(model);
      if (!this.state.models[model]) this.state.models[model] = emptyRecord(this.deps.now(), links[model]);
    }
    this.facts = await this.deps.facts().catch(() => null);
    await this.dispatch({ type: 'started', links });
    this.session.start();
  }

  /**
   * The trust held: the newer of trust.json and state.json's copy, each checked against its own
   * keys and the record derived again from the signed text (so the keys used are the signed
   * ones). trust.json survives a state.json that had to be rebuilt; a damaged trust.json throws.
   */
  private async loadTrust(): Promise<AgentState['trust']> {
    const { logger } = this.deps;
    const stored = await this.deps.trustStore.load();
    let kept: AcceptedTrust | null = null;
    if (this.state.trust) {
      try {
        kept = verifyTrustSelfSigned(this.state.trust.envelope);
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'the trust document in state.json does not verify; ignored');
      }
    }
    const best = stored && (!kept || stored.held.version > kept.held.version) ? stored : kept;
    if (best && best === stored && best.held.version !== this.state.trust?.version) {
      logger.warn({ version: best.held.version }, 'trust document restored from trust.json');
    }
    return best ? trustRecordOf(best) : null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const c of this.downloads.values()) c.abort();
    await this.session.stop();
    await settleWithin(Promise.allSettled([...this.inFlight]), 5_000);
    await this.queue;
  }

  private async status(): Promise<Status> {
    this.facts = await this.deps.facts().catch(() => this.facts);
    return {
      online: true,
      ts: this.deps.now().toISOString(),
      agentVersion: this.deps.agentVersion,
      ...(this.facts ? { facts: this.facts } : {}),
    };
  }

  private onDesired(payload: Buffer): void {
    try {
      const message = decodeDesiredMessage(payload);
      void this.dispatch({ type: 'desired_message', message });
    } catch (err) {
      const error = toOtaError(err).toJSON();
      this.deps.logger.warn({ code: error.code }, `desired state refused: ${error.message}`);
      void this.dispatch({ type: 'desired_invalid', error });
    }
  }

  /** Runs one event through the core, persists, then starts the effects. Events are serialised. */
  dispatch(event: AgentEvent): Promise<void> {
    const run = async () => {
      if (this.stopped && event.type !== 'started') return;
      this.queueBusySince = this.deps.now().getTime();
      try {
        const { state, effects } = step(this.state, event, this.stepContext());
        if (state !== this.state) {
          // Persist before acting: after a crash the agent resumes from this state. (The same
          // state object back means nothing changed: it is on disk already.) A new trust
          // document first: it must never be lost once the state built on it is written.
          if (state.trust && state.trust !== this.state.trust) {
            await this.deps.trustStore.save(state.trust.envelope);
            this.deps.logger.warn(
              {
                version: state.trust.version,
                keys: state.trust.keys.map((k) => k.keyId),
                threshold: state.trust.threshold,
              },
              `trust rotated to version ${state.trust.version}`,
            );
          }
          await this.deps.stateStore.save(state);
          this.logTransitions(this.state, state, event);
          this.state = state;
        }
        for (const effect of effects) this.runEffect(effect);
      } catch (err) {
        this.deps.logger.error({ err: (err as Error).message, event: event.type }, 'processing an event failed');
      } finally {
        this.queueBusySince = null;
      }
    };
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  private stepContext() {
    const { config } = this.deps;
    return {
      now: this.deps.now(),
      deviceId: config.deviceId,
      releaseTrust: { keys: config.trustedKeys, threshold: config.threshold },
      releaseTrustVersion: config.trustVersion,
      coordinatorTrust: { keys: [config.coordinatorKey], threshold: 1 },
      facts: this.facts,
      limits: this.limits,
    };
  }

  private logTransitions(before: AgentState, after: AgentState, event: AgentEvent): void {
    for (const [model, rec] of Object.entries(after.models)) {
      const old = before.models[model];
      if (old?.phase !== rec.phase || old.error?.code !== rec.error?.code) {
        const level = rec.phase === 'failed' || rec.phase === 'rolled_back' ? 'warn' : 'info';
        this.deps.logger[level](
          {
            model,
            version: rec.target?.version,
            state: rec.phase,
            attempt: rec.attempt,
            error: rec.error,
            event: event.type,
          },
          `${model}: ${old?.phase ?? 'new'} -> ${rec.phase}`,
        );
      }
    }
    if (after.rejected && after.rejected !== before.rejected) {
      this.deps.logger.warn({ rejected: after.rejected }, `desired state refused: ${after.rejected.error.message}`);
    }
    if (after.trustRejected && after.trustRejected !== before.trustRejected) {
      this.deps.logger.warn(
        { trustRejected: after.trustRejected },
        `trust document refused: ${after.trustRejected.error.message}`,
      );
    }
  }

  private track<T>(p: Promise<T>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private runEffect(effect: Effect): void {
    const p = this.execute(effect).catch((err: unknown) => {
      this.deps.logger.error({ err: (err as Error).message, effect: effect.type }, 'effect failed unexpectedly');
    });
    this.track(p);
  }

  private async execute(effect: Effect): Promise<void> {
    const { modelStore, crashPoint } = this.deps;
    switch (effect.type) {
      case 'report':
        this.flushOutbox();
        return;
      case 'download':
        return this.checkDisk(effect.model, effect.generation, effect.target);
      case 'fetch':
        return this.fetch(effect.model, effect.generation, effect.target);
      case 'retry_later': {
        // Jitter up to half the delay, so devices that failed together do not retry together.
        const delay = effect.delayMs + Math.round(this.deps.random() * effect.delayMs * 0.5);
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          void this.dispatch({ type: 'retry_due', model: effect.model, generation: effect.generation });
        }, delay);
        this.timers.add(timer);
        return;
      }
      case 'discard_staged': {
        const { sha256 } = effect.target;
        const discard = (this.discarding.get(sha256) ?? Promise.resolve())
          .catch(() => {})
          .then(() => modelStore.discardStaged(sha256));
        this.discarding.set(sha256, discard);
        try {
          await discard;
        } finally {
          if (this.discarding.get(sha256) === discard) this.discarding.delete(sha256);
        }
        return;
      }
      case 'hash_staged': {
        const { model, generation, target } = effect;
        try {
          crashPoint('verify');
          const file = await modelStore.artifactFile(model, target);
          const known = this.fetchedDigests.get(`${model}:${generation}`);
          this.fetchedDigests.delete(`${model}:${generation}`);
          const digest = known ?? (await digestFile(file, target.size + 1));
          // Only bytes that are the signed ones are worth inspecting (the machine discards others).
          const refusal =
            digest.sha256 === target.sha256 && digest.size === target.size
              ? await this.deps.inspectModel(file, modelStore.versionDir(model, target.version))
              : null;
          await this.dispatch({
            type: 'hashed',
            model,
            generation,
            size: digest.size,
            sha256: digest.sha256,
            refusal,
          });
        } catch (err) {
          await this.dispatch({ type: 'hash_failed', model, generation, error: toOtaError(err).toJSON() });
        }
        return;
      }
      case 'apply': {
        const { model, generation, target, rollbackTo } = effect;
        try {
          crashPoint('apply-start');
          await modelStore.install(model, target);
          crashPoint('installed');
          await modelStore.setLinks(model, linksAfterSwap(rollbackTo, target.version), 'previous');
          crashPoint('swapped');
          await this.reload(model);
        } catch (err) {
          // Put the old links back before saying so: `current` must point at a complete version.
          await modelStore.setLinks(model, rollbackTo, 'current').catch(() => {});
          const error = new OtaError(
            'E_APPLY',
            `installing ${model}@${target.version} failed: ${(err as Error).message}`,
          );
          await this.dispatch({ type: 'apply_failed', model, generation, error: error.toJSON() });
          return;
        }
        await this.dispatch({ type: 'applied', model, generation });
        return;
      }
      case 'probe': {
        const { model, generation, target } = effect;
        crashPoint('probe-start');
        const manifest = JSON.parse(target.envelope.manifest) as Manifest;
        const result = await this.deps.probe({
          modelFile: modelStore.modelFile(model, target.version),
          manifest,
          defaults: this.deps.config.probe,
          execAllowlist: this.deps.config.execProbeAllowlist,
        });
        crashPoint('probed');
        if (result.ok) {
          this.deps.logger.info({ model, version: target.version, latencyMs: result.latencyMs }, 'probe passed');
          this.deps.onProbeLatency?.(model, target.version, result.latencyMs);
          await this.dispatch({ type: 'probe_passed', model, generation });
        } else {
          await this.dispatch({
            type: 'probe_failed',
            model,
            generation,
            error: { code: result.code, message: result.message },
          });
        }
        return;
      }
      case 'rollback': {
        const { model, generation, rollbackTo } = effect;
        try {
          await modelStore.setLinks(model, rollbackTo, 'current');
          await this.reload(model);
          crashPoint('rollback');
        } catch (err) {
          await this.dispatch({ type: 'rollback_failed', model, generation, error: toOtaError(err).toJSON() });
          return;
        }
        await this.dispatch({ type: 'rolled_back', model, generation });
        return;
      }
      case 'gc': {
        await modelStore.gc(effect.model, effect.keep);
        const active = Object.values(this.state.models)
          .filter((r) => !isTerminal(r.phase) && r.target)
          .map((r) => (r.target as Target).sha256);
        await modelStore.gcStaging(active);
        return;
      }
    }
  }

  /** The download step's first half: what the disk holds, reported raw; the core decides what follows. */
  private async checkDisk(model: string, generation: number, target: Target): Promise<void> {
    const { modelStore, crashPoint } = this.deps;
    try {
      crashPoint('download-start');
      const installed = await modelStore.isInstalled(model, target);
      const stagedBytes = await fs.stat(modelStore.stagedFile(target.sha256)).then(
        (s) => s.size,
        () => 0,
      );
      const freeBytes = await modelStore.freeBytes();
      await this.dispatch({ type: 'disk_checked', model, generation, installed, freeBytes, stagedBytes });
    } catch (err) {
      if (this.stopped) return;
      await this.dispatch({ type: 'download_failed', model, generation, error: toOtaError(err).toJSON() });
    }
  }

  /** The download step's second half: fetch into the staging file, then report the raw outcome. */
  private async fetch(model: string, generation: number, target: Target): Promise<void> {
    const { modelStore, config, crashPoint } = this.deps;
    this.downloads.get(model)?.abort();
    const controller = new AbortController();
    this.downloads.set(model, controller);
    try {
      // Never resume from bytes that are being thrown away.
      await this.discarding.get(target.sha256)?.catch(() => {});
      let lastProgress = 0;
      let crashedMid = false;
      const fetched = await this.deps.download({
        url: `${config.artifactsUrl.replace(/\/+$/, '')}/artifacts/sha256/${target.sha256}`,
        partFile: modelStore.stagedFile(target.sha256),
        expectedSize: target.size,
        deadlineMs: config.download.deadlineMs,
        stallTimeoutMs: config.download.stallTimeoutMs,
        signal: controller.signal,
        onProgress: (bytes, total) => {
          if (!crashedMid && bytes >= total / 2 && bytes < total) {
            crashedMid = true;
            crashPoint('download-mid');
          }
          const now = this.deps.now().getTime();
          if (now - lastProgress >= 1_000) {
            lastProgress = now;
            void this.dispatch({ type: 'progress', model, generation, bytes, total });
          }
        },
      });
      // The download hashed every byte of the part file as it wrote it (resumed bytes included):
      // verifying reuses that digest instead of reading the file a second time. After a restart
      // there is none, and the staged file is hashed again.
      this.fetchedDigests.set(`${model}:${generation}`, { size: fetched.size, sha256: fetched.sha256 });
      crashPoint('downloaded');
      await this.dispatch({ type: 'download_ok', model, generation });
    } catch (err) {
      if (this.stopped) return;
      await this.dispatch({ type: 'download_failed', model, generation, error: toOtaError(err).toJSON() });
    } finally {
      if (this.downloads.get(model) === controller) this.downloads.delete(model);
    }
  }

  /** The configured reload action for a model: an allowlisted absolute path, fixed argv, no shell. */
  private reload(model: string): Promise<void> {
    const action = ownEntry(this.deps.config.reloadActions, model);
    if (!action) return Promise.resolve();
    return new Promise((resolve) => {
      execFile(action.path, action.argv, { timeout: 30_000, env: withoutNotifyEnv(process.env) }, (err) => {
        if (err) this.deps.logger.warn({ model, path: action.path, err: err.message }, 'reload action failed');
        resolve();
      });
    });
  }

  /**
   * On every (re)connect with nothing queued, the current report is sent again: a coordinator
   * that restarted (its embedded broker keeps retained messages in memory only) learns every
   * device's state without waiting for the next transition. Idempotent for the coordinator.
   */
  private resendCurrent(): void {
    if (this.state.outbox.length > 0 || Object.keys(this.state.models).length === 0) return;
    const { config } = this.deps;
    const trust = heldTrust(this.state, this.stepContext());
    const report = buildReport(this.state, config.deviceId, this.deps.now().toISOString(), trust.version);
    this.track(
      this.session
        .publish(this.topics.reported(this.deps.config.deviceId), encodePayload(report), true)
        .catch(() => {}),
    );
  }

  /** Sends queued reports in order, each acknowledged by the broker before it leaves the outbox. */
  private flushOutbox(): void {
    if (this.flushing || this.stopped) return;
    this.flushing = true;
    const run = async () => {
      try {
        while (this.session.connected && this.state.outbox.length > 0) {
          const report = this.state.outbox[0];
          if (!report) break;
          await this.session.publish(this.topics.reported(this.deps.config.deviceId), encodePayload(report), true);
          await this.removeFromOutbox(report);
        }
      } catch (err) {
        this.deps.logger.debug({ err: (err as Error).message }, 'report not sent yet; kept in the outbox');
      } finally {
        this.flushing = false;
      }
      if (this.session.connected && this.state.outbox.length > 0 && !this.stopped) this.flushOutbox();
    };
    this.track(run());
  }

  private removeFromOutbox(report: AgentState['outbox'][number]): Promise<void> {
    const run = async () => {
      const index = this.state.outbox.indexOf(report);
      if (index < 0) return;
      const state = { ...this.state, outbox: this.state.outbox.filter((_, i) => i !== index) };
      await this.deps.stateStore.save(state);
      this.state = state;
    };
    this.queue = this.queue.then(run, run);
    return this.queue;
  }
}
