import { idRecord } from '../../shared/id-record.js';
import type { ModelState, Reported, Status } from '../../shared/messages.js';
import { isOutcome } from '../../shared/states.js';
import { createTopics } from '../../shared/topics.js';
import { mulberry32, seedOf } from '../mulberry32.js';
import type { RolloutTrace, SimCounters, SimCredentials, SimOptions } from './ipc.js';
import { ConnackRefused, ConnectionLost, LeanMqttClient, tcpEndpoint } from './lean-mqtt-client.js';
import { simulatedSeries, versionDistribution } from './metric-distributions.js';

/**
 * One simulated device: a real MQTT 3.1.1 connection with the device's own credentials (one
 * LeanMqttClient: lean-mqtt-client.ts says why not mqtt.js) that follows the agent's protocol
 * (design section 3, agent/mqtt/session.ts, agent/core/machine.ts):
 *
 * - client id = username = device id, persistent session (clean=false), keepalive 30 s, and a
 *   retained `status` will {online:false}; on every connect it subscribes to its own `desired`
 *   (QoS 1), publishes a retained `status` {online:true, facts} and re-sends its current report;
 * - a `desired` message is parsed (not verified: no signature check, the benchmark measures the
 *   coordinator): the signed text gives `seq` and per model the envelope and rollout id, the
 *   envelope's manifest text the version and size. A seq at or below the last accepted one is a
 *   replay and ignored; the same release again is nothing new (the agent's rules);
 * - an assignment walks downloading -> verifying -> applying -> probing -> healthy, or ->
 *   rolled_back with E_PROBE_FAILED when the fail policy says so, one small delay per step,
 *   without downloading or probing anything;
 * - reports are full snapshots (ReportedSchema) with the acknowledged seq, retained, QoS 1, sent
 *   in order from an outbox, each acknowledged by the broker before the next (like the agent).
 */

const topics = createTopics();

interface ModelRecord {
  state: ModelState;
  version: string | null;
  sha256: string | null;
  current: string | null;
  previous: string | null;
  rolloutId: string | null;
  attempt: number;
  error: { code: string; message: string } | null;
  progress: { bytes: number; total: number } | null;
  updatedAt: string;
  generation: number;
}

interface ParsedDesired {
  deviceId: string;
  seq: number;
  models: Record<string, { version: string; sha256: string; size: number; rolloutId: string | null }>;
}

/** Parses a desired message the way the agent reads it (without verifying signatures). */
export function parseDesired(payload: Buffer): ParsedDesired {
  const message = JSON.parse(payload.toString('utf8')) as { desired?: unknown; signatures?: unknown };
  if (typeof message.desired !== 'string' || !Array.isArray(message.signatures)) {
    throw new Error('not a desired-state message');
  }
  const state = JSON.parse(message.desired) as {
    deviceId?: unknown;
    seq?: unknown;
    models?: Record<string, { envelope?: { manifest?: unknown }; rolloutId?: unknown }>;
  };
  if (typeof state.deviceId !== 'string' || typeof state.seq !== 'number' || typeof state.models !== 'object') {
    throw new Error('desired state without deviceId, seq or models');
  }
  const models: ParsedDesired['models'] = idRecord(); // a model may be named `constructor`
  for (const [name, entry] of Object.entries(state.models ?? {})) {
    if (typeof entry?.envelope?.manifest !== 'string') throw new Error(`model ${name} has no envelope manifest`);
    const manifest = JSON.parse(entry.envelope.manifest) as { version?: unknown; sha256?: unknown; size?: unknown };
    if (typeof manifest.version !== 'string' || typeof manifest.sha256 !== 'string') {
      throw new Error(`model ${name}: manifest without version or sha256`);
    }
    models[name] = {
      version: manifest.version,
      sha256: manifest.sha256,
      size: typeof manifest.size === 'number' ? manifest.size : 0,
      rolloutId: typeof entry.rolloutId === 'string' ? entry.rolloutId : null,
    };
  }
  return { deviceId: state.deviceId, seq: state.seq, models };
}

const FACTS = {
  arch: process.arch,
  cpuCores: 4,
  memoryMB: 4096,
  freeDiskMB: 32_000,
  os: 'fleet-sim',
  kernel: 'simulated',
  accelerators: [],
};

