import type { Client } from 'aedes';
import { isOtaError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import {
  type CommandReply,
  type CommandRequest,
  CommandRequestSchema,
  type Reported,
  ReportedSchema,
  type Status,
  StatusSchema,
} from '../../shared/messages.js';
import { decodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import type { Broker } from '../broker/create-broker.js';
import type { Principal } from '../broker/principal.js';
import { returnsSecret } from '../commands/ops.js';

export interface Routes {
  report(deviceId: string, report: Reported): void;
  presence(deviceId: string, online: boolean, status?: Status): void;
  /** `clientId`: the connection that sent the command. */
  command(op: string, request: CommandRequest, principal: Principal, clientId: string): Promise<CommandReply>;
  /** `onlyTo`: the one connection the reply may reach (it carries a secret), else every subscriber. */
  reply(topic: string, reply: CommandReply, onlyTo?: Client): Promise<void>;
}

/**
 * The topic routing (design section 3): what clients publish goes to the report and presence
 * recorders and the command API, by topic and by who published it; a device's connection ending
 * is its presence too. Payloads were validated by the broker (decoded once there); what reaches
 * here is never fatal.
 */
export function routeMessages(broker: Broker, topics: Topics, routes: Routes, logger: Logger): void {
  broker.aedes.on('publish', (packet, client) => {
    if (!client) return; // our own publishes
    // By connection, not by id: a will is published while its connection closes.
    const principal = broker.principalFor(client);
    if (!principal) return;
    void (async () => {
      try {
        // Decoded once, by the broker's payload check; decoded here only when it did not (a will).
        const decoded = broker.decoded(packet.payload);
        if (decoded?.kind === 'reported' && principal.kind === 'device') {
          routes.report(decoded.deviceId, decoded.value);
          return;
        }
        const parsed = topics.parse(packet.topic);
        if (parsed.kind === 'reported' && principal.kind === 'device') {
          routes.report(parsed.deviceId, decodePayload(ReportedSchema, packet.payload as Buffer, packet.topic));
        } else if (parsed.kind === 'status' && principal.kind === 'device') {
          const status =
            decoded?.kind === 'status'
              ? decoded.value
              : decodePayload(StatusSchema, packet.payload as Buffer, packet.topic);
          // The will of a session a newer one replaced says nothing about the device.
          if (!status.online && !broker.isNewestSession(client)) return;
          routes.presence(parsed.deviceId, status.online, status);
        } else if (parsed.kind === 'cmd') {
          const request =
            decoded?.kind === 'cmd'
              ? decoded.value
              : decodePayload(CommandRequestSchema, packet.payload as Buffer, packet.topic);
          const reply = await routes.command(parsed.op, request, principal, client.id);
          // A new token goes to the connection that asked, not to another session of the
          // operator subscribed to the same reply topic.
          await routes.reply(request.replyTo, reply, reply.ok && returnsSecret(parsed.op) ? client : undefined);
        }
      } catch (err) {
        const level = isOtaError(err) ? 'warn' : 'error';
        logger[level]({ topic: packet.topic, err: (err as Error).message }, 'message not processed');
      }
    })();
  });
  // A device is offline the moment its connection ends, however it ends: a DISCONNECT, a
  // dropped TCP connection (kill -9, power loss: the kernel or the peer resets it), or the
  // keepalive running out on a connection that went silent (Aedes closes it after 1.5 x the
  // keepalive, MQTT 3.1.1 section 3.1.2.10). Its will says the same a moment earlier.
  // Looked up by connection: the broker forgets the id's session before this listener runs.
  broker.aedes.on('clientDisconnect', (client) => {
    const principal = broker.principalFor(client);
    if (principal?.kind !== 'device' || !broker.isNewestSession(client)) return;
    try {
      routes.presence(principal.deviceId, false);
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'presence update failed');
    }
  });
}
