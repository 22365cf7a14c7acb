import mqtt, { type MqttClient } from 'mqtt';
import { isSafeId } from '../../shared/names.js';

/**
 * The page's one connection to the coordinator (design section 10): an MQTT client of its broker
 * over the WebSocket at `/mqtt`, logged in as the operator. It reads the same topics as
 * `mosquitto_sub` and asks the same command API as otactl, so the broker's ACL and the roles
 * apply unchanged: there is no second API to secure.
 *
 * Client id `<user>@dashboard-<random>` (an operator's client ids are its name, `@` and a suffix:
 * docs/commands.md); clean session, so nothing is queued for a closed tab.
 */

export type LinkState =
  | { kind: 'connecting' }
  /** Connected and subscribed: live messages flow. */
  | { kind: 'live' }
  /** The connection dropped (or never came up): mqtt.js retries every RETRY_MS. */
  | { kind: 'reconnecting'; everConnected: boolean; reason: string }
  /** The broker refused the credentials: no retry, back to sign-in with this message. */
  | { kind: 'refused'; message: string; everConnected: boolean };

export interface ConnectionOptions {
  url: string;
  user: string;
  token: string;
  prefix: string;
  /**
   * `retained`: the broker sent a stored message because of a new subscription (MQTT 3.1.1
   * section 3.3.1.3: RETAIN is 1 then, 0 on a message forwarded as it is published).
   */
  onMessage: (topic: string, text: string, retained: boolean) => void;
  onState: (state: LinkState) => void;
  /** Each time the broker accepted the connection, before subscribing (FleetState.resetLive). */
  onConnected?: () => void;
}

export class CommandError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const RETRY_MS = 2_000;
/** A command with no reply by then is reported as failed (its effect, if any, shows in the audit). */
const REPLY_TIMEOUT_MS = 20_000;

interface Pending {
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

function randomSuffix(): string {
  const bytes = new Uint8Array(4);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** MQTT 3.1.1 section 3.2.2.3: 4 is a bad user name or password, 5 not authorized. */
function refusalMessage(code: number | undefined): string | null {
  if (code === 4) return 'Wrong user or token: the coordinator refused them. Check both and sign in again.';
  if (code === 5) return 'This user may not connect (not authorized). Ask an admin to check the account.';
  return null;
}

export class Connection {
  readonly clientId: string;
  private readonly client: MqttClient;
  private readonly pending = new Map<string, Pending>();
  private readonly replyTo: string;
  private everConnected = false;
  private closed = false;
  private counter = 0;
  /** The devices whose own topics the page wants (subscribed to while live). */
  private watched = new Set<string>();
  /** Those subscribed to on this connection (a clean session: none after a reconnect). */
  private subscribed = new Set<string>();
  state: LinkState = { kind: 'connecting' };

  constructor(private readonly o: ConnectionOptions) {
    this.clientId = `${o.user}@dashboard-${randomSuffix()}`;
    // Under the operator's own name, and commands on cmd/{op}/{user}: the form an external
    // broker's ACL grants per operator (docs/brokers.md); the embedded broker takes it too.
    this.replyTo = `${o.prefix}/reply/${o.user}/${this.clientId.slice(o.user.length + 1)}`;
    this.client = mqtt.connect(o.url, {
      clientId: this.clientId,
      username: o.user,
      password: o.token,
      protocolVersion: 4,
      clean: true,
      // Native timers: mqtt.js's default runs its timers in a Worker made from a blob: URL, which
      // the page's CSP forbids. A background tab's timers may fire only once a minute (Chrome's
      // intensive throttling), so the keepalive is 60 s: the broker waits 1.5 times that.
      timerVariant: 'native',
      keepalive: 60,
      reconnectPeriod: RETRY_MS,
      // Above the 30 s a refusal of bad credentials may be held (docs/security.md): a wrong
      // token then still reads "wrong user or token", not "cannot reach".
      connectTimeout: 35_000,
      // Subscriptions are made on every connect, below, before the state turns live.
      resubscribe: false,
      // Nothing is sent while offline: a click on approve must not go out minutes later.
      queueQoSZero: false,
    });
    this.client.on('connect', () => void this.onConnect());
    this.client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet.retain));
    this.client.on('error', (err) => this.onError(err as Error & { code?: number }));
    this.client.on('close', () => this.onDown('the connection closed'));
    this.client.on('offline', () => this.onDown('offline'));
  }

  private set(state: LinkState): void {
    this.state = state;
    this.o.onState(state);
  }

  private async onConnect(): Promise<void> {
    const p = this.o.prefix;
    this.subscribed = new Set();
    this.o.onConnected?.();
    try {
      // Replies at QoS 1; the live topics at QoS 0: the page reads everything again at each
      // connect (retained messages and snapshots), so what QoS 1 would add (redelivery after a
      // drop) it does not need, and the broker then keeps no in-flight state and gets no PUBACK
      // per report (45,000 in a 9,000-device wave).
      await this.client.subscribeAsync(this.replyTo, { qos: 1 });
      // Not `devices/+/...`: the page reads the coordinator's summaries (`rollouts/+`, `fleet`)
      // for counts, and the own topics of the devices on screen only (watch, below).
      await this.client.subscribeAsync([`${p}/rollouts/+`, `${p}/audit`, `${p}/fleet`], { qos: 0 });
    } catch (err) {
      this.onDown(`subscribing failed: ${(err as Error).message}`);
      return;
    }
    this.everConnected = true;
    this.set({ kind: 'live' });
    // What the views asked for meanwhile too (watch() only records it until now).
    this.syncWatched();
  }

