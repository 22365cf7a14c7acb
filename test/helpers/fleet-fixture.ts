import { chmodSync, promises as fs, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { CommandClient } from '../../coordinator/client/command-client.js';
import { uploadRelease } from '../../coordinator/client/upload-release.js';
import { goodProbe } from '../../scripts/tiny-models.js';
import type { Envelope } from '../../shared/envelope.js';
import { publicKeyToJson } from '../../shared/keys.js';
import type { Manifest } from '../../shared/manifest.js';
import { type Reported, ReportedSchema, type RolloutSummary, RolloutSummarySchema } from '../../shared/messages.js';
import { decodePayload } from '../../shared/payload.js';
import { ProbeSpecSchema } from '../../shared/probe-spec.js';
import { createTopics } from '../../shared/topics.js';
import { TINY_IO } from './agent-fixture.js';
import { AgentProcess } from './agent-process.js';
import { CoordinatorProcess } from './coordinator-process.js';
import { TestSigners } from './signing.js';

const topics = createTopics();

/**
 * A whole installation on loopback, all real: an `ota-coordinator` process with its own data
 * directory, an admin command client, a release key trusted by the coordinator, and enrolled
 * devices running real `ota-agent` processes with the config `device.add` returned. Torn down
 * with the test (agents and coordinator killed, directory removed).
 */
export class FleetFixture {
  readonly signers = new TestSigners();
  readonly agents = new Map<string, AgentProcess>();
  readonly reports = new Map<string, Reported[]>();
  readonly summaries = new Map<string, RolloutSummary[]>();
  private waiters: (() => void)[] = [];

  private constructor(
    readonly dir: string,
    public coordinator: CoordinatorProcess,
    public admin: CommandClient,
  ) {}

  /** `env`: the coordinator's environment (e.g. TestMosquitto's `env` for an external broker). */
  static async create(t: Test, options: { env?: NodeJS.ProcessEnv; dir?: string } = {}): Promise<FleetFixture> {
    const dir = options.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'ota-fleet-test-')));
    const coordinator = await CoordinatorProcess.start(path.join(dir, 'data'), undefined, options.env);
    const admin = await FleetFixture.connectAdmin(coordinator);
    const f = new FleetFixture(dir, coordinator, admin);
    f.watch();
    t.teardown(async () => {
      await Promise.all([...f.agents.values()].map((a) => a.kill9()));
      await f.admin.close().catch(() => {});
      await f.coordinator.kill9();
      await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    });
    await f.admin.call('key.add', { key: publicKeyToJson(f.signers.releaseKey), name: 'test release key' });
    return f;
  }

  private static async connectAdmin(coordinator: CoordinatorProcess): Promise<CommandClient> {
    const token = coordinator.admin();
    return CommandClient.connect({ url: coordinator.mqttUrl, user: token.user, token: token.token, timeoutMs: 20_000 });
  }

  /** Records every report and rollout summary seen by the admin client (it may read them). */
  private watch(): void {
    const client = this.admin.mqtt;
    // Not awaited; a broker restart before the SUBACK ends this connection (CommandClient closes
    // on 'close') and rejects the subscribe: caught, as the test then connects again
    // (reconnectAdmin), which subscribes on the new connection. Uncaught it failed the test.
    client.subscribeAsync([topics.allDevices('reported'), topics.allRollouts()], { qos: 1 }).catch(() => {});
    client.on('message', (topic, payload) => {
      try {
        const parsed = topics.parse(topic);
        if (parsed.kind === 'reported') {
          const list = this.reports.get(parsed.deviceId) ?? [];
          list.push(decodePayload(ReportedSchema, payload, topic));
          this.reports.set(parsed.deviceId, list);
        } else if (parsed.kind === 'rollout') {
          const list = this.summaries.get(parsed.rolloutId) ?? [];
          list.push(decodePayload(RolloutSummarySchema, payload, topic));
          this.summaries.set(parsed.rolloutId, list);
        }
      } catch {
        // replies and anything else
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /**
   * Kills the coordinator with SIGKILL (or stops it) and starts it again on the same ports and
   * data; `whileStopped` runs in between (e.g. restoring a backup of the database).
   */
  async restartCoordinator(
    kill: 'SIGKILL' | 'SIGTERM' = 'SIGKILL',
    whileStopped?: (dataDir: string) => Promise<void> | void,
  ): Promise<void> {
    await this.admin.close().catch(() => {});
    if (kill === 'SIGKILL') await this.coordinator.kill9();
    else await this.coordinator.stop();
    await whileStopped?.(this.coordinator.dataDir);
    const ports = this.coordinator.ports;
    this.coordinator = await CoordinatorProcess.start(this.coordinator.dataDir, ports, this.coordinator.env);
    this.admin = await FleetFixture.connectAdmin(this.coordinator);
    this.watch();
  }

  /** A new admin connection (after the broker it went through restarted), watching as before. */
  async reconnectAdmin(): Promise<void> {
    await this.admin.close().catch(() => {});
    this.admin = await FleetFixture.connectAdmin(this.coordinator);
    this.watch();
  }

  /** Enrols a device through the command API and starts its agent with the returned config. */
  async enrol(
    id: string,
    options: {
      labels?: Record<string, string>;
      channel?: string;
      start?: boolean;
      /** Overrides of the agent config's `broker` section (e.g. a proxy URL, keepaliveSeconds). */
      broker?: Record<string, unknown>;
      /** More top-level keys of the agent config (e.g. `metrics`). */
      config?: Record<string, unknown>;
    } = {},
  ) {
    const result = await this.admin.call<{ agentConfig: Record<string, unknown>; token: string }>('device.add', {
      id,
      ...(options.labels ? { labels: options.labels } : {}),
      ...(options.channel ? { channel: options.channel } : {}),
    });
    const file = path.join(this.dir, `${id}.agent.json`);
    writeFileSync(
      file,
      JSON.stringify({
        ...result.agentConfig,
        ...(options.broker
          ? { broker: { ...(result.agentConfig.broker as Record<string, unknown>), ...options.broker } }
          : {}),
        stateDir: path.join(this.dir, `${id}-state`),
        logLevel: 'debug',
        download: { backoffBaseMs: 100, backoffMaxMs: 1_000, maxAttempts: 3, stallTimeoutMs: 5_000, reserveMB: 0 },
        ...options.config,
      }),
      { mode: 0o600 }, // it holds the token: private, as otactl writes it
    );
    chmodSync(file, 0o600);
    if (options.start !== false) this.startAgent(id);
    return result;
  }

  startAgent(id: string): AgentProcess {
    const agent = new AgentProcess(path.join(this.dir, `${id}.agent.json`));
    this.agents.set(id, agent);
    return agent;
  }

  /** Signs a release with the test release key and uploads it (HTTP), optionally onto a channel. */
  async publish(
    model: string,
    version: string,
    bytes: Uint8Array,
    options: { channel?: string; counter?: number; manifest?: Partial<Manifest> } = {},
  ): Promise<Envelope> {
    const envelope = this.signers.release(model, version, bytes, {
      ...TINY_IO,
      probe: ProbeSpecSchema.parse(goodProbe()),
      counter: options.counter ?? 1,
      ...options.manifest,
    });
    const file = path.join(this.dir, `${model}-${version}.onnx`);
    await fs.writeFile(file, bytes);
    const token = this.coordinator.admin();
    await uploadRelease({
      url: this.coordinator.httpUrl,
      user: token.user,
      token: token.token,
      envelope,
      file,
      channel: options.channel ?? null,
    });
    return envelope;
  }

  async waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 250);
        this.waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  lastReport(deviceId: string): Reported | undefined {
    return this.reports.get(deviceId)?.at(-1);
  }

  lastSummary(rolloutId: string): RolloutSummary | undefined {
    return this.summaries.get(rolloutId)?.at(-1);
  }

  /** Waits until a device reports `model` in `state` at `version`. */
  waitForDevice(deviceId: string, model: string, state: string, version: string, timeoutMs = 60_000) {
    return this.waitFor(
      `${deviceId} ${model} ${state} ${version}`,
      () => {
        const m = this.lastReport(deviceId)?.models[model];
        return m?.state === state && m.version === version ? m : undefined;
      },
      timeoutMs,
    );
  }

  waitForRollout(rolloutId: string, pred: (s: RolloutSummary) => boolean, what: string, timeoutMs = 60_000) {
    return this.waitFor(
      `rollout ${rolloutId}: ${what} (last: ${JSON.stringify(this.lastSummary(rolloutId)?.status)})`,
      () => {
        const s = this.lastSummary(rolloutId);
        return s && pred(s) ? s : undefined;
      },
      timeoutMs,
    );
  }

  async link(deviceId: string, model: string): Promise<string | null> {
    try {
      return await fs.readlink(path.join(this.dir, `${deviceId}-state`, 'models', model, 'current'));
    } catch {
      return null;
    }
  }
}
