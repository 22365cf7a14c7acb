import mqtt, { type MqttClient } from 'mqtt';
import {
  type DesiredMessage,
  type Reported,
  ReportedSchema,
  type Status,
  StatusSchema,
} from '../../shared/messages.js';
import { decodePayload, encodePayload } from '../../shared/payload.js';
import { createTopics } from '../../shared/topics.js';

const topics = createTopics();

/**
 * Plays the coordinator's part on the wire in agent tests: publishes signed desired states
 * (retained, QoS 1) and records every report and status message, validated with the schemas.
 */
export class FleetObserver {
  readonly reports = new Map<string, Reported[]>();
  readonly statuses = new Map<string, Status[]>();
  readonly invalid: string[] = [];
  private waiters: (() => void)[] = [];

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      try {
        const parsed = topics.parse(topic);
        if (parsed.kind === 'reported') {
          const list = this.reports.get(parsed.deviceId) ?? [];
          list.push(decodePayload(ReportedSchema, payload, topic));
          this.reports.set(parsed.deviceId, list);
        } else if (parsed.kind === 'status') {
          const list = this.statuses.get(parsed.deviceId) ?? [];
          list.push(decodePayload(StatusSchema, payload, topic));
          this.statuses.set(parsed.deviceId, list);
        }
      } catch (err) {
        this.invalid.push(`${topic}: ${(err as Error).message}`);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(url: string): Promise<FleetObserver> {
    const client = mqtt.connect(url, { clientId: `observer-${process.pid}-${Date.now()}`, reconnectPeriod: 200 });
    const observer = new FleetObserver(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync([topics.allDevices('reported'), topics.allDevices('status')], { qos: 1 });
    // Resubscribe after a broker restart (the new broker has no sessions). A connection lost
    // again before the SUBACK rejects it: caught, the next connect subscribes again.
    client.on('connect', () => {
      client.subscribeAsync([topics.allDevices('reported'), topics.allDevices('status')], { qos: 1 }).catch(() => {});
    });
    return observer;
  }

  async publishDesired(deviceId: string, message: DesiredMessage | string): Promise<void> {
    const payload = typeof message === 'string' ? Buffer.from(message) : encodePayload(message);
    await this.client.publishAsync(topics.desired(deviceId), payload, { qos: 1, retain: true });
  }

  async publishRaw(topic: string, payload: Buffer | string, retain = true): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, retain });
  }

  /** States of one model in the order they were reported, consecutive duplicates collapsed. */
  states(deviceId: string, model: string): string[] {
    const out: string[] = [];
    for (const r of this.reports.get(deviceId) ?? []) {
      const s = r.models[model]?.state;
      if (s && out[out.length - 1] !== s) out.push(s);
    }
    return out;
  }

  last(deviceId: string): Reported | undefined {
    return this.reports.get(deviceId)?.at(-1);
  }

  /** Polls `probe` (sync or async) on every message and every 250 ms until it returns a value. */
  async waitFor<T>(
    what: string,
    probe: () => T | undefined | false | Promise<T | undefined | false>,
    timeoutMs = 30_000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 250);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits until the latest report of `deviceId` shows `model` in `state`. */
  waitForState(deviceId: string, model: string, state: string, timeoutMs = 30_000): Promise<Reported> {
    return this.waitFor(
      `${deviceId} ${model} ${state}`,
      () => {
        const r = this.last(deviceId);
        return r?.models[model]?.state === state ? r : undefined;
      },
      timeoutMs,
    );
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
