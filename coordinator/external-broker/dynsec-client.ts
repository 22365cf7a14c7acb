import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { OtaError } from '../../shared/errors.js';
import { DYNSEC_CONTROL_TOPIC, DYNSEC_RESPONSE_TOPIC } from './dynsec-rules.js';

/** One command's answer from the plugin: `error` is its reason when it refused. */
export interface DynsecResponse {
  command: string;
  error?: string;
  data?: unknown;
}

/**
 * Mosquitto 2's dynamic-security plugin, driven over MQTT: commands go to
 * `$CONTROL/dynamic-security/v1` as `{ commands: [...] }` and the plugin answers every command on
 * `.../response` (QoS 0, to every subscriber allowed there) with its `correlationData` echoed,
 * in order. A command without an answer within the timeout fails with E_BROKER: the change may or
 * may not have happened, which is why callers make their changes idempotent or check afterwards.
 */
export class DynsecClient {
  private readonly waiting = new Map<string, (r: DynsecResponse) => void>();
  private subscribed: Promise<unknown> | null = null;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly timeoutMs = 15_000,
  ) {
    mqtt.on('message', (topic, payload) => {
      if (topic !== DYNSEC_RESPONSE_TOPIC) return;
      let body: { responses?: unknown };
      try {
        body = JSON.parse(payload.toString('utf8')) as { responses?: unknown };
      } catch {
        return;
      }
      if (!Array.isArray(body.responses)) return;
      for (const r of body.responses as (DynsecResponse & { correlationData?: unknown })[]) {
        if (typeof r?.correlationData !== 'string') continue;
        this.waiting.get(r.correlationData)?.(r);
      }
    });
    // A reconnect with a clean session would lose the subscription: made again on every connect.
    mqtt.on('connect', () => {
      this.subscribed = null;
    });
  }

  /** Runs `commands` in one control message; resolves with each command's response, in order. */
  async run(commands: readonly object[]): Promise<DynsecResponse[]> {
    const refused = (why: string) =>
      new OtaError(
        'E_BROKER',
        `the broker refused the coordinator's subscription to ${DYNSEC_RESPONSE_TOPIC} (${why}): give its client the role ota-coordinator (ota-coordinator mosquitto-config writes it)`,
      );
    // mqtt.js rejects a SUBACK of 0x80 (MQTT 3.1.1 section 3.9.3); some versions resolve with it.
    this.subscribed ??= this.mqtt.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 0 }).then(
      (granted) => {
        if (granted[0]?.qos === 128) throw refused('granted 0x80');
      },
      (err: Error) => {
        throw refused(err.message);
      },
    );
    try {
      await this.subscribed;
    } catch (err) {
      this.subscribed = null;
      throw err;
    }
    const tag = randomBytes(6).toString('hex');
    const tagged = commands.map((c, i) => ({ ...c, correlationData: `${tag}-${i}` }));
    const answers = tagged.map(
      (c) =>
        new Promise<DynsecResponse>((resolve, reject) => {
          const timer = setTimeout(() => {
            this.waiting.delete(c.correlationData);
            reject(
              new OtaError(
                'E_BROKER',
                `the broker did not answer ${(c as { command?: string }).command} within ${this.timeoutMs} ms: is its dynamic security plugin loaded (plugin ... mosquitto_dynamic_security.so) and the broker reachable?`,
              ),
            );
          }, this.timeoutMs);
          this.waiting.set(c.correlationData, (r) => {
            clearTimeout(timer);
            this.waiting.delete(c.correlationData);
            resolve(r);
          });
        }),
    );
    try {
      await this.mqtt.publishAsync(DYNSEC_CONTROL_TOPIC, JSON.stringify({ commands: tagged }), { qos: 1 });
    } catch (err) {
      for (const c of tagged) this.waiting.get(c.correlationData)?.({ command: 'none', error: 'not sent' });
      throw new OtaError(
        'E_BROKER',
        `could not send to the broker's dynamic security plugin: ${(err as Error).message}`,
      );
    }
    return Promise.all(answers);
  }

  /** Like run(), but fails with E_BROKER naming the first command the plugin refused. */
  async runAll(commands: readonly object[], what: string): Promise<DynsecResponse[]> {
    const responses = await this.run(commands);
    const refused = responses.find((r) => r.error !== undefined);
    if (refused) throw new OtaError('E_BROKER', `${what}: the broker refused ${refused.command}: ${refused.error}`);
    return responses;
  }
}
