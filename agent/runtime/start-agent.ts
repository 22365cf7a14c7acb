import { readFile } from 'node:fs/promises';
import type { Logger } from '../../shared/logger.js';
import { createNotifier } from '../../shared/systemd-notify.js';
import { readPackageVersion } from '../../shared/version.js';
import type { AgentConfig } from '../config.js';
import { downloadArtifact } from '../download/http-download.js';
import { youngGenerationGc } from '../download/scavenge.js';
import { cachedDeviceFacts } from '../facts.js';
import { ModelStore } from '../install/model-store.js';
import { AgentMetrics } from '../metrics/agent-metrics.js';
import { inspectModel } from '../probe/inspect-model.js';
import { runProbe } from '../probe/run-probe.js';
import { StateStore } from '../state/state-store.js';
import { TrustStore } from '../state/trust-store.js';
import { AgentRuntime, type CrashPoint } from './agent-runtime.js';

/** How long an offline device waits for the broker before telling systemd it has started anyway. */
const READY_WITHOUT_BROKER_MS = 30_000;

export interface RunningAgent {
  runtime: AgentRuntime;
  stop(): Promise<void>;
}

/**
 * Wires the agent together (the composition root: no module-level singletons) and ties it to
 * systemd: READY=1 after the first broker connection (or after READY_WITHOUT_BROKER_MS, so an
 * offline device still starts), WATCHDOG=1 only while the event queue is live.
 */
export async function startAgent(
  config: AgentConfig,
  options: { logger: Logger; env: NodeJS.ProcessEnv },
): Promise<RunningAgent> {
  const { logger, env } = options;
  // Artifacts come from the coordinator's HTTP side, which serves the same certificate as its
  // MQTT side: the broker's CA is the one to trust for downloads too (a private CA otherwise
  // made every HTTPS download fail, docs/agent.md). Read once: a CA file changes with a restart.
  const ca = config.broker.caFile ? await readFile(config.broker.caFile) : undefined;
  // Device metrics (docs/metrics.md): set once the runtime exists (it answers which versions an
  // application may run, and publishes); the probe's latency goes to it from the start.
  let metrics: AgentMetrics | null = config.metrics.enabled
    ? new AgentMetrics({
        config: config.metrics,
        stateDir: config.stateDir,
        logger,
        now: () => new Date(),
        knownVersions: (model) => runtime.knownVersions(model),
        publish: (payload) => runtime.publishMetrics(payload),
        isConnected: () => runtime.connected,
      })
    : null;
  const runtime: AgentRuntime = new AgentRuntime({
    config,
    agentVersion: readPackageVersion(),
    logger,
    now: () => new Date(),
    random: Math.random,
    stateStore: new StateStore(config.stateDir),
    trustStore: new TrustStore(config.stateDir),
    modelStore: new ModelStore(config.stateDir),
    // A scavenger per download: it lives in its own V8 context (~4 MB), collected after the download.
    download: (req) => {
      const scavenge = youngGenerationGc();
      return downloadArtifact({
        ...req,
        ...(ca && req.ca === undefined ? { ca } : {}),
        ...(scavenge ? { scavenge } : {}),
      });
    },
    probe: runProbe,
    inspectModel: (file, dir) => inspectModel(file, dir),
    facts: cachedDeviceFacts(config.stateDir),
    crashPoint: crashPointHook(env, logger),
    onProbeLatency: (model, version, latencyMs) => metrics?.recordProbe(model, version, latencyMs),
  });
  const notifier = createNotifier(env, {
    onError: (err) => logger.warn({ err: err.message }, 'systemd notification failed'),
  });
  logger.info(
    { deviceId: config.deviceId, broker: config.broker.url, stateDir: config.stateDir, config: config.source },
    'ota-agent starting',
  );
  await runtime.start();
  if (metrics) {
    const started = metrics;
    try {
      await started.start();
      runtime.onConnected(() => started.onConnected());
    } catch (err) {
      metrics = null;
      // Model updates go on without it: a metrics socket that cannot be created (a missing
      // directory, another agent listening) must not stop the device from being managed.
      logger.error({ err: (err as Error).message }, 'device metrics are off: the metrics socket could not be set up');
    }
  }

  let readyTimer: NodeJS.Timeout | null = null;
  const ready = Promise.race([
    runtime.onceConnected().then(() => 'connected to the broker'),
    new Promise<string>((resolve) => {
      readyTimer = setTimeout(() => resolve('broker not reachable yet; working offline'), READY_WITHOUT_BROKER_MS);
    }),
  ]).then((why) => {
    if (readyTimer) clearTimeout(readyTimer);
    logger.info({ why }, 'ready');
    return notifier.ready(why);
  });

  let watchdog: NodeJS.Timeout | null = null;
  if (notifier.watchdogIntervalMs) {
    watchdog = setInterval(() => {
      // A real liveness check: the event queue is moving. A wedged agent stops pinging and
      // systemd restarts it (WatchdogSec=); the persisted state lets it resume.
      if (runtime.isLive()) void notifier.watchdog();
      else logger.error('event queue stuck; withholding the watchdog ping');
    }, notifier.watchdogIntervalMs);
  }

  return {
    runtime,
    async stop() {
      if (readyTimer) clearTimeout(readyTimer);
      if (watchdog) clearInterval(watchdog);
      await notifier.stopping();
      // The open window goes to the outbox first (sent after the next start).
      await metrics?.stop();
      await runtime.stop();
      void ready;
    },
  };
}

/**
 * Test-only crash injection (design: kill -9 at every step). Active only with
 * OTA_AGENT_TEST_HOOKS=1 and OTA_AGENT_TEST_CRASH_AT=<point>; the agent SIGKILLs itself there.
 */
function crashPointHook(env: NodeJS.ProcessEnv, logger: Logger): (point: CrashPoint) => void {
  const target = env.OTA_AGENT_TEST_HOOKS === '1' ? env.OTA_AGENT_TEST_CRASH_AT : undefined;
  if (!target) return () => {};
  return (point) => {
    if (point !== target) return;
    logger.warn({ point }, 'test hook: SIGKILL');
    process.kill(process.pid, 'SIGKILL');
  };
}
