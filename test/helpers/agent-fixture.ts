import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { goodProbe } from '../../scripts/tiny-models.js';
import type { Envelope } from '../../shared/envelope.js';
import type { Manifest } from '../../shared/manifest.js';
import { ProbeSpecSchema } from '../../shared/probe-spec.js';
import { AgentProcess, writeAgentConfig } from './agent-process.js';
import { ArtifactServer } from './artifact-server.js';
import { TestBroker } from './broker.js';
import { FleetObserver } from './fleet-observer.js';
import { TestSigners } from './signing.js';

export const TINY_IO: Pick<Manifest, 'inputs' | 'outputs'> = {
  inputs: [{ name: 'x', type: 'float32', dims: [1, 4] }],
  outputs: [{ name: 'y', type: 'float32', dims: [1, 2] }],
};

/**
 * Everything an agent test needs, all real: an Aedes broker, an artifact server, the signers,
 * an observer on the wire, and agent processes with their own state directories. Torn down
 * with the test.
 */
export class AgentFixture {
  readonly signers = new TestSigners();
  private readonly agents: AgentProcess[] = [];

  private constructor(
    readonly dir: string,
    readonly broker: TestBroker,
    readonly artifacts: ArtifactServer,
    readonly observer: FleetObserver,
  ) {}

  static async create(t: Test): Promise<AgentFixture> {
    // Its own directory (not t.testdir(), which is shared by the test and removed before this
    // teardown runs): agents are killed first, then the directory goes.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-agent-test-'));
    const broker = await TestBroker.start();
    const artifacts = await ArtifactServer.start();
    const observer = await FleetObserver.connect(broker.url);
    const fixture = new AgentFixture(dir, broker, artifacts, observer);
    t.teardown(async () => {
      await Promise.all(fixture.agents.map((a) => a.kill9()));
      await observer.close();
      await artifacts.stop();
      await broker.stop();
      await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    });
    return fixture;
  }

  /** Publishes `bytes` to the artifact server and signs a release for them with the good probe. */
  release(model: string, version: string, bytes: Uint8Array, overrides: Partial<Manifest> = {}): Envelope {
    this.artifacts.add(bytes);
    return this.signers.release(model, version, bytes, {
      ...TINY_IO,
      probe: ProbeSpecSchema.parse(goodProbe()),
      ...overrides,
    });
  }

  configFile(deviceId: string, config: Record<string, unknown> = {}): string {
    return writeAgentConfig({
      dir: this.dir,
      deviceId,
      brokerUrl: this.broker.url,
      artifactsUrl: this.artifacts.url,
      signers: this.signers,
      config,
    });
  }

  stateDir(deviceId: string): string {
    return path.join(this.dir, `${deviceId}-state`);
  }

  startAgent(deviceId: string, env: NodeJS.ProcessEnv = {}, config: Record<string, unknown> = {}): AgentProcess {
    const agent = new AgentProcess(this.configFile(deviceId, config), env);
    this.agents.push(agent);
    return agent;
  }

  /** Assigns releases to a device, as the coordinator would. */
  assign(deviceId: string, models: Record<string, { envelope: Envelope; rolloutId?: string | null }>): Promise<void> {
    return this.observer.publishDesired(deviceId, this.signers.desired(deviceId, models));
  }

  async link(deviceId: string, model: string, name: 'current' | 'previous'): Promise<string | null> {
    try {
      return await fs.readlink(path.join(this.stateDir(deviceId), 'models', model, name));
    } catch {
      return null;
    }
  }

  /** The bytes applications see: models/<name>/current/model.onnx. */
  async appVisible(deviceId: string, model: string): Promise<Buffer | null> {
    try {
      return await fs.readFile(path.join(this.stateDir(deviceId), 'models', model, 'current', 'model.onnx'));
    } catch {
      return null;
    }
  }

  async versionsOnDisk(deviceId: string, model: string): Promise<string[]> {
    try {
      const entries = await fs.readdir(path.join(this.stateDir(deviceId), 'models', model));
      return entries.filter((e) => e !== 'current' && e !== 'previous').sort();
    } catch {
      return [];
    }
  }
}
