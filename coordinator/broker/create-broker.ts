import type http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { Aedes, type AuthenticateError, type Client, type ConnectPacket, type PublishPacket } from 'aedes';
import { createWebSocketStream, WebSocketServer } from 'ws';
import type { Metrics } from '../../shared/messages.js';
import { MAX_PAYLOAD_BYTES } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import { canPublish, canSubscribe, checkClientId } from './acl.js';
import { checkClientPayload, type DecodedPayload } from './payload-check.js';

export type { DecodedPayload } from './payload-check.js';

import { IngestGate } from './ingest-gate.js';
import {
  defaultMaxPacketBytes,
  describeOversized,
  MAX_FIXED_HEADER_BYTES,
  PacketSizeGuard,
} from './packet-size-guard.js';
import type { Authenticate, Principal } from './principal.js';
import { retainedIndexPersistence } from './retained-index.js';
import { DEFAULT_MAX_WATCHER_BUFFER_BYTES, detachWatcherDeliveries } from './watcher-delivery.js';
import { coalesceWebSocketWrites } from './websocket-frames.js';

/**
 * The coordinator's embedded MQTT 3.1.1 broker (Aedes 1.x) with the ACL of design section 3.
 *
 * - CONNECT: username and password are required and checked with `authenticate`; the client id
 *   must fit the principal (acl.ts) and a will must be the device's own status. A refusal is a
 *   CONNACK with return code 4 (bad user name or password) or 5 (not authorized).
 * - PUBLISH: topic ACL, payload size cap, payload schema (and the reported deviceId, the command
 *   replyTo). MQTT 3.1.1 has no way to tell a client its publish was refused (MQTT-3.3.5-2):
 *   Aedes closes the connection, the message is neither delivered nor retained, and everybody
 *   else is served as before.
 * - SUBSCRIBE: a refused filter is granted 0x80 in the SUBACK and nothing is delivered on it;
 *   the connection stays up.
 *
 * The coordinator publishes desired states, rollout summaries, audit events and replies itself
 * with `publish()`, which bypasses the ACL.
 */

export interface BrokerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface AuthFailure {
  clientId: string;
  username: string | null;
  reason: string;
  /** The peer's address as the connection has it (never a header such as X-Forwarded-For). */
  remoteAddress: string;
}

/** A connection closed because it announced a packet over the size cap. */
export interface OversizedConnection {
  remoteAddress: string;
  transport: 'mqtt' | 'websocket';
  reason: string;
}

export interface BrokerOptions {
  topics: Topics;
  authenticate: Authenticate;
  logger: BrokerLogger;
  /** Cap on every client payload, in bytes (default 256 KiB, shared/payload.ts). */
  maxPayloadBytes?: number;
  onAuthFailure?: (info: AuthFailure) => void;
  /**
   * How long to hold back the refusal (the CONNACK) of a CONNECT just refused, in ms (asked
   * after onAuthFailure, with the number of refusals held right now). Only refusals of bad
   * credentials (CONNACK 4) are ever held: they are what guessing produces. Good credentials are
   * answered at once, and so is a refusal of a principal that proved its token (CONNACK 5: a
   * client id or will not its own), whom slowing down protects nothing from.
   */
  refusalDelayMs?: (info: AuthFailure, heldNow: number) => number;
  /**
   * Cap on a packet's remaining length (MQTT 3.1.1 section 2.2.3), checked from its fixed header
   * before any of its body is buffered. Default: maxPayloadBytes + room for a topic (packet-size-guard.ts).
   */
  maxPacketBytes?: number;
  onOversizedPacket?: (info: OversizedConnection) => void;
  /** A connection that has not completed CONNECT this long after it opened is closed (default 30 s). */
  connectTimeoutMs?: number;
  /** An extra payload check after the built-in ones: the reason to refuse, or null. */
  validate?: (topic: string, payload: Buffer, p: Principal, clientId: string) => string | null;
  /**
   * Stores a device's metrics summary; the PUBACK waits for it (Aedes acknowledges a QoS 1 publish
   * once authorizePublish answers, aedes/lib/handlers/publish.js), so a summary the agent saw
   * acknowledged is committed: the agent deletes it from its outbox then (docs/metrics.md). A
   * rejection refuses the publish, which closes the connection (MQTT 3.1.1 has no negative
   * PUBACK); the agent keeps the summary and sends it again after reconnecting.
   */
  acceptMetrics?: (deviceId: string, metrics: Metrics) => Promise<void>;
  /** While true, device publishes are handled at most `devicePublishesPerTurn` per turn (IngestGate). */
  holdDeviceIngest?: () => boolean;
  /** Default 2,000. */
  devicePublishesPerTurn?: number;
  /**
   * An operator connection that has this much of its deliveries not yet read is closed
   * (watcher-delivery.ts; default 16 MiB). Deliveries to operators never hold back publishers.
   */
  maxWatcherBufferBytes?: number;
  onSlowWatcher?: (info: { clientId: string; username: string; bufferedBytes: number }) => void;
}

