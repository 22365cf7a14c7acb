import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { OtaError } from '../../shared/errors.js';
import { type CommandReply, CommandReplySchema } from '../../shared/messages.js';
import { CLIENT_ID_SEPARATOR } from '../../shared/names.js';
import { decodePayload, encodePayload } from '../../shared/payload.js';
import { createTopics, type Topics } from '../../shared/topics.js';

/** Replies are not capped like client payloads: a large fleet's status runs to megabytes. */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

export interface CommandClientOptions {
  /** mqtt://, mqtts://, ws:// or wss:// URL of the coordinator's broker. */
  url: string;
  user: string;
  token: string;
  topicPrefix?: string;
  /** Per-request limit. Default 30 s. */
  timeoutMs?: number;
  /** Connection limit. Default 10 s. */
  connectTimeoutMs?: number;
  ca?: Buffer;
}

/**
 * The command API over MQTT 3.1.1 (design section 3): a request on `cmd/{op}/{user}` with a
 * `correlationId` and a `replyTo` under the user's own reply prefix, the reply matched by
 * correlation id. Used by otactl, tests and the fleet simulator.
 */
export class CommandClient {
  private readonly pending = new Map<string, (reply: CommandReply) => void>();
  private readonly failPending = new Map<string, () => void>();
  /** Where this client's replies arrive (raw callers such as the benches reuse it). */
  readonly replyTopic: string;
  /** The operator it signed in as. */
  readonly user: string;

  private constructor(
    readonly mqtt: MqttClient,
    readonly clientId: string,
    private readonly topics: Topics,
    private readonly timeoutMs: number,
  ) {
    // Under the operator's own name (reply/{name}/{suffix}) and sent on cmd/{op}/{name}: the form
    // an external broker's ACL can grant per operator (docs/brokers.md); the embedded one takes it too.
    const [user = clientId, suffix = 'r'] = clientId.split(CLIENT_ID_SEPARATOR);
    this.user = user;
    this.replyTopic = topics.reply(user, suffix);
    // A dropped connection fails every pending call at once, instead of each waiting for its
    // timeout. (On MQTT 3.1.1 the broker drops the connection when it refuses a publish.)
    mqtt.on('close', () => {
      for (const fail of this.failPending.values()) fail();
    });
    mqtt.on('error', () => {}); // reported through 'close' and the calls
    mqtt.on('message', (topic, payload) => {
      if (topic !== this.replyTopic) return;
      try {
        // Replies come from the coordinator itself and may be large (rollout.status of 10,000 devices).
        const reply = decodePayload(CommandReplySchema, payload, topic, MAX_REPLY_BYTES);
        this.pending.get(reply.correlationId)?.(reply);
      } catch {
        // Not a reply we can read: the request it belonged to times out with a clear message.
      }
    });
  }

  static async connect(options: CommandClientOptions): Promise<CommandClient> {
    const topics = createTopics(options.topicPrefix);
    // An operator's client id is its name, or its name, "@" and a suffix (broker/acl.ts): one
    // per run, so two otactl runs never take over each other's session.
    const clientId = `${options.user}${CLIENT_ID_SEPARATOR}otactl-${randomBytes(4).toString('hex')}`;
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const opts: IClientOptions = {
      clientId,
      username: options.user,
      password: options.token,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: connectTimeoutMs,
      ...(options.ca ? { ca: options.ca } : {}),
    };
    const client = mqtt.connect(options.url, opts);
    await new Promise<void>((resolve, reject) => {
      // The cause is kept: otactl names --ca when it is a TLS trust failure (tls-trust.ts).
      const fail = (why: string, cause?: unknown) => {
        client.end(true);
        reject(
          new OtaError('E_CONNECT', `cannot connect to the coordinator at ${options.url}: ${why}`, {
            ...(cause ? { cause } : {}),
          }),
        );
      };
      const timer = setTimeout(() => fail(`no answer within ${connectTimeoutMs} ms`), connectTimeoutMs);
      client.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      client.once('error', (err) => {
        clearTimeout(timer);
        const code = (err as { code?: number | string }).code;
        if (code === 5 || /Not authorized/i.test(err.message)) {
          // MQTT 3.1.1 CONNACK carries no reason (section 3.2.2.3); the coordinator logs it.
          client.end(true);
          reject(
            new OtaError(
              'E_AUTH',
              `the broker refused user ${options.user} with client id ${clientId} (not authorized). With the coordinator's embedded broker: an operator's client id is its name or <name>${CLIENT_ID_SEPARATOR}<suffix> (a coordinator that wants <name>-<suffix> is older than this otactl: upgrade it), and the coordinator's log names the reason. Through an external broker such as Mosquitto this is also how a wrong token is answered: check the token`,
            ),
          );
        } else if (code === 4 || /Bad username/i.test(err.message)) {
          client.end(true);
          reject(
            new OtaError(
              'E_AUTH',
              `the coordinator refused user ${options.user}: unknown user or wrong token (check --user/--token-file or OTA_USER/OTA_TOKEN)`,
            ),
          );
        } else fail(err.message, err);
      });
      client.once('close', () => {
        clearTimeout(timer);
        fail('connection closed');
      });
    });
    const c = new CommandClient(client, clientId, topics, options.timeoutMs ?? 30_000);
    const granted = await client.subscribeAsync(c.replyTopic, { qos: 1 });
    if (granted[0]?.qos === 128) throw new OtaError('E_FORBIDDEN', `cannot subscribe to ${c.replyTopic}`);
    return c;
  }

  /** Sends one command; resolves its result or throws the coordinator's error as an OtaError. */
  async call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const correlationId = randomBytes(8).toString('hex');
    const reply = await new Promise<CommandReply>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.pending.delete(correlationId);
        this.failPending.delete(correlationId);
      };
      const timer = setTimeout(() => {
        done();
        reject(new OtaError('E_TIMEOUT', `${op}: no reply from the coordinator within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(correlationId, (r) => {
        done();
        resolve(r);
      });
      this.failPending.set(correlationId, () => {
        done();
        reject(
          new OtaError(
            'E_CONNECT',
            `${op}: the coordinator closed the connection before answering (a command your role may not run is refused this way)`,
          ),
        );
      });
      this.mqtt
        .publishAsync(
          this.topics.cmd(op, this.user),
          encodePayload({ correlationId, replyTo: this.replyTopic, args }),
          { qos: 1 },
        )
        .catch((err: Error) => {
          done();
          reject(new OtaError('E_CONNECT', `${op}: could not send the command: ${err.message}`));
        });
    });
    if (!reply.ok) throw new OtaError(reply.error.code as never, reply.error.message);
    return reply.result as T;
  }

  async close(): Promise<void> {
    // Once the coordinator has closed the connection (a refused command, or the session ended by
    // `operator rm`/`operator role`) nothing can be flushed: an unforced end would wait forever
    // for the acknowledgement of a command that was in flight.
    await this.mqtt.endAsync(!this.mqtt.connected);
  }
}
