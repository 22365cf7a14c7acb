import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import type { Test } from 'tap';

/**
 * One raw MQTT 3.1.1 connection to the coordinator's broker, with what it received, for tests
 * that must see exactly what the broker does: a CONNACK return code, a SUBACK grant, a publish
 * refused (the broker closes the connection: MQTT 3.1.1 has no negative PUBACK) or accepted.
 */
export interface Session {
  client: MqttClient;
  received: { topic: string; payload: Buffer }[];
  /** Resolves when the connection closes, whoever closes it. */
  closed: Promise<void>;
}

const WAIT_MS = 5_000;

/** Connects (no retries); rejects with the CONNACK return code as `code` when refused. */
export function openSession(
  t: Test,
  url: string,
  username: string,
  password: string,
  clientId: string,
  extra: Partial<IClientOptions> = {},
): Promise<Session> {
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    clientId,
    username,
    password,
    reconnectPeriod: 0,
    connectTimeout: WAIT_MS,
    clean: true,
    ...extra,
  });
  t.teardown(() => client.endAsync(true).catch(() => {}));
  const received: Session['received'] = [];
  client.on('message', (topic, payload) => received.push({ topic, payload: Buffer.from(payload) }));
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  return new Promise<Session>((resolve, reject) => {
    client.once('connect', () => resolve({ client, received, closed }));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    void closed.then(() => reject(new Error(`${clientId}: closed before CONNACK`)));
  });
}

/** The CONNACK return code: 0 when accepted (the session is then ended), else the refusal's. */
export async function connackCode(p: Promise<Session>): Promise<number> {
  try {
    const s = await p;
    await s.client.endAsync();
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

/** Subscribes one filter and returns the granted byte of the SUBACK (1, or 128 = refused). */
export function grantOf(client: MqttClient, filter: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const onPacket = (packet: Packet) => {
      if (packet.cmd !== 'suback') return;
      client.off('packetreceive', onPacket);
      resolve((packet.granted[0] as number | undefined) ?? -1);
    };
    client.on('packetreceive', onPacket);
    client.subscribe(filter, { qos: 1 }, (err) => {
      if (err && !/Subscribe error/i.test(err.message)) reject(err);
    });
  });
}

/**
 * Publishes at QoS 1 and says what the broker did: 'accepted' (PUBACK) or 'closed' (refused:
 * the broker closed the connection). One of the two always happens, so nothing waits on a timer.
 */
export function publishOutcome(
  session: Session,
  topic: string,
  payload: Buffer,
  opts: { retain?: boolean } = {},
): Promise<'accepted' | 'closed'> {
  return Promise.race([
    session.client.publishAsync(topic, payload, { qos: 1, retain: opts.retain ?? false }).then(
      () => 'accepted' as const,
      () => 'closed' as const,
    ),
    session.closed.then(() => 'closed' as const),
  ]);
}

/**
 * Resolves with the first message `pick` accepts, received or arriving; rejects when the
 * connection closes first, or after `ms` (a bound on a hung test, not a measurement).
 */
export function nextMessage<T>(
  session: Session,
  pick: (m: { topic: string; payload: Buffer }) => T | undefined,
  ms = 10_000,
): Promise<T> {
  for (const m of session.received) {
    const v = pick(m);
    if (v !== undefined) return Promise.resolve(v);
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no such message within ${ms} ms`)), ms);
    const onMessage = (topic: string, payload: Buffer) => {
      const v = pick({ topic, payload });
      if (v !== undefined) finish(null, v);
    };
    const finish = (err: Error | null, v?: T) => {
      clearTimeout(timer);
      session.client.off('message', onMessage);
      if (err) reject(err);
      else resolve(v as T);
    };
    session.client.on('message', onMessage);
    void session.closed.then(() => finish(new Error('connection closed while waiting for a message')));
  });
}
