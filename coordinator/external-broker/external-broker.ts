import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { OtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { CommandReply, CommandRequest, Metrics, Reported, Status } from '../../shared/messages.js';
import { encodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import { IngestGate } from '../broker/ingest-gate.js';
import { checkClientPayload } from '../broker/payload-check.js';
import type { Principal } from '../broker/principal.js';

/**
 * The coordinator as a client of an external MQTT broker (design section 12), in place of the
 * embedded one: it subscribes to what it ingests (every device's reported, status and metrics,
 * and the commands), publishes desired states, summaries, audit events and replies, and checks
 * every payload itself with the embedded broker's checks (payload-check.ts): that broker checks
 * topics only. Who published is known from the topic, which that broker's ACL ties to the client
 * (dynsec-rules.ts): a device publishes only under its own id, an operator's commands name it.
 *
 * Its session is persistent (clean session off, one client id): reports, statuses and metrics
 * that arrive while the coordinator restarts wait in the broker at QoS 1. Commands are subscribed
 * at QoS 0, so the broker keeps none for it while it is away: a command whose caller gave up
 * waiting must not run hours later (nor twice, after a retry). Subscriptions are made on every
 * connect, so retained reports and statuses are delivered again (MQTT 3.1.1 section 3.8.4) and
 * the coordinator rebuilds what it keeps in memory. After every reconnect `onReconnect`
 * republishes the retained state: a broker that crashed restarts from its last save, whose
 * retained messages may be older than what the coordinator published since, and its session
 * flag cannot tell.
 */

export interface ExternalBrokerRoutes {
  report(deviceId: string, report: Reported): void;
  presence(deviceId: string, online: boolean, status: Status): void;
  metrics(deviceId: string, metrics: Metrics): Promise<void>;
  command(op: string, request: CommandRequest, principal: Principal): Promise<CommandReply>;
}

export interface ExternalBrokerOptions {
  url: string;
  username: string;
  password: string;
  /** CA certificates (PEM) for an mqtts:// broker with a private CA. */
  ca?: Buffer | undefined;
  clientId: string;
  topics: Topics;
  logger: Logger;
  maxPayloadBytes: number;
  /** A device the store has (a removed device's client may outlive it in the broker for a moment). */
  isDevice(id: string): boolean;
  /** The operator named in a command topic, with its role now, or null. */
  operator(name: string): Principal | null;
  routes: ExternalBrokerRoutes;
  /** Called (not awaited) on each connect after the first. */
  onReconnect?: () => void;
  /** Called with the MQTT client before it connects: publishes may be queued on it from then on. */
  onClient?: (client: MqttClient) => void;
  /** A message refused by the checks (counted by the caller). */
  onRefused?: (reason: string) => void;
  /** How long start() waits for the first connection. */
  connectTimeoutMs?: number;
  /**
   * While true (a wave's desired states are going out, and a little after), devices' messages are
   * handled at most `devicePublishesPerTurn` per turn of the event loop, in arrival order; each is
   * acknowledged to the broker once handled, so the rest wait in the broker (IngestGate).
   */
  holdDeviceIngest?: () => boolean;
  devicePublishesPerTurn?: number;
  /**
   * Metrics summaries taken from the broker and not committed yet, at most (default
   * MAX_UNCOMMITTED_METRICS): the one that reaches it is acknowledged, and the connection read
   * further, only once it is committed (with every one before it).
   */
  maxUncommittedMetrics?: number;
  /** MQTT keepalive in seconds (default 30). */
  keepaliveSeconds?: number;
}

/**
 * Why a bound: a summary is acknowledged to the broker when it is taken, before its group commit,
 * so that one commit holds many (the PUBACK of each waiting for its commit would let one through
 * per commit, the connection's next packet waiting behind it). Unbounded, summaries taken faster
 * than SQLite commits them (a fleet catching up after an outage, a day of windows per device, on
 * a slow disk) would all wait parsed in the coordinator's memory. With the bound the rest waits in
 * the broker, in the coordinator's session, and what a kill -9 can lose is at most this many. (In
 * bench:fleet's metrics phase the queue never nears it: taking a summary costs this thread as much
 * as committing it; BENCHMARKS.md, 2026-12-07 "late night".) One recorder batch
 * (metrics/recorder.ts): the one that fills it is committed at once.
 */
export const MAX_UNCOMMITTED_METRICS = 5_000;

export interface ExternalBroker {
  readonly mqtt: MqttClient;
  publish(topic: string, payload: Buffer, opts: { retain: boolean; qos: 0 | 1 }): Promise<void>;
  close(): Promise<void>;
}

/**
 * The coordinator's client id in the broker: derived from its password, so nobody without it can
 * guess it. MQTT gives a client id to whoever connects with it last (MQTT 3.1.1 section 3.1.4):
 * with a well-known id, any operator could take the coordinator's session, and the reports and
 * commands queued in it.
 */
export function coordinatorClientId(username: string, password: string): string {
  return `${username}-${createHash('sha256').update(`ota-coordinator-client-id\u0000${password}`).digest('hex').slice(0, 24)}`;
}

/** Whether `username`/`password` sign in to the broker now (one connection, closed at once). */
export async function signsIn(url: string, username: string, password: string, ca?: Buffer): Promise<boolean> {
  try {
    const c = await mqtt.connectAsync(url, {
      username,
      password,
      clientId: `${username}@start-check-${createHash('sha256').update(password).digest('hex').slice(0, 8)}`,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      ...(ca ? { ca } : {}),
    });
    await c.endAsync(true);
    return true;
  } catch {
    return false;
  }
}

/** CONNACK return codes of MQTT 3.1.1 section 3.2.2.3, as an operator reads them. */
function refusal(code: number | undefined, username: string): string | null {
  if (code === 4 || code === 5) {
    return `the broker refused user ${JSON.stringify(username)} (${code === 4 ? 'bad user name or password' : 'not authorized'}): check --broker-user and --broker-password-file against the client in the broker (ota-coordinator mosquitto-config writes both)`;
  }
  if (code === 2) return 'the broker refused the client id: it must accept "ota-coordinator"';
  return null;
}

export async function connectExternalBroker(options: ExternalBrokerOptions): Promise<ExternalBroker> {
  const { topics, logger, routes } = options;
  const client = mqtt.connect(options.url, {
    clientId: options.clientId,
    username: options.username,
    password: options.password,
    protocolVersion: 4,
    clean: false,
    keepalive: options.keepaliveSeconds ?? 30,
    reconnectPeriod: 1_000,
    connectTimeout: 10_000,
    // Made on every connect below (that also brings the retained reports again).
    resubscribe: false,
    // mqtt.js logs each packet several times through `debug`, which costs a call and a check
    // even when off (~2% of the thread in a burst of reports, profiled); with DEBUG set it logs.
    ...(process.env.DEBUG ? {} : { log: () => {} }),
    ...(options.ca ? { ca: options.ca } : {}),
  });
  options.onClient?.(client);
  let connects = 0;
  const filters = {
    [topics.allDevices('reported')]: { qos: 1 as const },
    [topics.allDevices('status')]: { qos: 1 as const },
    [topics.allDevices('metrics')]: { qos: 1 as const },
    [topics.allCommands()]: { qos: 0 as const },
  };

  const refuse = (topic: string, reason: string) => {
    logger.warn({ topic: topic.slice(0, 200), reason }, 'message refused');
    options.onRefused?.(reason);
  };

  const reply = (topic: string, r: CommandReply) =>
    client.publishAsync(topic, encodePayload(r), { qos: 1, retain: false }).then(
      () => {},
      (err: Error) => logger.warn({ topic, err: err.message }, 'reply not sent'),
    );

  /** Deletes a retained message (an empty retained publish, MQTT 3.1.1 section 3.3.1.3). */
  const unretain = (topic: string) =>
    client.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true }).then(
      () => {},
      (err: Error) => logger.warn({ topic, err: err.message }, 'retained message not deleted'),
    );

  const maxUncommittedMetrics = options.maxUncommittedMetrics ?? MAX_UNCOMMITTED_METRICS;
  let uncommittedMetrics = 0;

  /**
   * One message, checked and handed to its route. Checked when it is handled, not when it
   * arrived: a device's message may have waited in the IngestGate (its device removed meanwhile).
   * Returns, for a metrics summary that fills the bound (maxUncommittedMetrics), its commit: the
   * caller acknowledges it, and reads the connection further, only after that.
   */
  function onMessage(topic: string, payload: Buffer, retained: boolean): Promise<void> | undefined {
    // An empty retained message deletes one (MQTT 3.1.1 section 3.3.1.3): the coordinator's own,
    // when a device is removed. Nothing to ingest. And `$` topics are the broker's own (the
    // dynamic security plugin's answers, read by DynsecClient on this connection).
    if (payload.length === 0 || topic.startsWith('$')) return;
    let parsed: ReturnType<Topics['parse']>;
    try {
      parsed = topics.parse(topic);
    } catch (err) {
      refuse(topic, (err as Error).message);
      return;
    }
    let principal: Principal;
    let clientId: string;
    if (parsed.kind === 'reported' || parsed.kind === 'status' || parsed.kind === 'metrics') {
      if (!options.isDevice(parsed.deviceId)) {
        refuse(topic, `no device ${parsed.deviceId} is enrolled (removed, or never added)`);
        return;
      }
      principal = { kind: 'device', deviceId: parsed.deviceId };
      clientId = parsed.deviceId;
    } else if (parsed.kind === 'cmd') {
      if (retained) {
        // A command the broker kept (its ACL cannot refuse the retain flag) would run again at
        // every subscription: it ran when it was published, so it is deleted and not run.
        refuse(topic, 'a retained command is not run again; deleted from the broker');
        void unretain(topic);
        return;
      }
      if (parsed.operator === undefined) {
        refuse(
          topic,
          `through an external broker a command names its caller: publish to ${topics.prefix}/cmd/${parsed.op}/<your name>`,
        );
        return;
      }
      const operator = options.operator(parsed.operator);
      if (!operator) {
        refuse(topic, `no operator ${parsed.operator}`);
        return;
      }
      principal = operator;
      clientId = parsed.operator;
    } else {
      return; // not ingested (the broker's ACL lets no client publish there)
    }
    const checked = checkClientPayload(topics, options.maxPayloadBytes, topic, payload, principal, clientId);
    if ('problem' in checked) {
      refuse(topic, checked.problem);
      return;
    }
    const d = checked.decoded;
    try {
      switch (d.kind) {
        case 'reported':
          routes.report(d.deviceId, d.value);
          break;
        case 'status':
          routes.presence(d.deviceId, d.value.online, d.value);
          break;
        case 'metrics': {
          // Summaries are not retained (docs/metrics.md); one a device retained anyway is stored
          // (a summary counts once however often it arrives) and deleted from the broker.
          if (retained) void unretain(topic);
          const committed = routes.metrics(d.deviceId, d.value).then(
            () => {
              uncommittedMetrics--;
            },
            (err: Error) => {
              uncommittedMetrics--;
              logger.warn({ deviceId: d.deviceId, err: err.message }, 'metrics summary not stored');
            },
          );
          uncommittedMetrics++;
          return uncommittedMetrics >= maxUncommittedMetrics ? committed : undefined;
        }
        case 'cmd':
          void routes.command(d.op, d.value, principal).then((r) => reply(d.value.replyTo, r));
          break;
      }
    } catch (err) {
      logger.error({ topic, err: (err as Error).message }, 'message not processed');
    }
    return undefined;
  }

  const gate = new IngestGate(options.devicePublishesPerTurn ?? 200, options.holdDeviceIngest ?? (() => false));
  // mqtt.js emits 'message' and then calls handleMessage, whose callback sends the PUBACK (QoS 1)
  // and only then takes the next packet from the connection: messages are handled here, and each
  // is acknowledged once handled. A device's message waiting in the gate holds the connection's
  // later packets with it (mqtt.js handles them one by one), so the broker keeps the rest (it
  // sends at most max_inflight_messages unacknowledged) and nothing is reordered.
  client.handleMessage = (packet: IPublishPacket, callback: (error?: Error) => void) => {
    const topic = packet.topic;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    // The retain flag is set only on what the broker delivers from its retained store (at a
    // subscription); live messages arrive without it (MQTT 3.1.1 section 3.3.1.3).
    const retained = packet.retain;
    if (!isDeviceTopic(topic)) {
      // Operators' commands and the broker's own messages never wait behind devices' reports.
      onMessage(topic, payload, retained);
      acknowledge(callback);
      return;
    }
    const stream = client.stream;
    // Its connection ended while it waited: the broker sends it again on the next one (it was
    // not acknowledged), and an acknowledgement now would name a packet id of that new session.
    const sameConnection = () => packet.qos === 0 || (client.stream === stream && client.connected);
    gate.admit(() => {
      if (!sameConnection()) return;
      let committed: Promise<void> | undefined;
      try {
        committed = onMessage(topic, payload, retained);
      } finally {
        // A summary that filled the bound of uncommitted ones: acknowledged once committed.
        if (committed) void committed.then(() => sameConnection() && acknowledge(callback));
        else acknowledge(callback);
        if (packet.qos > 0) brokerAlive();
      }
    });
  };

  /** The PUBACK (or, at QoS 0, the next packet), written with the others of this turn. */
  function acknowledge(callback: (error?: Error) => void): void {
    batchWrites();
    callback();
  }

  /**
   * A publish from the broker was handled and acknowledged: the broker is alive, and so, to it, is
   * the coordinator (a PUBACK is a control packet, MQTT 3.1.1 section 3.1.2.10). Why tell mqtt.js:
   * it takes only acknowledgements of the coordinator's own publishes and PINGRESP as signs of a
   * live broker, and ends the connection ("Keepalive timeout") 1.5 keepalives after the last one.
   * While devices send and the coordinator has nothing of its own to publish (a metrics catch-up),
   * that is PINGRESP alone, which comes after the publishes in flight before it (up to
   * max_inflight_messages) from a broker busy with the devices: at 50,000 devices it came more
   * than 15 s after its PINGREQ, the connection was ended mid-stream, and the reconnect took every
   * retained report again and republished every desired state (BENCHMARKS.md, 2026-12-07 "late
   * night"). At most once a second, not for each: a reschedule is a timer cleared and set.
   */
  let rescheduledAt = 0;
  function brokerAlive(): void {
    const now = Date.now();
    if (now - rescheduledAt < 1_000) return;
    rescheduledAt = now;
    client.reschedulePing();
  }

  // mqtt.js writes a packet and uncorks on the next tick, and takes the next packet on the tick
  // after: each PUBACK was a system call of its own (and a TCP segment waking the broker), a
  // third of the profiled time in a burst of reports (BENCHMARKS.md). The connection is corked
  // until the end of this turn of the event loop, so every write of the turn (PUBACKs,
  // publishes) goes out in one writev; TLS included (a TLS socket is a stream like any other).
  let corked: Writable | null = null;
  function batchWrites(): void {
    const stream = client.stream as Writable | undefined;
    if (!stream || stream === corked || typeof stream.cork !== 'function') return;
    corked = stream;
    stream.cork();
    setImmediate(() => {
      if (corked === stream) corked = null;
      stream.uncork();
    });
  }

  function isDeviceTopic(topic: string): boolean {
    return topic.startsWith(devicePrefix);
  }
  const devicePrefix = `${topics.prefix}/devices/`;

  let firstConnect: (() => void) | null = null;
  let firstFailure: ((err: Error) => void) | null = null;
  client.on('connect', (connack) => {
    connects++;
    const again = connects > 1;
    client.subscribeAsync(filters).then(
      (granted) => {
        const denied = granted.filter((g) => g.qos === 128).map((g) => g.topic);
        if (denied.length > 0) {
          const err = new OtaError(
            'E_BROKER',
            `the broker refused the coordinator's subscriptions ${denied.join(', ')}: its client needs the role ota-coordinator (ota-coordinator mosquitto-config)`,
          );
          if (firstFailure) firstFailure(err);
          else logger.error({ err: err.message }, 'subscriptions refused');
          return;
        }
        logger.info({ broker: options.url, sessionPresent: connack.sessionPresent, again }, 'connected to the broker');
        if (again) options.onReconnect?.();
        firstConnect?.();
      },
      (err: Error) => {
        if (firstFailure) firstFailure(new OtaError('E_BROKER', `subscribing failed: ${err.message}`));
        else logger.warn({ err: err.message }, 'subscribing failed; retried at the next connect');
      },
    );
  });
  client.on('offline', () => logger.warn({ broker: options.url }, 'broker connection lost; reconnecting'));
  client.on('error', (err: Error & { code?: number | string }) => {
    const why = refusal(typeof err.code === 'number' ? err.code : undefined, options.username);
    if (firstFailure) firstFailure(new OtaError('E_BROKER', why ?? `cannot connect to ${options.url}: ${err.message}`));
    else logger.warn({ err: why ?? err.message }, 'broker connection error');
  });

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new OtaError(
              'E_BROKER',
              `no connection to the broker at ${options.url} within ${options.connectTimeoutMs ?? 30_000} ms: is it running and reachable?`,
            ),
          ),
        options.connectTimeoutMs ?? 30_000,
      );
      firstConnect = () => {
        clearTimeout(timer);
        resolve();
      };
      firstFailure = (err) => {
        clearTimeout(timer);
        reject(err);
      };
    });
  } catch (err) {
    await client.endAsync(true);
    throw err;
  } finally {
    firstConnect = null;
    firstFailure = null;
  }

  return {
    mqtt: client,
    publish: (topic, payload, opts) => client.publishAsync(topic, payload, opts).then(() => {}),
    close: () => client.endAsync(),
  };
}
