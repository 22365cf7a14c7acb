import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isOtaError } from '../shared/errors.js';
import { publicKeyToJson } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { CommandRequestSchema, type Reported, ReportedSchema, StatusSchema } from '../shared/messages.js';
import { decodePayload, encodePayload } from '../shared/payload.js';
import { signerFor } from '../shared/signatures.js';
import { createTopics } from '../shared/topics.js';
import { readPackageVersion } from '../shared/version.js';
import { attachWebSocket, createBroker } from './broker/create-broker.js';
import { OrderedPublisher } from './broker/ordered-publisher.js';
import { runCommand } from './commands/dispatch.js';
import type { CoordinatorConfig } from './config.js';
import { DesiredPublisher, type OutgoingMessage } from './desired/desired-publisher.js';
import { FleetService } from './fleet/fleet-service.js';
import { ArtifactStore } from './http/artifact-store.js';
import { createHttpServer } from './http/http-server.js';
import { createMetrics } from './http/metrics.js';
import { AuthFailureAudit } from './identity/auth-failure-audit.js';
import { storeAuthenticator } from './identity/authenticate.js';
import { ensureAdminToken, loadOrCreateCoordinatorKey } from './identity/bootstrap.js';
import { PacedFlush } from './paced-flush.js';
import { RolloutService } from './rollout/rollout-service.js';
import type { HistoryRecord } from './store/records.js';
import { openStore } from './store/sqlite-store.js';
import { WRITE_BEHIND } from './store/store.js';

/** Reports and presence are written behind at most this often under load (PacedFlush). */
const WRITE_BEHIND_EVERY_MS = 50;
/** A hand-over of this many messages is a wave whose devices will all answer at once. */
const LARGE_FAN_OUT = 1_000;
/** How long after a large hand-over device publishes stay gated (its devices' answers). */
const ANSWER_STORM_MS = 1_000;

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
 * every desired state and rollout summary (Aedes keeps retained messages in memory only) and
 * continues the active rollouts where the database says they are.
 */
