import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OtaError } from '../shared/errors.js';
import { publicKeyToJson } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import type { AuditEvent, CommandRequest, Metrics, Reported, Status } from '../shared/messages.js';
import { encodePayload, MAX_PAYLOAD_BYTES } from '../shared/payload.js';
import { createTopics, senderReplyTopics } from '../shared/topics.js';
import { readPackageVersion } from '../shared/version.js';
import { attachWebSocket, createBroker, type SessionOwner } from './broker/create-broker.js';
import { OrderedPublisher, type OutgoingPublish } from './broker/ordered-publisher.js';
import type { Principal } from './broker/principal.js';
import { runCommand } from './commands/dispatch.js';
import type { CoordinatorConfig } from './config.js';
import { DesiredPublisher, type DesiredStates, type OutgoingMessage } from './desired/desired-publisher.js';
import { ParallelSigner } from './desired/parallel-signer.js';
import { SeqCatchUp } from './desired/seq-catch-up.js';
import { AnalysisGates } from './experiments/analysis-judge.js';
import { ExperimentService, LOOK_CHECK_EVERY_MS } from './experiments/experiment-service.js';
import { DynsecClient } from './external-broker/dynsec-client.js';
import type { BrokerIdentity } from './external-broker/dynsec-identity.js';
import { DynsecIdentity } from './external-broker/dynsec-identity.js';
import { connectExternalBroker, coordinatorClientId, signsIn } from './external-broker/external-broker.js';
import { socketFlow } from './external-broker/socket-flow.js';
import { bridgeWebSocketToBroker } from './external-broker/websocket-bridge.js';
import { FleetService } from './fleet/fleet-service.js';
import { FleetSummaryPublisher } from './fleet/fleet-summary-publisher.js';
import { deviceEnrolments, FleetTally, tallyAudit } from './fleet/fleet-tally.js';
import { ArtifactStore } from './http/artifact-store.js';
import { loadDashboardAssets } from './http/dashboard-assets.js';
import { createHttpServer } from './http/http-server.js';
import { createMetrics } from './http/metrics.js';
import { AuthFailureAudit } from './identity/auth-failure-audit.js';
import { AuthFailureLimits, type AuthFailureLimitsOptions } from './identity/auth-failure-limits.js';
import { storeAuthenticator } from './identity/authenticate.js';
import { ensureAdminToken, loadOrCreateCoordinatorKey } from './identity/bootstrap.js';
import { readAdminToken, readConfigFile, readSecretFile } from './identity/secret-files.js';
import { PresenceRecorder } from './ingest/presence-recorder.js';
import { ReportRecorder, seedReports } from './ingest/report-recorder.js';
import { routeMessages } from './ingest/route-messages.js';
import { DeviceGroups } from './metrics/device-groups.js';
import { metricsQueries } from './metrics/metrics-queries.js';
import { MetricsRecorder } from './metrics/recorder.js';
import { PlanExecutor } from './plan/commit-plan.js';
import { RolloutService } from './rollout/rollout-service.js';
import { openStore } from './store/sqlite-store.js';

/** Reports and presence are written behind at most this often under load (PacedFlush). */
const WRITE_BEHIND_EVERY_MS = 50;
/** A hand-over of this many messages is a wave whose devices will all answer at once. */
const LARGE_FAN_OUT = 1_000;
/** How long after a large hand-over device publishes stay gated (its devices' answers). */
const ANSWER_STORM_MS = 1_000;
/**
 * Signing worker threads: one per core beyond the first, at most 3 (a 9,000-device wave's
 * signatures take ~0.5 s on one core of the bench machine; BENCHMARKS.md, issue 16).
 */
function signingWorkers(): number {
  return Math.max(0, Math.min(3, os.availableParallelism() - 1));
}
/** Device metrics past retention are removed at start and this often. */
const METRICS_PRUNE_EVERY_MS = 3_600_000;

