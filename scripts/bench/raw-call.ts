import { randomBytes } from 'node:crypto';
import type { CommandClient } from '../../coordinator/client/command-client.js';
import { createTopics } from '../../shared/topics.js';

const topics = createTopics();

/**
 * A command over the CommandClient's own connection and reply topic, with the reply parsed
 * without a size cap. CommandClient.call decodes replies with the 256 KiB payload cap of
 * shared/payload.ts, so a `rollout.status` of more than about 1,000 devices (or a `device.ls`
 * of a large fleet) is dropped there and the call times out; the benchmark needs those replies.
 */
export function rawCall<T>(client: CommandClient, op: string, args: Record<string, unknown>, timeoutMs = 120_000) {
  const correlationId = `raw-${randomBytes(8).toString('hex')}`;
  const replyTo = client.replyTopic;
  const mqtt = client.mqtt;
  return new Promise<T>((resolve, reject) => {
    const onMessage = (topic: string, payload: Buffer) => {
      if (topic !== replyTo) return;
      let reply: { correlationId?: string; ok?: boolean; result?: unknown; error?: { code: string; message: string } };
      try {
        reply = JSON.parse(payload.toString('utf8'));
      } catch {
        return;
      }
      if (reply.correlationId !== correlationId) return;
      done();
      if (reply.ok) resolve(reply.result as T);
      else reject(new Error(`${op}: ${reply.error?.code}: ${reply.error?.message}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${op}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      mqtt.off('message', onMessage);
    };
    mqtt.on('message', onMessage);
    mqtt.publish(topics.cmd(op, client.user), JSON.stringify({ correlationId, replyTo, args }), { qos: 1 }, (err) => {
      if (err) {
        done();
        reject(err);
      }
    });
  });
}