export async function startCoordinator(
  config: CoordinatorConfig,
  options: { logger: Logger; now?: () => Date },
): Promise<RunningCoordinator> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const store = openStore(path.join(config.dataDir, 'coordinator.db'));
  const closers: (() => Promise<void> | void)[] = [() => store.close()];
  const stopAll = async () => {
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
    const tls = config.tls
      ? { cert: await fs.readFile(config.tls.certFile), key: await fs.readFile(config.tls.keyFile) }
      : undefined;
    const artifacts = new ArtifactStore(path.join(config.dataDir, 'artifacts', 'sha256'));

    // Set once the broker exists; publishing before that is a bug.
    let publishOne: (m: OutgoingMessage) => Promise<void> = async () => {
      throw new Error('publish before the broker started');
    };
    const publisher = new OrderedPublisher((m) => publishOne(m), logger);
    const nowMs = () => now().getTime();
    // A large hand-over (a wave's desired states) is followed by its devices' answers, all at
    // once: while it goes out and for ANSWER_STORM_MS after, the broker takes device publishes
    // in bounded turns (IngestGate), so that storm cannot take seconds and ~90 MB in one stretch.
    let largeFanOuts = 0;
    let lastFanOutDoneAt = Number.NEGATIVE_INFINITY;
    const publish = (messages: OutgoingMessage[]) => {
      if (messages.length < LARGE_FAN_OUT) return publisher.publish(messages);
      largeFanOuts++;
      return publisher.publish(messages).finally(() => {
        largeFanOuts--;
        lastFanOutDoneAt = nowMs();
      });
    };
    const answerStorm = () => largeFanOuts > 0 || nowMs() - lastFanOutDoneAt < ANSWER_STORM_MS;
    const desired = new DesiredPublisher({ store, topics, signer: signerFor(key, { fast: true }), now });
    // Counted as rows are appended (a COUNT(*) over the table after every commit does not scale).
    const onAudit = (events: readonly unknown[]) => metrics.auditRows.inc(events.length);
    let publicMqttUrl = config.publicMqttUrl ?? '';
    let publicHttpUrl = config.publicHttpUrl ?? '';
    const fleet = new FleetService({
      store,
      desired,
      topics,
      publish,
      now,
      releaseThreshold: config.releaseThreshold,
      agentConfigBase: () => ({
        broker: { url: publicMqttUrl },
        artifactsUrl: publicHttpUrl,
        coordinatorKey: publicKeyToJson(key),
      }),
      onAudit,
    });
    const rollouts = new RolloutService({
      store,
      desired,
      topics,
      publish,
      now,
      onAudit,
      onSummary: (s) => {
        if (s.status === 'halted') metrics.rolloutHalts.inc();
      },
      onError: (err, what) => logger.error({ err: (err as Error).message }, `rollout engine: ${what} failed`),
    });
    const authenticate = storeAuthenticator(store);
    const authFailures = new AuthFailureAudit({ store, now, logger });
    const broker = await createBroker({
      topics,
      authenticate,
      logger,
      holdDeviceIngest: answerStorm,
      onAuthFailure: (info) => {
        metrics.authFailures.inc();
        authFailures.record({ clientId: info.clientId, username: info.username ?? '', reason: info.reason });
      },
    });
    closers.push(() => broker.close());
    // On the way out: the reports still queued and the rollout events not yet decided.
    closers.push(() => {
      rollouts.flush();
      reportWriter.run();
      presenceWriter.run();
    });
    publishOne = (m) => broker.publish(m.topic, m.payload, { retain: m.retain, qos: 1 });

    const commandContext = {
      store,
      fleet,
      rollouts,
      artifactSize: async (sha256: string) => {
        if (!/^[0-9a-f]{64}$/.test(sha256)) return null;
        return fs.stat(artifacts.path(sha256)).then(
          (s) => s.size,
          () => null,
        );
      },
    };

    // Reports are recorded write-behind: the device's last report and its history rows go to
    // SQLite in one transaction per turn of the event loop (thousands of reports per second
    // would otherwise be thousands of transactions), without an fsync of its own (WRITE_BEHIND):
    // a kill -9 loses none of them, a power loss at most those since the last durable commit.
    // Rollout decisions do not wait for it: they have their own durable transaction. A crash
    // loses at most the history of the last few milliseconds; agents send their current report
    // again when they reconnect.
    const lastReports = new Map<string, Reported>();
    const pendingReports = new Map<string, Reported>();
    let pendingHistory: HistoryRecord[] = [];
    const recordReports = () => {
      if (pendingReports.size === 0 && pendingHistory.length === 0) return;
      const reports = [...pendingReports];
      const history = pendingHistory;
      pendingReports.clear();
      pendingHistory = [];
      const ts = now().toISOString();
      try {
        store.transaction(() => {
          const gone = new Set<string>();
          for (const [deviceId, report] of reports) {
            try {
              store.setDeviceReport(deviceId, report, ts);
            } catch {
              gone.add(deviceId); // removed while connected: nothing to record
            }
          }
          const rows = gone.size > 0 ? history.filter((h) => !gone.has(h.deviceId)) : history;
          if (rows.length > 0) store.appendHistory(rows);
        }, WRITE_BEHIND);
      } catch (err) {
        logger.error({ err: (err as Error).message, reports: reports.length }, 'recording reports failed');
      }
    };
    // At most every WRITE_BEHIND_EVERY_MS under load (group commit, PacedFlush); on the next turn when quiet.
    const reportWriter = new PacedFlush(recordReports, WRITE_BEHIND_EVERY_MS, nowMs);
    const onReported = (deviceId: string, report: Reported) => {
      let before = lastReports.get(deviceId);
      if (!before && !lastReports.has(deviceId)) {
        const device = store.getDevice(deviceId);
        if (!device) return;
        before = device.lastReport ?? undefined;
      }
      const ts = now().toISOString();
      for (const [model, m] of Object.entries(report.models)) {
        const b = before?.models[model];
        if (b && b.state === m.state && b.version === m.version && b.updatedAt === m.updatedAt) continue;
        pendingHistory.push({
          deviceId,
          model,
          state: m.state,
          version: m.version,
          rolloutId: m.rolloutId,
          error: m.error,
          ts,
        });
      }
      lastReports.set(deviceId, report);
      pendingReports.set(deviceId, report);
      reportWriter.schedule();
      metrics.reports.inc();
      rollouts.onReport(deviceId, report);
    };
    // Counted here, not by scanning the devices table on every connect (10,000 devices connect at once).
    const onlineDevices = new Set<string>();
    // Presence is written behind too, one transaction per turn (10,000 devices connect at once);
    // the rollout engine hears about it right away (batched there).
    type Presence = { online: boolean; facts?: { facts: never; agentVersion: string | null } };
    const pendingPresence = new Map<string, Presence>();
    const recordPresence = () => {
      if (pendingPresence.size === 0) return;
      const batch = [...pendingPresence];
      pendingPresence.clear();
      const ts = now().toISOString();
      try {
        store.transaction(() => {
          for (const [deviceId, p] of batch) {
            try {
              store.setDevicePresence(deviceId, p.online, ts, p.facts);
            } catch {
              // removed meanwhile
            }
          }
        }, WRITE_BEHIND);
      } catch (err) {
        logger.error({ err: (err as Error).message, devices: batch.length }, 'recording presence failed');
      }
    };
    const presenceWriter = new PacedFlush(recordPresence, WRITE_BEHIND_EVERY_MS, nowMs);
    const onPresence = (deviceId: string, online: boolean, status?: { facts?: unknown; agentVersion?: string }) => {
      const previous = pendingPresence.get(deviceId);
      const facts = status?.facts
        ? { facts: status.facts as never, agentVersion: status.agentVersion ?? null }
        : previous?.facts;
      pendingPresence.set(deviceId, facts ? { online, facts } : { online });
      presenceWriter.schedule();
      rollouts.onPresence(deviceId, online);
      if (online) onlineDevices.add(deviceId);
      else onlineDevices.delete(deviceId);
      metrics.connectedDevices.set(onlineDevices.size);
    };

    broker.aedes.on('publish', (packet, client) => {
      if (!client) return; // our own publishes
      const principal = broker.principalOf(client.id);
      if (!principal) return;
      void (async () => {
        try {
          // Decoded once, by the broker's payload check; decoded here only when it did not (a will).
          const decoded = broker.decoded(packet.payload);
          if (decoded?.kind === 'reported' && principal.kind === 'device') {
            onReported(decoded.deviceId, decoded.value);
            return;
          }
          const parsed = topics.parse(packet.topic);
          if (parsed.kind === 'reported' && principal.kind === 'device') {
            onReported(parsed.deviceId, decodePayload(ReportedSchema, packet.payload as Buffer, packet.topic));
          } else if (parsed.kind === 'status' && principal.kind === 'device') {
            const status =
              decoded?.kind === 'status'
                ? decoded.value
                : decodePayload(StatusSchema, packet.payload as Buffer, packet.topic);
            onPresence(parsed.deviceId, status.online, status);
          } else if (parsed.kind === 'cmd') {
            const request =
              decoded?.kind === 'cmd'
                ? decoded.value
                : decodePayload(CommandRequestSchema, packet.payload as Buffer, packet.topic);
            // A command reads what the devices reported so far, written behind until now.
            reportWriter.runIfScheduled();
            presenceWriter.runIfScheduled();
            const reply = await runCommand(parsed.op, request, principal, commandContext, logger);
            await publishOne({ topic: request.replyTo, payload: encodePayload(reply), retain: false });
          }
        } catch (err) {
          // The broker validated the payload already; anything here is logged, never fatal.
          const level = isOtaError(err) ? 'warn' : 'error';
          logger[level]({ topic: packet.topic, err: (err as Error).message }, 'message not processed');
        }
      })();
    });
    broker.aedes.on('clientDisconnect', (client) => {
      const principal = broker.principalOf(client.id);
      if (principal?.kind === 'device') {
        try {
          onPresence(principal.deviceId, false);
        } catch (err) {
          logger.error({ err: (err as Error).message }, 'presence update failed');
        }
      }
    });

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
      health: () => ({ ok: true, details: { devices: store.listDevices().length } }),
      maxUploadBytes: config.maxArtifactBytes,
      tls,
    });
    closers.push(() => http.close());
    attachWebSocket(http.server, broker, '/mqtt');

    const mqtt = await broker.listen(config.mqttPort, config.host, tls);
    const web = await http.listen(config.httpPort, config.host);
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    const mqttUrl = `${tls ? 'mqtts' : 'mqtt'}://${host}:${mqtt.port}`;
    const httpUrl = `${tls ? 'https' : 'http'}://${host}:${web.port}`;
    publicMqttUrl = config.publicMqttUrl ?? mqttUrl;
    publicHttpUrl = config.publicHttpUrl ?? httpUrl;

    // Nobody is connected to a broker that just started. (Rollout rows keep their last known
    // presence: marking them offline here would let waves complete before devices reconnect.)
    store.markAllOffline();
    // Retained state again: Aedes keeps it in memory, so a restart starts empty.
    const republish = store.transaction(() => desired.prepare(store.devicesWithDesired()));
    await publish([...republish, ...rollouts.summaries()]);
    metrics.auditRows.set(store.auditCount());

    const admin = await ensureAdminToken(
      config.dataDir,
      store,
      { mqttUrl: publicMqttUrl, httpUrl: publicHttpUrl },
      now().toISOString(),
    );
    if (admin.warning) logger.warn(admin.warning);
    logger.info(
      {
        mqtt: mqttUrl,
        http: httpUrl,
        websocket: `${httpUrl.replace(/^http/, 'ws')}/mqtt`,
        dataDir: config.dataDir,
        adminTokenFile: admin.file,
        version: readPackageVersion(),
        devices: store.listDevices().length,
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
