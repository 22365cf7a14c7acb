import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../../shared/logger.js';
import type { Status } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import { settleWithin } from '../../shared/settle-within.js';
import type { Topics } from '../../shared/topics.js';

export interface SessionOptions {
  url: string;
  deviceId: string;
  token: string;
  caFile?: string;
  /** MQTT keepalive (default 30 s): a silent connection is dropped by the broker after 1.5 x this. */
  keepaliveSeconds?: number;
  topics: Topics;
  logger: Logger;
  /** Builds the retained status published on every connect. */
  status: () => Promise<Status>;
  now: () => Date;
  random?: () => number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

/**
 * The agent's MQTT session (MQTT 3.1.1): client id = username = device id, persistent session
 * (clean=false, so QoS 1 desired states published while the device was away are delivered),
 * a retained `status` LWT with online=false, reconnect with exponential backoff and full jitter
 * (mqtt.js only has a fixed period), and a subscription to the device's own `desired` topic.
 *
 * Events: 'connected' (each successful connect), 'disconnected', 'desired' (raw payload).
 */
export class MqttSession extends EventEmitter {
  private client: MqttClient | null = null;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Publishes sent and not yet acknowledged, failed when the connection closes (see `publish`). */
  private readonly unacknowledged = new Set<(err: Error) => void>();
  connected = false;

  constructor(private readonly options: SessionOptions) {
    super();
  }

  private lwt(): NonNullable<IClientOptions['will']> {
    const offline: Status = { online: false, ts: this.options.now().toISOString() };
    return {
      topic: this.options.topics.status(this.options.deviceId),
      payload: encodePayload(offline),
      qos: 1,
      retain: true,
    };
  }

  start(): void {
    const { url, deviceId, token, caFile, topics, logger, keepaliveSeconds = 30 } = this.options;
    const client = mqtt.connect(url, {
      clientId: deviceId,
      username: deviceId,
      password: token,
      clean: false,
      protocolVersion: 4,
      keepalive: keepaliveSeconds,
      connectTimeout: 15_000,
      reconnectPeriod: 0, // reconnects are scheduled here, with backoff and jitter
      ...(caFile ? { ca: readFileSync(caFile) } : {}),
      will: this.lwt(),
    });
    this.client = client;
    client.on('connect', (connack) => {
      this.attempt = 0;
      this.connected = true;
      logger.info({ sessionPresent: connack.sessionPresent }, 'connected to the broker');
      client.subscribe(topics.desired(deviceId), { qos: 1 }, (err) => {
        if (err) logger.error({ err: err.message }, 'subscribing to the desired topic failed');
      });
      this.publishStatus().catch((err: Error) => logger.warn({ err: err.message }, 'publishing status failed'));
      this.emit('connected');
    });
    client.on('message', (topic, payload) => {
      if (topic === topics.desired(deviceId)) this.emit('desired', payload);
    });
    client.on('error', (err) => {
      const code = (err as { code?: number | string }).code;
      const hint = code === 4 || code === 5 ? ' (bad device id or token: check the agent config)' : '';
      logger.warn({ err: err.message, code }, `broker connection error${hint}`);
    });
    client.on('close', () => {
      if (this.connected) logger.warn('disconnected from the broker');
      this.connected = false;
      this.failUnacknowledged();
      this.emit('disconnected');
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.timer || !this.client) return;
    const base = this.options.backoffBaseMs ?? 1_000;
    const max = this.options.backoffMaxMs ?? 60_000;
    const ceiling = Math.min(max, base * 2 ** this.attempt);
    // Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): a fleet that lost
    // its broker at the same instant does not come back at the same instant.
    const delay = Math.round((this.options.random ?? Math.random)() * ceiling);
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.stopped || !this.client) return;
      this.client.options.will = this.lwt();
      this.client.reconnect();
    }, delay);
  }

  async publishStatus(): Promise<void> {
    const status = await this.options.status();
    await this.publish(this.options.topics.status(this.options.deviceId), encodePayload(status), true);
  }

  /**
   * Publishes with QoS 1; resolves when the broker acknowledged it (PUBACK), rejects when the
   * connection closes first. mqtt.js would otherwise never settle it: `client.reconnect()` starts
   * from an empty outgoing store, so a PUBLISH in flight at a disconnect is neither re-sent nor
   * failed, and a caller awaiting it (the report outbox) waits forever. Callers keep what they
   * publish until it is acknowledged and send it again after the reconnect (at-least-once,
   * MQTT 3.1.1 4.3.2); a report sent twice is harmless, the coordinator's ingestion is idempotent.
   */
  publish(topic: string, payload: Buffer, retain: boolean): Promise<void> {
    const client = this.client;
    if (!client || !this.connected) return Promise.reject(new Error('not connected'));
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => reject(err);
      this.unacknowledged.add(fail);
      client.publish(topic, payload, { qos: 1, retain }, (err) => {
        this.unacknowledged.delete(fail);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  private failUnacknowledged(): void {
    const lost = new Error('connection closed before the broker acknowledged the publish');
    for (const fail of this.unacknowledged) fail(lost);
    this.unacknowledged.clear();
  }

  /** Clean shutdown: retained offline status (a clean disconnect sends no LWT), then disconnect. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    if (!client) return;
    if (this.connected) {
      const offline: Status = { online: false, ts: this.options.now().toISOString() };
      await settleWithin(
        this.publish(this.options.topics.status(this.options.deviceId), encodePayload(offline), true),
        2_000,
      );
    }
    await new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
  }
}