export class SimDevice {
  private client: LeanMqttClient | null = null;
  private lastSeq = 0;
  private readonly models = idRecord<ModelRecord>();
  private readonly outbox: Reported[] = [];
  private flushing = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;
  connected = false;
  everConnected = false;
  readonly traces = new Map<string, RolloutTrace>();

  constructor(
    readonly creds: SimCredentials,
    private readonly options: SimOptions,
    private readonly counters: SimCounters,
    private readonly clock: () => number,
  ) {}

  private get id(): string {
    return this.creds.id;
  }

  /** Connects; resolves once subscribed to `desired` and the online status was acknowledged. */
  connect(): Promise<void> {
    const offline: Status = { online: false, ts: new Date().toISOString() };
    let first: { resolve(): void; fail(why: string): void } | null = null;
    const online = async () => {
      await client.subscribe(topics.desired(this.id), 1);
      const status: Status = { online: true, ts: new Date().toISOString(), agentVersion: 'fleet-sim', facts: FACTS };
      await client.publish(topics.status(this.id), JSON.stringify(status), 1, true);
      // Like the agent: the current report again on every connect (nothing when it has no models).
      if (Object.keys(this.models).length > 0 && this.outbox.length === 0) this.queueReport();
      this.flush();
    };
    const client = new LeanMqttClient(
      {
        ...tcpEndpoint(this.options.url),
        clientId: this.id,
        username: this.id,
        password: this.creds.token,
        clean: false,
        keepaliveS: this.options.keepaliveS,
        connectTimeoutMs: this.options.connectTimeoutMs,
        reconnectMs: 1_000 + Math.floor(Math.random() * 2_000),
        will: { topic: topics.status(this.id), payload: Buffer.from(JSON.stringify(offline)), qos: 1, retain: true },
      },
      {
        connect: () => {
          this.connected = true;
          this.counters.connected++;
          if (this.everConnected) this.counters.reconnects++;
          this.everConnected = true;
          // The first connect() resolves on the first connection that gets through online();
          // a connection lost on the way is not a failure (the client reconnects, and online()
          // runs again), a refused subscription is.
          online().then(
            () => first?.resolve(),
            (err: Error) => {
              if (!(err instanceof ConnectionLost)) first?.fail(err.message);
            },
          );
        },
        close: () => {
          this.counters.disconnects++;
          this.counters.connected--;
          this.connected = false;
        },
        message: (topic, payload) => {
          if (topic === topics.desired(this.id)) this.onDesired(payload);
        },
        error: (err) => {
          this.counters.firstError ??= `${this.id}: ${err.message}`;
          if (err instanceof ConnackRefused) first?.fail(`refused: ${err.message}`); // the client stops
        },
      },
    );
    this.client = client;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => first?.fail(`not connected within ${this.options.connectTimeoutMs} ms`),
        this.options.connectTimeoutMs,
      );
      first = {
        resolve: () => {
          first = null;
          clearTimeout(timer);
          resolve();
        },
        fail: (why) => {
          first = null;
          clearTimeout(timer);
          client.end();
          reject(new Error(`${this.id}: ${why}`));
        },
      };
      client.open();
    });
  }

  private trace(rolloutId: string): RolloutTrace {
    let t = this.traces.get(rolloutId);
    if (!t) {
      t = { desiredAt: null, version: null, sent: {}, terminalAckAt: null, outcome: null };
      this.traces.set(rolloutId, t);
    }
    return t;
  }

  private onDesired(payload: Buffer): void {
    const at = this.clock();
    this.counters.desiredReceived++;
    let desired: ParsedDesired;
    try {
      desired = parseDesired(payload);
    } catch (err) {
      this.counters.desiredInvalid++;
      this.counters.firstError ??= `${this.id}: desired refused: ${(err as Error).message}`;
      return;
    }
    if (desired.deviceId !== this.id || desired.seq <= this.lastSeq) {
      // Addressed to another device, or a replay (the retained copy after a reconnect).
      this.counters.desiredIgnored++;
      return;
    }
    this.lastSeq = desired.seq;
    for (const [name, target] of Object.entries(desired.models)) {
      if (target.rolloutId) {
        const t = this.trace(target.rolloutId);
        t.desiredAt ??= at;
        t.version ??= target.version;
      }
      if (!this.options.silent) this.assign(name, target);
    }
    if (this.options.silent) return;
    // Every accepted desired state is acknowledged by a report carrying its seq.
    this.queueReport();
    this.flush();
  }

  private assign(name: string, target: ParsedDesired['models'][string]): void {
    const now = new Date().toISOString();
    const rec = this.models[name];
    const same = rec !== undefined && rec.sha256 === target.sha256 && rec.version === target.version;
    if (same && rec.rolloutId === target.rolloutId) return; // nothing new
    if (same && !isTerminal(rec.state)) {
      rec.rolloutId = target.rolloutId; // same bytes, new rollout label: keep going
      return;
    }
    const base: ModelRecord = rec ?? {
      state: 'idle',
      version: null,
      sha256: null,
      current: null,
      previous: null,
      rolloutId: null,
      attempt: 0,
      error: null,
      progress: null,
      updatedAt: now,
      generation: 0,
    };
    if (base.current === target.version) {
      // Already running exactly this release (e.g. a revert to the version it never left).
      this.models[name] = {
        ...base,
        state: 'healthy',
        version: target.version,
        sha256: target.sha256,
        rolloutId: target.rolloutId,
        attempt: 0,
        error: null,
        progress: null,
        updatedAt: now,
      };
      this.noteSent(this.models[name] as ModelRecord);
      return;
    }
    this.counters.assignments++;
    const generation = base.generation + 1;
    const next: ModelRecord = {
      ...base,
      state: 'downloading',
      version: target.version,
      sha256: target.sha256,
      rolloutId: target.rolloutId,
      attempt: 1,
      error: null,
      progress: { bytes: 0, total: target.size },
      updatedAt: now,
      generation,
    };
    this.models[name] = next;
    this.noteSent(next);
    const fails = this.shouldFail(target.version);
    const steps: ModelState[] = ['verifying', 'applying', 'probing', fails ? 'rolled_back' : 'healthy'];
    const runStep = (i: number) => {
      const state = steps[i];
      if (state === undefined) return;
      this.later(() => {
        const r = this.models[name];
        if (!r || r.generation !== generation || this.stopped) return; // superseded
        const updatedAt = new Date().toISOString();
        if (state === 'healthy') {
          r.previous = r.current;
          r.current = r.version;
          r.attempt = 0;
        } else if (state === 'rolled_back') {
          r.error = {
            code: 'E_PROBE_FAILED',
            message: `fleet-sim: the inference probe of ${name}@${r.version} failed (simulated)`,
          };
        }
        r.state = state;
        r.progress = null;
        r.updatedAt = updatedAt;
        this.noteSent(r);
        this.queueReport();
        this.flush();
        runStep(i + 1);
      });
    };
    runStep(0);
  }

  private shouldFail(version: string): boolean {
    const { fail } = this.options;
    return (
      fail.devices.includes(this.id) ||
      fail.versions.includes(version) ||
      (fail.probability > 0 && Math.random() < fail.probability)
    );
  }

  private later(fn: () => void): void {
    const { stepMs, jitter } = this.options;
    const delay = Math.max(0, stepMs * (1 - jitter + 2 * jitter * Math.random()));
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, delay);
    this.timers.add(timer);
  }

  /** Records the outcome of a rollout assignment (the send times are taken when each report goes out). */
  private noteSent(rec: ModelRecord): void {
    if (rec.rolloutId && isTerminal(rec.state)) this.trace(rec.rolloutId).outcome = rec.state;
  }

  private report(): Reported {
    const models: Reported['models'] = idRecord();
    for (const [name, r] of Object.entries(this.models)) {
      models[name] = {
        state: r.state,
        version: r.version,
        current: r.current,
        previousVersion: r.previous,
        rolloutId: r.rolloutId,
        progress: r.state === 'downloading' ? r.progress : null,
        attempt: r.attempt,
        error: r.error,
        updatedAt: r.updatedAt,
      };
    }
    return { deviceId: this.id, seq: this.lastSeq, ts: new Date().toISOString(), models, rejected: null };
  }

  private queueReport(): void {
    this.outbox.push(this.report());
    this.counters.outboxPending++;
  }

  /** Sends the outbox in order, each report acknowledged (PUBACK) before the next. */
  private flush(): void {
    if (this.flushing || !this.connected || !this.client) return;
    this.flushing = true;
    const client = this.client;
    const run = async () => {
      while (this.connected && this.outbox.length > 0) {
        const report = this.outbox[0] as Reported;
        this.counters.reportsSent++;
        const sentAt = this.clock();
        for (const m of Object.values(report.models)) {
          if (m.rolloutId) this.trace(m.rolloutId).sent[m.state] ??= sentAt;
        }
        try {
          await client.publish(topics.reported(this.id), JSON.stringify(report), 1, true);
        } catch (err) {
          this.counters.reportErrors++;
          this.counters.firstError ??= `${this.id}: report not acknowledged: ${(err as Error).message}`;
          return; // rejected only once the device stopped (a drop is resent by the client)
        }
        this.counters.reportsAcked++;
        this.outbox.shift();
        this.counters.outboxPending--;
        const at = this.clock();
        for (const m of Object.values(report.models)) {
          if (m.rolloutId && isTerminal(m.state)) {
            const t = this.trace(m.rolloutId);
            t.terminalAckAt ??= at;
          }
        }
      }
    };
    run().finally(() => {
      this.flushing = false;
      if (this.connected && this.outbox.length > 0 && !this.stopped) this.flush();
    });
  }

  /** The models this device reports (none until a rollout gave it one). */
  get modelCount(): number {
    return Object.keys(this.models).length;
  }

  /**
   * Re-sends the current state `n` times (an ingest burst); resolves when acknowledged. Each
   * report moves its models' `attempt` on, so each says something new and the coordinator writes
   * a history row for it, as for the transitions of an update (a new `updatedAt` alone no longer
   * writes one since 2026-12-07: the burst's load stays what it was).
   */
  async burst(n: number): Promise<number> {
    const client = this.client;
    if (!client || !this.connected) return 0;
    let acked = 0;
    for (let i = 0; i < n; i++) {
      const now = new Date().toISOString();
      for (const r of Object.values(this.models)) {
        r.updatedAt = now;
        r.attempt = r.attempt >= 1000 ? 0 : r.attempt + 1; // the schema's limit
      }
      const report = this.report();
      this.counters.reportsSent++;
      this.counters.burstReports++;
      try {
        await client.publish(topics.reported(this.id), JSON.stringify(report), 1, true);
        this.counters.reportsAcked++;
        acked++;
      } catch {
        this.counters.reportErrors++;
      }
    }
    return acked;
  }

  /**
   * Sends `n` metrics summaries (QoS 1, each acknowledged before the next, like the agent's
   * outbox), of consecutive one-minute windows from `fromMs`, for the version each model runs
   * now: `observations` inferences each, from set distributions (simulatedSeries). Resolves
   * with how many were sent and acknowledged (none by a device that runs no model).
   */
  async metricsBurst(n: number, fromMs: number, observations: number): Promise<{ sent: number; acked: number }> {
    const client = this.client;
    const running = Object.entries(this.models).filter(([, r]) => r.current !== null);
    if (!client || !this.connected || running.length === 0) return { sent: 0, acked: 0 };
    const random = mulberry32(seedOf(this.id)); // each device's own distributions, the same every run
    let acked = 0;
    for (let i = 0; i < n; i++) {
      const windowStart = fromMs + i * 60_000;
      const summary = {
        ts: new Date(windowStart + 60_000).toISOString(),
        windowStart: new Date(windowStart).toISOString(),
        windowSeconds: 60,
        windowsMerged: 1,
        series: running.map(([model, r]) => {
          const version = r.current as string;
          return simulatedSeries(model, version, observations, random, versionDistribution(version));
        }),
        dropped: { observations: 0, windows: 0 },
      };
      try {
        await client.publish(topics.metrics(this.id), JSON.stringify(summary), 1, false);
        acked++;
      } catch {
        this.counters.reportErrors++;
      }
    }
    return { sent: n, acked };
  }

  /** True when no step is scheduled and the outbox is empty. */
  idle(): boolean {
    return this.timers.size === 0 && this.outbox.length === 0;
  }

  /** Closes the connection without an offline status (as a power cut would: the will fires). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const client = this.client;
    if (!client) return;
    await client.end();
  }
}

function isTerminal(state: ModelState): boolean {
  return isOutcome(state);
}