export interface Broker {
  readonly aedes: Aedes;
  /** The cap on a packet's remaining length (BrokerOptions.maxPacketBytes). */
  readonly maxPacketBytes: number;
  /** Counts and logs a connection closed for its size by another layer (a WebSocket message over the cap). */
  oversized(info: OversizedConnection): void;
  /** Listens for MQTT over TCP (or TLS when `tls` is given); port 0 picks a free port. */
  listen(port: number, host: string, tls?: { cert: Buffer; key: Buffer }): Promise<{ port: number }>;
  /** Serves one connection made elsewhere (e.g. a WebSocket stream). */
  handleStream(stream: Duplex, req?: http.IncomingMessage): void;
  /** The principal of a connected client, by client id. */
  principalOf(clientId: string): Principal | undefined;
  /**
   * The principal a connection authenticated as, also after it closed (its will and its
   * 'clientDisconnect' arrive then): keyed by the connection, not the id, which a newer session
   * may hold by now.
   */
  principalFor(client: Client): Principal | undefined;
  /** True when `client` is the newest session of its id, or no session of that id is registered. */
  isNewestSession(client: Client): boolean;
  /**
   * Publishes as the coordinator, bypassing the ACL. With `onlyTo`, the message reaches that one
   * connection and no other subscriber (a reply that carries a new token goes to the session
   * that asked, not to another session of the same operator reading the same reply topic).
   */
  publish(
    topic: string,
    payload: Buffer,
    opts: { retain: boolean; qos: 0 | 1; onlyTo?: Client | undefined },
  ): Promise<void>;
  /**
   * Ends every session of a device or an operator at once, and makes any connection that
   * authenticated as it before this call powerless: no publish, subscribe or delivery, even one
   * not registered yet (a CONNECT in flight) or one whose close raced with this call. Call it
   * right after the store change commits (a device removed, an operator removed or
   * its role changed): a new CONNECT authenticates against the store as it is now. Returns how
   * many connections it closed.
   */
  cutSessions(who: SessionOwner): number;
  /**
   * What the broker decoded while checking a client's payload (keyed by the payload Buffer, which
   * Aedes passes on unchanged to its 'publish' event), so the coordinator does not parse and
   * validate every report twice. Undefined when the broker did not decode it (e.g. a will).
   */
  decoded(payload: unknown): DecodedPayload | undefined;
  /** Disconnects every client and closes the listeners. */
  close(): Promise<void>;
}

/** Whose sessions Broker.cutSessions ends. */
export type SessionOwner = { kind: 'device'; deviceId: string } | { kind: 'operator'; name: string };

const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;
const SERVER_UNAVAILABLE = 3;