export interface RunningCoordinator {
  mqttUrl: string;
  httpUrl: string;
  adminTokenFile: string;
  stop(): Promise<void>;
}

/**
 * Wires the coordinator (design section 6): SQLite store, coordinator key and admin token,
 * Aedes broker (TCP and WebSocket at /mqtt), HTTP (artifacts, upload, /healthz, /metrics), the
 * fleet and rollout services, and the routes from MQTT messages to them. At start it republishes
 * every desired state and rollout summary and publishes the fleet summary (Aedes keeps retained
 * messages in memory only), and continues the active rollouts where the database says they are.
 */
export async function startCoordinator(
  config: CoordinatorConfig,
  options: {
    logger: Logger;
    now?: () => Date;
    authFailureLimits?: AuthFailureLimitsOptions;
    /** At most one fleet summary per this many ms (default 1 s); tests use less. */
    fleetSummaryEveryMs?: number;
    /** How often the experiment judge checks for a planned look (default 60 s); tests use less. */
    experimentLookEveryMs?: number;
  },
): Promise<RunningCoordinator> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const store = openStore(path.join(config.dataDir, 'coordinator.db'));
  const closers: (() => Promise<void> | void)[] = [() => store.close()];
  // What /healthz says: ready only once everything a client needs is in place (see below).
  let phase: 'starting' | 'ready' | 'stopping' = 'starting';
  const stopAll = async () => {
    // Once: a second call (a test's teardown after its own stop) finds nothing left to close.
    if (phase === 'stopping') return;
    phase = 'stopping';
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'error while stopping');
      }
    }
  };
  try {
    const key = await loadOrCreateCoordinatorKey(config.dataDir);
    const topics = createTopics(config.topicPrefix);
    const metrics = createMetrics();
    metrics.resetRollouts(store.listRollouts());
    const tls = config.tls
      ? { cert: await fs.readFile(config.tls.certFile), key: await fs.readFile(config.tls.keyFile) }
      : undefined;
    const artifacts = new ArtifactStore(path.join(config.dataDir, 'artifacts', 'sha256'));

    // Set once the broker exists; publishing before that is a bug.
    let publishOne: (m: OutgoingPublish, done: (err?: Error | null) => void) => void = () => {
      throw new Error('publish before the broker started');
    };
    // Through an external broker, one connection keeps the order of each topic's messages that are
    // not retained (MQTT 3.1.1 section 4.6); retained ones wait for the one before (ordered-publisher.ts).
    const publisher = new OrderedPublisher(
      (m, done) => publishOne(m, done),
      logger,
      undefined,
      config.broker ? 'connection' : 'per-topic',
    );
    const nowMs = () => now().getTime();
    // A large hand-over (a wave's desired states) is followed by its devices' answers, all at
    // once: while it goes out and for ANSWER_STORM_MS after, the broker takes device publishes
    // in bounded turns (IngestGate), so that storm cannot take seconds and ~90 MB in one stretch.
    let largeFanOuts = 0;
    let lastFanOutDoneAt = Number.NEGATIVE_INFINITY;
    const publish = (messages: OutgoingMessage[], desiredStates?: DesiredStates) => {
      if (messages.length + (desiredStates?.length ?? 0) < LARGE_FAN_OUT) {
        return publisher.publish(messages, desiredStates);
      }
      largeFanOuts++;
      return publisher.publish(messages, desiredStates).finally(() => {
        largeFanOuts--;
        lastFanOutDoneAt = nowMs();
      });
    };
    const answerStorm = () => largeFanOuts > 0 || nowMs() - lastFanOutDoneAt < ANSWER_STORM_MS;
    // A wave's desired states are signed on this thread and on up to 3 workers at once.
    const signing = new ParallelSigner({ seed: key.seed, workers: signingWorkers(), logger });
    closers.push(() => signing.close());
    const desired = DesiredPublisher.sharing(signing, key, { store, topics, now });
    // The retained fleet summary (ota/v1/fleet), counted as reports, presence, enrolments and
    // removals arrive, from the stored fleet at start (all offline: nobody is connected yet).
    // Devices' reports, written behind; each device's stored report seeded from the same scan of
    // the store, so the retained reports arriving at start are compared without a read each.
    const reports = new ReportRecorder({ store, now, logger, everyMs: WRITE_BEHIND_EVERY_MS });
    const fleetTally = FleetTally.seeded(seedReports(store.eachDevice(), reports));
    // A device's newest models, also while they wait to be written behind; the store's when the
    // recorder has none (it knows every enrolled device, so only for one removed meanwhile).
    const lastModels = (deviceId: string) =>
      reports.lastModels(deviceId) ?? store.getDevice(deviceId)?.lastReport?.models;
    const fleetSummary = new FleetSummaryPublisher({
      tally: fleetTally,
      topics,
      publish,
      now,
      everyMs: options.fleetSummaryEveryMs,
    });
    // Device metrics (docs/metrics.md): summaries in metrics.db, rolled up per fleet, group and
    // device as they arrive; a summary is acknowledged to its device once committed.
    const deviceGroups = new DeviceGroups({
      listGroups: () => store.listGroups(),
      labelsOf: (id) => store.getDevice(id)?.labels ?? null,
    });
    let experiments: ExperimentService | null = null;
    let analysisCohortsOf = null as ((id: string, model: string) => { cohort: string; since: number }[]) | null;
    const deviceMetrics = new MetricsRecorder({
      file: path.join(config.dataDir, 'metrics.db'),
      now,
      logger,
      retentionDays: config.metricsRetentionDays,
      ...(config.metricsRawRetentionDays !== null ? { rawRetentionDays: config.metricsRawRetentionDays } : {}),
      groupsOf: (id) => deviceGroups.groupsOf(id),
      // Set below, once the experiment service exists (no summary arrives before the broker).
      cohortsOf: (id, model) => {
        const inExperiments = experiments?.cohortsOf(id, model) ?? [];
        const inAnalyses = analysisCohortsOf?.(id, model) ?? [];
        return inAnalyses.length === 0 ? inExperiments : [...inExperiments, ...inAnalyses];
      },
    });
    closers.push(() => deviceMetrics.close());
    metrics.observeMetricsStore(() => deviceMetrics.stats());
    const pruneMetrics = () =>
      deviceMetrics.prune().then(
        (r) => {
          if (r.windows + r.minuteRollups + r.deviceHours + r.cohortSeries > 0)
            logger.info(r, 'device metrics past retention removed');
        },
        (err: Error) => logger.error({ err: err.message }, 'device metrics retention failed'),
      );
    void pruneMetrics();
    const pruneTimer = setInterval(() => void pruneMetrics(), METRICS_PRUNE_EVERY_MS);
    pruneTimer.unref();
    closers.push(() => clearInterval(pruneTimer));
    const onAudit = (events: readonly AuditEvent[]) => {
      deviceGroups.onAudit(events);
      // Counted as rows are appended (a COUNT(*) over the table after every commit does not scale).
      metrics.auditRows.inc(events.length);
      // Enrolments AND removals are counted here, from the audit events of the committed plan:
      // each writes its row (device.enrolled, device.removed) in the same transaction as the
      // change, so the tally follows exactly what committed, both in one place, in commit order
      // (an id enrolled again is removed first). credentialsChanged also hears of a removal,
      // but it is about sessions (operators' too) and never of an enrolment.
      if (tallyAudit(fleetTally, events)) fleetSummary.changed();
      // A device enrolled has no report yet: its first is compared with nothing, not read from the store.
      for (const d of deviceEnrolments(events)) if (d.enrolled) reports.enrolled(d.id);
    };
    let brokerIdentity: BrokerIdentity | null = null;
    const identityNow = () => {
      if (!brokerIdentity) throw new OtaError('E_BROKER', 'not connected to the broker yet');
      return brokerIdentity;
    };
    // At start, through an external broker: its clients brought in step with the store.
    let reconcileBroker: ((admin: { name: string; token: string } | null) => Promise<void>) | null = null;
    // Set once the broker and the recorders exist; nothing is removed before (commands come later).
    let credentialsChanged: (who: SessionOwner) => void = () => {};
    let publicMqttUrl = config.publicMqttUrl ?? '';
    let publicHttpUrl = config.publicHttpUrl ?? '';
    // The one executor of write plans (rollouts, channel moves, enrolment; design section 2).
    const executor = new PlanExecutor({ store, desired, topics, publish, onAudit });
    const fleet = new FleetService({
      executor,
      store,
      desired,
      topics,
      publish,
      now,
      releaseThreshold: config.releaseThreshold,
      agentConfigBase: () => ({
        broker: { url: publicMqttUrl },
        // An HTTP origin or CDN when given (docs/brokers.md, "Artifacts from an origin").
        artifactsUrl: config.artifactsUrl ?? publicHttpUrl,
        coordinatorKey: publicKeyToJson(key),
      }),
      onAudit,
      onCredentialsChanged: (who) => credentialsChanged(who),
      // Set once connected to the external broker (no command arrives before).
      ...(config.broker?.identity === 'mosquitto'
        ? {
            brokerIdentity: {
              addDevice: (id, token) => identityNow().addDevice(id, token),
              removeDevice: (id) => identityNow().removeDevice(id),
              addOperator: (name, token) => identityNow().addOperator(name, token),
              removeOperator: (name) => identityNow().removeOperator(name),
            } satisfies BrokerIdentity,
          }
        : {}),
    });
    const rollouts = new RolloutService({
      executor,
      store,
      desired,
      topics,
      publish,
      now,
      onAudit,
      // Every transition publishes a summary: the rollouts gauge and the halts counter follow them.
      onSummary: (s) => metrics.observeRollout(s.id, s.status),
      onError: (err, what) => logger.error({ err: (err as Error).message }, `rollout engine: ${what} failed`),
      // Its newest report, also when it is still waiting to be written behind.
      lastModels,
      // Connected now (kept in memory, written behind to the store).
      isOnline: (deviceId) => presence.isOnline(deviceId),
      // A revoked release is never assigned (docs/security.md): the keys counted now.
      releaseTrust: () => fleet.releaseTrust(),
    });
    // Experiments (docs/experiments.md): A/B arms written like rollouts, judged at planned looks.
    const experimentService = new ExperimentService({
      store,
      executor,
      now,
      cohortSeries: (id) => deviceMetrics.cohortSeries(id),
      metricsVersion: () => deviceMetrics.version(),
      rollouts,
      setChannel: (input, actor, opts) => fleet.setChannel(input, actor, opts),
      lastModels,
      isOnline: (deviceId) => presence.isOnline(deviceId),
      releaseTrust: () => fleet.releaseTrust(),
      onError: (err, what) => logger.error({ err: (err as Error).message }, `experiment judge: ${what} failed`),
    });
    experiments = experimentService;
    analysisCohortsOf = (id, model) => rollouts.analysisCohortsOf(id, model);
    // Analysis gates in rollouts (docs/rollouts.md): measured with the experiments' method.
    const analysisGates = new AnalysisGates({
      pending: () => rollouts.pendingAnalyses(),
      record: (id, wave, m) =>
        rollouts.act(id, {
          type: 'analysis',
          actor: 'coordinator',
          wave,
          measurement: m.k,
          outcome: m.outcome,
          failed: m.failed,
          detail: m.detail,
        }),
      cohortSeries: (cohort) => deviceMetrics.cohortSeries(cohort),
      now,
      onError: (err, what) => logger.error({ err: (err as Error).message }, `analysis judge: ${what} failed`),
    });
    const lookTimer = setInterval(() => {
      experimentService.tick();
      analysisGates.tick();
    }, options.experimentLookEveryMs ?? LOOK_CHECK_EVERY_MS);
    lookTimer.unref();
    closers.push(() => clearInterval(lookTimer));
    const authenticate = storeAuthenticator(store);
    const authLimits = new AuthFailureLimits(options.authFailureLimits);
    const authFailures = new AuthFailureAudit({ store, now, logger, onAudit, limits: authLimits });
    // A device's metrics summary, stored; the embedded broker's PUBACK waits for it.
    const acceptMetrics = (deviceId: string, summary: Metrics) =>
      deviceMetrics.ingest(deviceId, summary).then(
        () => {
          metrics.deviceMetricsSummaries.inc();
          for (const s of summary.series) {
            metrics.deviceObservations.inc({ source: s.source }, s.count);
            metrics.deviceInferenceErrors.inc({ source: s.source }, s.errors);
          }
          metrics.deviceObservationsDropped.inc(summary.dropped?.observations ?? 0);
        },
        (err: unknown) => {
          metrics.deviceMetricsNotStored.inc();
          throw err;
        },
      );
    const broker = config.broker
      ? null
      : await createBroker({
          topics,
          authenticate,
          logger,
          holdDeviceIngest: answerStorm,
          onAuthFailure: (info) => {
            metrics.authFailures.inc({ transport: 'mqtt' });
            const { clientId, username, reason, remoteAddress: address } = info;
            const verdict = authFailures.record({ clientId, username: username ?? '', reason, address });
            if (!verdict.audit) metrics.authFailuresNotAudited.inc();
          },
          refusalDelayMs: (info, heldNow) => {
            const ms = authLimits.refusalDelayMs(info.remoteAddress, nowMs(), heldNow);
            if (ms > 0) metrics.authRefusalsHeld.inc();
            return ms;
          },
          onOversizedPacket: () => metrics.oversizedPackets.inc(),
          acceptMetrics,
          onSlowWatcher: () => metrics.slowWatchersCut.inc(),
        });
    if (broker) closers.push(() => broker.close());
    // The external broker's connection, closed after the last flush's publishes (closers run in reverse).
    let closeExternal: (() => Promise<void>) | null = null;
    closers.push(() => closeExternal?.());
    // No last summary on the way out: retained messages live in the broker's memory only.
    closers.push(() => fleetSummary.stop());
    // On the way out: the reports still queued and the rollout events not yet decided.
    closers.push(() => {
      rollouts.flush();
      reports.flush();
      presence.flush();
      seqCatchUp.flush();
    });
    if (broker) {
      publishOne = (m, done) => {
        broker.publish(m.topic, m.payload, { retain: m.retain, qos: 1 }).then(() => done(), done);
      };
    }

    const commandContext = {
      store,
      lastModels,
      fleet,
      rollouts,
      experiments: experimentService,
      metrics: metricsQueries({
        reader: deviceMetrics,
        now,
        modelDevices: (model) => fleetTally.modelDeviceCount(model),
        resolveTarget: (target) => rollouts.resolveTarget(target),
      }),
      artifactSize: async (sha256: string) => {
        if (!/^[0-9a-f]{64}$/.test(sha256)) return null;
        return fs.stat(artifacts.path(sha256)).then(
          (s) => s.size,
          () => null,
        );
      },
    };

    const presence = new PresenceRecorder({ store, now, logger, everyMs: WRITE_BEHIND_EVERY_MS });
    // A device ahead of its stored desired seq (a restored backup) is caught up and sent its state again.
    const seqCatchUp = new SeqCatchUp({ store, executor, now, logger, everyMs: WRITE_BEHIND_EVERY_MS });
    // A device removed or an operator removed or given another role: its sessions end now (and
    // whatever they still had in flight is dropped, Broker.cutSessions), and nothing cached of a
    // removed device outlives it, neither here nor as its retained messages (an empty retained
    // message deletes one, MQTT 3.1.1 section 3.3.1.3): a device enrolled again with that id
    // starts from nothing of the old one's.
    credentialsChanged = (who) => {
      // Through an external broker, removing the client there ended its sessions (FleetService),
      // and an operator's role is read from the store at each command.
      broker?.cutSessions(who);
      if (who.kind !== 'device') return;
      reports.forget(who.deviceId);
      presence.forget(who.deviceId);
      seqCatchUp.forget(who.deviceId);
      metrics.connectedDevices.set(presence.connected);
      // Its session ended without a disconnect event that counts (the cut connection speaks for
      // nobody): a rollout that still lists it sees it offline.
      rollouts.onPresence(who.deviceId, false);
      const empty = Buffer.alloc(0);
      void publish(
        [topics.desired, topics.reported, topics.status].map((topic) => ({
          topic: topic(who.deviceId),
          payload: empty,
          retain: true,
        })),
      );
    };
    const onReport = (deviceId: string, report: Reported) => {
      if (!reports.record(deviceId, report)) return;
      metrics.reports.inc();
      if (fleetTally.report(deviceId, report)) fleetSummary.changed();
      seqCatchUp.onReport(deviceId, report);
      rollouts.onReport(deviceId, report);
    };
    const onPresence = (deviceId: string, online: boolean, status?: Status) => {
      presence.record(deviceId, online, status);
      if (fleetTally.presence(deviceId, online)) fleetSummary.changed();
      // The rollout engine hears about it right away (batched there).
      rollouts.onPresence(deviceId, online);
      metrics.connectedDevices.set(presence.connected);
    };
    const onCommand = (op: string, request: CommandRequest, principal: Principal, clientId: string | null) => {
      // A command reads what the devices reported so far, written behind until now.
      reports.flushIfScheduled();
      presence.flushIfScheduled();
      // Through an external broker the reply cannot be kept to one connection: its ACL keeps
      // the operator's reply topics to the operator (docs/security.md).
      const sender = clientId === null ? undefined : { replyTopics: senderReplyTopics(topics, clientId) };
      return runCommand(op, request, principal, commandContext, logger, sender);
    };
    if (broker) {
      routeMessages(
        broker,
        topics,
        {
          report: onReport,
          presence: onPresence,
          command: onCommand,
          reply: (topic, reply, onlyTo) =>
            broker.publish(topic, encodePayload(reply), { retain: false, qos: 1, onlyTo }),
        },
        logger,
      );
    }

    const http = createHttpServer({
      artifacts,
      metrics,
      logger,
      authenticate: (username: string, token: string) => authenticate(username, token),
      publishRelease: async (input) => {
        const release = fleet.publishRelease(
          { envelope: input.envelope, sha256: input.sha256, size: input.size, channel: input.channel, yes: input.yes },
          input.actor,
        );
        const { envelope: _e, ...rest } = release;
        return rest;
      },
      checkRelease: (claim) => fleet.checkRelease(claim, claim.actor),
      onAuthFailure: (info) => {
        metrics.authFailures.inc({ transport: 'http' });
        // HTTP has no client id: the subject names the transport and the address. The reason
        // keeps its own rate-limit window apart from MQTT's (AuthFailureAudit groups by it).
        const verdict = authFailures.record({
          clientId: `http:${info.ip}`,
          username: info.username ?? '',
          reason: `http: ${info.reason}`,
          address: info.ip,
        });
        if (!verdict.audit) metrics.authFailuresNotAudited.inc();
      },
      health: () => (phase === 'ready' ? { ok: true } : { ok: false, reason: phase }),
      maxUploadBytes: config.maxArtifactBytes,
      tls,
      dashboard: await loadDashboardAssets({ topicPrefix: config.topicPrefix }),
    });
    closers.push(() => http.close());
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    // Retained state again: Aedes keeps it in memory, so a restart starts empty, and an external
    // broker that restarted without persistence lost it. Once a trust document exists every
    // device has a desired state (it carries the trust chain).
    const republishAll = async () => {
      const republish = store.transaction(() =>
        desired.prepare(store.latestTrustDocument() ? store.deviceIds() : store.devicesWithDesired()),
      );
      await publish(rollouts.summaries(), republish);
      // And the fleet summary, changed or not: a page that subscribes gets one even when nothing moves.
      await fleetSummary.publishNow();
    };
    let mqttUrl: string;
    let web: { port: number } | undefined;
    if (broker) {
      attachWebSocket(http.server, broker, '/mqtt');
      const mqtt = await broker.listen(config.mqttPort, config.host, tls);
      mqttUrl = `${tls ? 'mqtts' : 'mqtt'}://${host}:${mqtt.port}`;
      // Nobody is connected to a broker that just started. (Rollout rows keep their last known
      // presence: marking them offline here would let waves complete before devices reconnect.)
      store.markAllOffline();
    } else {
      const external = config.broker as NonNullable<CoordinatorConfig['broker']>;
      mqttUrl = external.url;
      // Listening and the public URLs set before the first message: commands waiting in the
      // coordinator's session arrive at once (a device.add writes these URLs into its config).
      web = await http.listen(config.httpPort, config.host);
      publicMqttUrl = config.publicMqttUrl ?? mqttUrl;
      publicHttpUrl = config.publicHttpUrl ?? `${tls ? 'https' : 'http'}://${host}:${web.port}`;
      // Presence is what the broker's retained statuses say (delivered at the subscription below).
      store.markAllOffline();
      const brokerCa = external.caFile ? await readConfigFile(external.caFile, '--broker-ca') : undefined;
      const password = await readSecretFile(external.passwordFile, '--broker-password-file');
      let dynsec: DynsecIdentity | null = null;
      const client = await connectExternalBroker({
        url: external.url,
        username: external.username,
        password,
        ca: brokerCa,
        clientId: coordinatorClientId(external.username, password),
        topics,
        logger,
        maxPayloadBytes: MAX_PAYLOAD_BYTES,
        isDevice: (id) => fleetTally.has(id),
        operator: (name) => {
          const o = store.getOperator(name);
          return o ? { kind: 'operator', name: o.name, role: o.role } : null;
        },
        routes: {
          report: onReport,
          presence: onPresence,
          metrics: acceptMetrics,
          command: (op, request, principal) => onCommand(op, request, principal, null),
        },
        // Whatever the broker kept, it may be older than what was published since (a crash
        // restarts it from its last save): the retained state is published again.
        onReconnect: () => {
          republishAll().catch((err: Error) => logger.error({ err: err.message }, 'republish failed'));
        },
        // Before the first message: what waited in the session (reports, statuses) may cause
        // publishes at once.
        onClient: (mqttClient) => {
          // mqtt.js calls back once: at the PUBACK, or with the error that ends the message.
          publishOne = (m, done) => {
            mqttClient.publish(m.topic, m.payload, { retain: m.retain, qos: 1 }, (err) => done(err));
          };
          // Messages wait in the publisher, not in the connection's write buffer (socket-flow.ts).
          publisher.useFlow(socketFlow(() => mqttClient.stream));
          dynsec = new DynsecIdentity(new DynsecClient(mqttClient), topics);
          if (external.identity === 'mosquitto') brokerIdentity = dynsec;
        },
        onRefused: () => metrics.externalMessagesRefused.inc(),
        // No holdDeviceIngest here, unlike the embedded broker: through Mosquitto the coordinator
        // is idle while a wave is delivered (the broker and the devices are busy), and holding the
        // answers afterwards only split its work into 2.5x as many rollout commits (+10% CPU, no
        // faster wave; BENCHMARKS.md, issue 16, 2026-12-06 evening).
      });
      closeExternal = () => {
        // What the flow held back goes to mqtt.js now, up to the window: its end() waits for what
        // it was given. The rest is dropped in one step: a closing client fails each message
        // given to it after end(), and signing a wave's remaining desired states for that is
        // wasted. Desired states are published again at the next start (republishAll); audit
        // events are in the store (`otactl audit`).
        publisher.useFlow(null);
        publisher.abandon('the coordinator is stopping');
        return client.close();
      };
      const bridge = bridgeWebSocketToBroker(http.server, { url: external.url, ca: brokerCa }, logger);
      closers.push(() => bridge.close());
      // With --broker-identity none the broker's clients are its operator's to keep.
      if (external.identity === 'mosquitto')
        reconcileBroker = async (admin) => {
          const result = await (dynsec as DynsecIdentity).reconcile({
            devices: new Set(store.deviceIds()),
            operators: new Set(store.listOperators().map((o) => o.name)),
            ...(admin ? { ensureOperator: admin } : {}),
            signsIn: (name, token) => signsIn(external.url, name, token, brokerCa),
          });
          if (result.removed.length + result.created.length > 0) {
            logger.info(
              { removed: result.removed, created: result.created },
              'broker clients brought in step with the store',
            );
          }
          if (result.missingDevices.length + result.missingOperators.length > 0) {
            logger.warn(
              {
                devices: result.missingDevices.slice(0, 20),
                deviceCount: result.missingDevices.length,
                operators: result.missingOperators,
              },
              'these devices and operators have no client in the broker (enrolled before it was used, their tokens are not kept): remove and add them again (docs/brokers.md)',
            );
          }
        };
    }
    web ??= await http.listen(config.httpPort, config.host);
    const httpUrl = `${tls ? 'https' : 'http'}://${host}:${web.port}`;
    publicMqttUrl = config.publicMqttUrl ?? mqttUrl;
    publicHttpUrl = config.publicHttpUrl ?? httpUrl;
    await republishAll();

    // Devices that were online in an active rollout before this start and have not come back
    // within the grace are offline (they must not hold a wave open forever).
    const sweep = setTimeout(() => {
      try {
        const swept = rollouts.sweepPresence((id) => presence.isOnline(id));
        if (swept > 0) logger.info({ devices: swept }, 'devices that did not reconnect after the start marked offline');
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'presence sweep failed');
      }
    }, config.reconnectGraceMs ?? 90_000);
    sweep.unref();
    closers.push(() => clearTimeout(sweep));

    const admin = await ensureAdminToken(
      config.dataDir,
      store,
      { mqttUrl: publicMqttUrl, httpUrl: publicHttpUrl },
      now().toISOString(),
    );
    if (admin.warning) logger.warn(admin.warning);
    if (reconcileBroker) {
      const reconcile = reconcileBroker;
      // In turn with enrolments (a client made but not yet committed is not a leftover).
      await fleet.inIdentityTurn(async () => reconcile(await readAdminToken(admin.file, store)));
    }
    // Counted once here (the first start's bootstrap row included), then followed through onAudit.
    metrics.auditRows.set(store.auditCount());
    // Ready only now: the admin token file is in place (written and renamed), both servers
    // listen, and every retained message is republished. /healthz said 503 until here, so a
    // script that waits for it can run otactl at once.
    phase = 'ready';
    logger.info(
      {
        mqtt: mqttUrl,
        http: httpUrl,
        websocket: `${httpUrl.replace(/^http/, 'ws')}/mqtt`,
        dataDir: config.dataDir,
        adminTokenFile: admin.file,
        version: readPackageVersion(),
        devices: store.deviceCount(),
        activeRollouts: store.listRollouts({ active: true }).length,
      },
      `ota-coordinator ready: mqtt ${mqttUrl}, http ${httpUrl}`,
    );
    return { mqttUrl, httpUrl, adminTokenFile: admin.file, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