  private deviceTopics(id: string): string[] {
    return [`${this.o.prefix}/devices/${id}/reported`, `${this.o.prefix}/devices/${id}/status`];
  }

  /**
   * Follows these devices' own topics (the rows on screen) and no others': subscribes to the new
   * ones, leaves the rest. While not live only the wish changes; going live subscribes to all of
   * it. A subscription's retained messages bring each device's newest report and status at once.
   * An id that is not a safe id (a device URL typed by hand: `#/devices/%2B`) is never put in a
   * topic.
   */
  watch(ids: Iterable<string>): void {
    this.watched = new Set([...ids].filter(isSafeId));
    if (this.state.kind === 'live') this.syncWatched();
  }

  /**
   * Brings the subscriptions of this connection to what is wanted. The bookkeeping is synchronous
   * and the broker handles one connection's packets in order (MQTT 3.1.1 section 4.6), so two
   * calls in a row can neither lose nor repeat a change.
   */
  private syncWatched(): void {
    const add = [...this.watched].filter((id) => !this.subscribed.has(id));
    const drop = [...this.subscribed].filter((id) => !this.watched.has(id));
    for (const id of add) this.subscribed.add(id);
    for (const id of drop) this.subscribed.delete(id);
    // A refusal is not the link going down: that row shows the snapshot, the rest of the page is live.
    const ignore = () => {};
    if (drop.length > 0)
      this.client.unsubscribe(
        drop.flatMap((id) => this.deviceTopics(id)),
        ignore,
      );
    if (add.length > 0)
      this.client.subscribe(
        add.flatMap((id) => this.deviceTopics(id)),
        { qos: 0 },
        ignore,
      );
  }

  private onMessage(topic: string, payload: Uint8Array, retained: boolean): void {
    const text = new TextDecoder().decode(payload);
    if (topic.startsWith(`${this.o.prefix}/reply/`)) {
      this.onReply(text);
      return;
    }
    this.o.onMessage(topic, text, retained);
  }

  private onReply(text: string): void {
    let reply: { correlationId?: string; ok?: boolean; result?: unknown; error?: { code: string; message: string } };
    try {
      reply = JSON.parse(text);
    } catch {
      return;
    }
    const pending = reply.correlationId === undefined ? undefined : this.pending.get(reply.correlationId);
    if (!pending || reply.correlationId === undefined) return;
    this.pending.delete(reply.correlationId);
    clearTimeout(pending.timer);
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new CommandError(reply.error?.code ?? 'E_INTERNAL', reply.error?.message ?? 'refused'));
  }

  private onError(err: Error & { code?: number }): void {
    const refused = refusalMessage(err.code);
    if (refused !== null) {
      const message = this.everConnected
        ? `The coordinator no longer accepts this user's token (removed, or its role or token changed). Sign in again. (${refused})`
        : refused;
      this.shutdown();
      this.set({ kind: 'refused', message, everConnected: this.everConnected });
      return;
    }
    this.onDown(err.message);
  }

  private onDown(reason: string): void {
    if (this.closed || this.state.kind === 'refused') return;
    this.failPending(
      `the connection to the coordinator was lost (${reason}); nothing more is known about this command: check the audit log`,
    );
    if (this.state.kind === 'reconnecting' && this.state.reason === reason) return;
    this.set({ kind: 'reconnecting', everConnected: this.everConnected, reason });
  }

  private failPending(message: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new CommandError('E_CONNECTION', message));
      this.pending.delete(id);
    }
  }

  /** One command of the API (docs/commands.md); rejects with a CommandError naming the code. */
  ask<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.state.kind !== 'live') {
      return Promise.reject(new CommandError('E_CONNECTION', 'not connected to the coordinator: wait for "live"'));
    }
    const correlationId = `d${++this.counter}-${randomSuffix()}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(correlationId);
        reject(new CommandError('E_TIMEOUT', `no reply to ${op} within ${REPLY_TIMEOUT_MS / 1000} s`));
      }, REPLY_TIMEOUT_MS);
      this.pending.set(correlationId, { resolve: resolve as (r: unknown) => void, reject, timer });
      const body = JSON.stringify({ correlationId, replyTo: this.replyTo, args });
      // QoS 0: mqtt.js keeps a QoS 1 publish it could not finish and sends it again at the next
      // connect, so an abort clicked as the coordinator went down would go out minutes later,
      // after the page said it failed. The reply is the acknowledgement that counts.
      this.client.publish(`${this.o.prefix}/cmd/${op}/${this.o.user}`, body, { qos: 0 }, (err) => {
        if (!err) return;
        const p = this.pending.get(correlationId);
        if (!p) return;
        this.pending.delete(correlationId);
        clearTimeout(p.timer);
        p.reject(new CommandError('E_CONNECTION', `${op} could not be sent: ${err.message}`));
      });
    });
  }

  private shutdown(): void {
    this.closed = true;
    this.failPending('signed out');
    this.client.end(true);
  }

  /** Sign-out: closes the connection at once, no retry. */
  close(): void {
    this.shutdown();
  }
}