function authError(returnCode: 3 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function ownerKey(p: Principal | SessionOwner): string {
  return p.kind === 'device' ? `device\u0000${p.deviceId}` : `operator\u0000${p.name}`;
}

function samePrincipal(a: Principal, b: Principal): boolean {
  if (a.kind === 'device') return b.kind === 'device' && a.deviceId === b.deviceId;
  return b.kind === 'operator' && a.name === b.name;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The peer of a connection: the socket's address (an IPv4-mapped IPv6 address as IPv4). */
function peerAddress(stream: Duplex, req?: http.IncomingMessage): string {
  const address = (req?.socket ?? (stream as Partial<net.Socket>)).remoteAddress;
  if (!address) return '(unknown)';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

type Will = NonNullable<ConnectPacket['will']>;

export async function createBroker(options: BrokerOptions): Promise<Broker> {
  const { topics, logger } = options;
  const maxBytes = options.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
  const maxPacketBytes = options.maxPacketBytes ?? defaultMaxPacketBytes(maxBytes);
  new PacketSizeGuard(maxPacketBytes); // a bad option fails here, not at the first connection
  /** Peer addresses by connection, recorded when it is handed to Aedes. */
  const peers = new WeakMap<Duplex, string>();
  /** Refusals held back (refusalDelayMs), cleared when the broker closes. */
  const heldRefusals = new Set<NodeJS.Timeout>();

  /** Principals by connection, set when CONNECT is accepted. */
  const principals = new WeakMap<Client, Principal>();
  /** Wills as sent in CONNECT, read back when authenticating. */
  const wills = new WeakMap<Client, Will>();
  /** Registered clients by id, for principalOf(). */
  const live = new Map<string, { client: Client; principal: Principal }>();
  /**
   * Sessions ended by cutSessions: each connection's authentication gets the next number, and a
   * cut records the last number handed out, for its device or operator. A connection whose
   * number is at or below its owner's cut authenticated with credentials since removed or
   * changed: it may do nothing more, whatever Aedes still has in flight for it. (Entries stay:
   * one per device or operator ever cut, a few dozen bytes each.)
   */
  let authentications = 0;
  const authenticatedAs = new WeakMap<Client, { key: string; n: number }>();
  const cutAt = new Map<string, number>();
  function isCut(client: Client): boolean {
    if (cutAt.size === 0) return false;
    const auth = authenticatedAs.get(client);
    if (!auth) return true;
    const cut = cutAt.get(auth.key);
    return cut !== undefined && auth.n <= cut;
  }
  const CUT_REASON = 'the session was ended: its device or operator was removed or given another role';
  /** Coordinator publishes meant for one connection only (Broker.publish onlyTo), by payload. */
  const onlyTo = new WeakMap<Buffer, Client>();

  /** Decoded payloads of accepted publishes, until the payload Buffer is garbage. */
  const decodedPayloads = new WeakMap<Buffer, DecodedPayload>();

  /** The reason to refuse a payload on `topic` (already allowed by the ACL), or null. */
  function checkPayload(topic: string, payload: Buffer, p: Principal, clientId: string): string | null {
    const checked = checkClientPayload(topics, maxBytes, topic, payload, p, clientId);
    if ('problem' in checked) return checked.problem;
    if (options.validate) {
      let problem: string | null;
      try {
        problem = options.validate(topic, payload, p, clientId);
      } catch (err) {
        return `payload check failed: ${errorMessage(err)}`;
      }
      if (problem !== null) return problem;
    }
    decodedPayloads.set(payload, checked.decoded);
    return null;
  }

  const gate = new IngestGate(options.devicePublishesPerTurn ?? 2_000, options.holdDeviceIngest ?? (() => false));

  /** The ACL and payload checks of a publish by an authenticated client, answered to Aedes. */
  function authorizeNow(
    client: Client,
    principal: Principal,
    packet: PublishPacket,
    callback: (error?: Error | null) => void,
  ): void {
    // Checked here, when the publish is handled (a device's may have waited in the IngestGate).
    if (isCut(client)) {
      refusePublish(client.id, packet, CUT_REASON, callback);
      return;
    }
    const allowed = canPublish(principal, client.id, packet.topic, { retain: packet.retain, will: false }, topics);
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const problem = allowed === true ? checkPayload(packet.topic, payload, principal, client.id) : allowed;
    if (problem !== null) {
      refusePublish(client.id, packet, problem, callback);
      return;
    }
    const decoded = decodedPayloads.get(payload);
    if (decoded?.kind === 'metrics' && options.acceptMetrics) {
      options.acceptMetrics(decoded.deviceId, decoded.value).then(
        () => callback(null),
        (err: Error) => refusePublish(client.id, packet, `metrics not stored: ${err.message}`, callback),
      );
      return;
    }
    callback(null);
  }

  function refusePublish(
    clientId: string,
    packet: PublishPacket,
    reason: string,
    callback: (error?: Error | null) => void,
  ): void {
    logger.warn({ clientId, topic: packet.topic.slice(0, 200), reason }, 'mqtt publish refused');
    callback(new Error(reason));
  }

  const aedes = await Aedes.createBroker({
    persistence: retainedIndexPersistence(),
    // No queue in mqemitter (0 = unbounded; Aedes's default is 100): a queued message is started
    // synchronously when one finishes, so thousands queued at once (a wave's desired states while
    // reports stream in) overflowed the call stack and killed the coordinator. The coordinator's
    // own publishes are bounded by OrderedPublisher's window instead; device publishes by what
    // each connection has buffered (Aedes reads a connection again once its parsed packets are handled).
    concurrency: 0,
    connectTimeout: options.connectTimeoutMs ?? 30_000,
    preConnect(client, packet, callback) {
      if (packet.will) wills.set(client, packet.will);
      disableCounterDedupe(client);
      callback(null, true);
    },

    authenticate(client, username, password, done) {
      const clientId = client.id;
      const remoteAddress = peers.get(client.conn as Duplex) ?? '(unknown)';
      const refuse = (returnCode: 3 | 4 | 5, reason: string) => {
        const info: AuthFailure = { clientId, username: username ?? null, reason, remoteAddress };
        let delayMs = 0;
        try {
          options.onAuthFailure?.(info);
          if (returnCode === BAD_USERNAME_OR_PASSWORD) delayMs = options.refusalDelayMs?.(info, heldRefusals.size) ?? 0;
        } catch (err) {
          logger.error({ err: errorMessage(err) }, 'onAuthFailure or refusalDelayMs threw');
        }
        const hold = delayMs > 0;
        logger.warn(
          {
            clientId: clientId.slice(0, 128),
            username: username?.slice(0, 128) ?? null,
            remoteAddress,
            returnCode,
            reason,
            ...(hold ? { refusalHeldMs: delayMs } : {}),
          },
          'mqtt connection refused',
        );
        const answer = () => done(authError(returnCode, reason), null);
        if (!hold) {
          answer();
          return;
        }
        // The CONNACK refusal is held back (the client waits, reading nothing more meanwhile);
        // Aedes drops the answer when the connection or the broker closed in between.
        const timer = setTimeout(() => {
          heldRefusals.delete(timer);
          answer();
        }, delayMs);
        heldRefusals.add(timer);
      };
      if (!username || !password || password.length === 0) {
        refuse(BAD_USERNAME_OR_PASSWORD, 'username and password are required');
        return;
      }
      let principal: Principal | null;
      try {
        principal = options.authenticate(username, password.toString('utf8'));
      } catch (err) {
        logger.error({ clientId, username, err: errorMessage(err) }, 'authenticate threw');
        refuse(SERVER_UNAVAILABLE, 'authentication is unavailable');
        return;
      }
      if (!principal) {
        refuse(BAD_USERNAME_OR_PASSWORD, 'unknown user or wrong token');
        return;
      }
      const idOk = checkClientId(principal, clientId);
      if (idOk !== true) {
        refuse(NOT_AUTHORIZED, idOk);
        return;
      }
      // Only a device may take over a live session of another principal, and only its own id.
      const holder = live.get(clientId);
      if (holder && !samePrincipal(holder.principal, principal) && principal.kind !== 'device') {
        refuse(NOT_AUTHORIZED, `client id ${clientId} is in use by another principal`);
        return;
      }
      const will = wills.get(client);
      if (will) {
        const willOk = canPublish(
          principal,
          clientId,
          will.topic,
          { retain: Boolean(will.retain), will: true },
          topics,
        );
        if (willOk !== true) {
          refuse(NOT_AUTHORIZED, `will refused: ${willOk}`);
          return;
        }
        const payloadProblem = checkPayload(will.topic, Buffer.from(will.payload), principal, clientId);
        if (payloadProblem !== null) {
          refuse(NOT_AUTHORIZED, `will refused: ${payloadProblem}`);
          return;
        }
      }
      principals.set(client, principal);
      authenticatedAs.set(client, { key: ownerKey(principal), n: ++authentications });
      if (principal.kind === 'operator') {
        detachWatcherDeliveries(client, {
          maxBufferedBytes: options.maxWatcherBufferBytes ?? DEFAULT_MAX_WATCHER_BUFFER_BYTES,
          onCut: (bufferedBytes) => {
            logger.warn(
              { clientId: clientId.slice(0, 128), username: principal.name, bufferedBytes },
              'operator connection closed: it read too slowly to keep up (it reconnects and loads again)',
            );
            options.onSlowWatcher?.({ clientId, username: principal.name, bufferedBytes });
          },
        });
      }
      done(null, true);
    },

    authorizePublish(client, packet, callback) {
      if (client === null) {
        // A will left by a connection of an earlier broker process; ours are checked at connect.
        refusePublish('(none)', packet, 'will without a live client', callback);
        return;
      }
      const principal = principals.get(client);
      if (!principal) {
        refusePublish(client.id, packet, 'client is not authenticated', callback);
        return;
      }
      // Devices' publishes wait their turn (IngestGate); operators' commands never queue behind them.
      if (principal.kind === 'device') gate.admit(() => authorizeNow(client, principal, packet, callback));
      else authorizeNow(client, principal, packet, callback);
    },

    authorizeSubscribe(client, subscription, callback) {
      const principal = principals.get(client);
      const allowed = !principal
        ? 'client is not authenticated'
        : isCut(client)
          ? CUT_REASON
          : canSubscribe(principal, client.id, subscription.topic, topics);
      if (allowed !== true) {
        logger.warn(
          { clientId: client.id, filter: subscription.topic.slice(0, 200), reason: allowed },
          'mqtt subscribe refused',
        );
        callback(null, null);
        return;
      }
      callback(null, subscription);
    },

    // Called for every subscriber of every message, so kept to two map lookups.
    authorizeForward(client, packet) {
      if (isCut(client)) return null;
      const only = Buffer.isBuffer(packet.payload) ? onlyTo.get(packet.payload) : undefined;
      if (only !== undefined && only !== client) return null;
      // The receiver must be allowed this topic now. A persistent session's queue and stored
      // subscriptions are kept by client id, so a client id that changed hands (an operator
      // removed, a device enrolled with its name) would otherwise be handed what was queued for
      // the previous holder: Aedes checks queued messages with this hook only (handlers/connect.js).
      const principal = principals.get(client);
      if (!principal) return null;
      if (principal.kind === 'device') return packet.topic === topics.desired(principal.deviceId) ? packet : null;
      return canSubscribe(principal, client.id, packet.topic, topics) === true ? packet : null;
    },
  });

  aedes.on('client', (client) => {
    const principal = principals.get(client);
    if (!principal) return;
    if (isCut(client)) {
      // Authenticated before a cut, registered after it.
      client.close();
      return;
    }
    live.set(client.id, { client, principal });
  });
  aedes.on('clientDisconnect', (client) => {
    if (live.get(client.id)?.client === client) live.delete(client.id);
  });
  aedes.on('clientError', (client, err) => {
    logger.debug({ clientId: client.id, err: err.message }, 'mqtt client error');
  });
  aedes.on('connectionError', (client, err) => {
    logger.debug({ clientId: client.id, err: err.message }, 'mqtt connection error');
  });

  const servers = new Set<net.Server>();
  const sockets = new Set<net.Socket>();
  let closed: Promise<void> | null = null;

  function oversized(info: OversizedConnection): void {
    logger.warn(
      { remoteAddress: info.remoteAddress, transport: info.transport, reason: info.reason },
      'mqtt connection closed: packet over the size limit',
    );
    try {
      options.onOversizedPacket?.(info);
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'onOversizedPacket threw');
    }
  }

  /**
   * Checks every packet's fixed header as the bytes arrive, before mqtt-packet buffers the body
   * (packet-size-guard.ts), and closes the connection at the first packet over the cap. It sits
   * on the stream's push(), where the transport hands its bytes to the stream (net, tls and ws's
   * createWebSocketStream all feed their Duplex that way), so it sees every byte in order
   * whatever way Aedes reads them, adds no copy and keeps nothing.
   */
  function guardPackets(stream: Duplex, remoteAddress: string, transport: OversizedConnection['transport']): void {
    const guard = new PacketSizeGuard(maxPacketBytes);
    const push = stream.push.bind(stream);
    stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
      if (chunk instanceof Uint8Array) {
        const problem = guard.push(chunk);
        if (problem) {
          if (!stream.destroyed) {
            oversized({ remoteAddress, transport, reason: describeOversized(problem) });
            stream.destroy();
          }
          return false;
        }
      }
      return push(chunk, encoding);
    };
  }

  function handleStream(stream: Duplex, req?: http.IncomingMessage): void {
    if (aedes.closed) {
      stream.destroy();
      return;
    }
    const remoteAddress = peerAddress(stream, req);
    peers.set(stream, remoteAddress);
    guardPackets(stream, remoteAddress, req ? 'websocket' : 'mqtt');
    aedes.handle(stream, req);
  }

  async function listen(port: number, host: string, tlsOptions?: { cert: Buffer; key: Buffer }) {
    if (closed) throw new Error('broker is closed');
    const onSocket = (socket: net.Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    };
    const server = tlsOptions
      ? tls.createServer({ cert: tlsOptions.cert, key: tlsOptions.key }, (socket) => handleStream(socket))
      : net.createServer((socket) => handleStream(socket));
    server.on('connection', onSocket);
    server.on('tlsClientError', (err: Error) => logger.debug({ err: err.message }, 'mqtt tls handshake failed'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => logger.error({ err: err.message }, 'mqtt listener error'));
    servers.add(server);
    const bound = (server.address() as net.AddressInfo).port;
    logger.info({ host, port: bound, tls: Boolean(tlsOptions) }, 'mqtt listening');
    return { port: bound };
  }

  function publish(
    topic: string,
    payload: Buffer,
    opts: { retain: boolean; qos: 0 | 1; onlyTo?: Client | undefined },
  ): Promise<void> {
    if (opts.onlyTo) {
      // Aedes hands every subscriber (and an offline session's queue) the same payload Buffer.
      if (opts.retain) return Promise.reject(new Error('a message for one connection cannot be retained'));
      onlyTo.set(payload, opts.onlyTo);
    }
    const packet: PublishPacket = { cmd: 'publish', topic, payload, qos: opts.qos, retain: opts.retain, dup: false };
    return new Promise((resolve, reject) => {
      aedes.publish(packet, (err) => (err ? reject(err) : resolve()));
    });
  }

  function cutSessions(who: SessionOwner): number {
    const key = ownerKey(who);
    cutAt.set(key, authentications);
    // A device's only client id is its id; an operator's are its name and name@... (acl.ts).
    const candidates = who.kind === 'device' ? [live.get(who.deviceId)] : [...live.values()];
    const holders = candidates.filter((h) => h !== undefined && ownerKey(h.principal) === key) as {
      client: Client;
      principal: Principal;
    }[];
    for (const { client } of holders) {
      live.delete(client.id);
      client.close();
    }
    if (holders.length > 0)
      logger.info({ owner: key.replace('\u0000', ' '), sessions: holders.length }, 'sessions ended');
    return holders.length;
  }

  async function doClose(): Promise<void> {
    const stopped = [...servers].map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const timer of heldRefusals) clearTimeout(timer);
    heldRefusals.clear();
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    // Aedes closed its clients; drop whatever is left (e.g. a connection that never sent CONNECT).
    for (const socket of sockets) socket.destroy();
    await Promise.all(stopped);
    servers.clear();
    live.clear();
  }

  return {
    aedes,
    maxPacketBytes,
    oversized,
    listen,
    handleStream,
    principalOf: (clientId) => live.get(clientId)?.principal,
    // A connection cut by cutSessions speaks for nobody: its will, its last publishes still in
    // flight and its disconnect say nothing about the device or operator that has the id now.
    principalFor: (client) => (isCut(client) ? undefined : principals.get(client)),
    isNewestSession: (client) => {
      const holder = live.get(client.id);
      return holder === undefined || holder.client === client;
    },
    publish,
    cutSessions,
    decoded: (payload) => (Buffer.isBuffer(payload) ? decodedPayloads.get(payload) : undefined),
    close() {
      closed ??= doClose();
      return closed;
    },
  };
}

/**
 * Aedes drops a message for a subscriber when a message published AFTER it (higher broker
 * counter) reached that subscriber first (lib/client.js `dedupe`, meant for overlapping
 * subscriptions such as `a/#` + `a/b`). Messages do overtake each other: a retained publish
 * awaits the retained store, a non-retained one does not, so a rollout summary published just
 * before an audit event was silently lost for a client subscribed to both (moscajs/aedes #955,
 * #994, open). Lost messages are worse than duplicates: MQTT 3.1.1 section 3.3.5 allows the
 * server to deliver one copy per matching subscription, so with overlapping subscriptions a
 * client may now see a message twice, and never misses one.
 */
const NO_DEDUPE: Record<string, number> = new Proxy(
  {},
  {
    get: () => 0,
    set: () => true,
    deleteProperty: () => true,
  },
);

function disableCounterDedupe(client: Client): void {
  (client as unknown as { duplicates: Record<string, number> }).duplicates = NO_DEDUPE;
}

/**
 * Serves MQTT over WebSocket on `path` of an HTTP(S) server (e.g. Fastify's). Upgrades on other
 * paths are left to other listeners, or refused when there are none. Closing the broker closes
 * the WebSocket connections too.
 */
export function attachWebSocket(httpServer: http.Server, broker: Broker, path = '/mqtt'): WebSocketServer {
  // ws's own cap is 100 MiB per message by default: a message may carry at most one packet of the
  // broker's cap (with its fixed header). ws refuses a larger message from its frame header
  // (close code 1009), before buffering it; a packet spread over many small messages is the
  // broker's packet guard's to refuse.
  const maxPayload = broker.maxPacketBytes + MAX_FIXED_HEADER_BYTES;
  const wss = new WebSocketServer({ noServer: true, maxPayload });
  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    // Node's parser lets request targets through that URL cannot parse (`GET http://[ HTTP/1.1`):
    // only the path before any query matters here, and nothing may throw (no listener above us).
    const target = req.url ?? '/';
    const pathname = target.startsWith('/') ? (target.split('?')[0] ?? '') : null;
    if (pathname !== path) {
      if (httpServer.listenerCount('upgrade') <= 1) socket.destroy();
      return;
    }
    if (broker.aedes.closed) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      // On a protocol error (a message over maxPayload included) ws starts a closing handshake
      // and reads and discards whatever the peer still sends until it answers or 30 s pass;
      // the stream errors only then. Terminated at once instead.
      ws.on('error', (err: Error & { code?: string }) => {
        if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
          const remoteAddress = peerAddress(ws as unknown as Duplex, req);
          broker.oversized({
            remoteAddress,
            transport: 'websocket',
            reason: `a WebSocket message over ${maxPayload} bytes`,
          });
        }
        ws.terminate();
      });
      const stream = createWebSocketStream(ws);
      coalesceWebSocketWrites(stream, ws);
      stream.on('error', () => ws.terminate());
      broker.handleStream(stream, req);
    });
  };
  httpServer.on('upgrade', onUpgrade);
  broker.aedes.once('closed', () => {
    httpServer.off('upgrade', onUpgrade);
    for (const ws of wss.clients) ws.terminate();
    wss.close();
  });
  return wss;
}
