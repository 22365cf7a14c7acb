import {
  type CommandRequest,
  CommandRequestSchema,
  type Metrics,
  MetricsSchema,
  type Reported,
  ReportedSchema,
  type Status,
  StatusSchema,
} from '../../shared/messages.js';
import { decodePayload } from '../../shared/payload.js';
import type { Topics } from '../../shared/topics.js';
import { ownsReplyClientId } from './acl.js';
import type { Principal } from './principal.js';

export type DecodedPayload =
  | { kind: 'reported'; deviceId: string; value: Reported }
  | { kind: 'status'; deviceId: string; value: Status }
  | { kind: 'metrics'; deviceId: string; value: Metrics }
  | { kind: 'cmd'; op: string; value: CommandRequest };

/** A reply topic of one of the publishing operator's own client ids (acl.ts ownsReplyClientId). */
function isOwnReplyTopic(topics: Topics, replyTo: string, p: Principal): boolean {
  try {
    const reply = topics.parse(replyTo);
    return reply.kind === 'reply' && ownsReplyClientId(p, reply.clientId);
  } catch {
    return false;
  }
}

/**
 * The payload checks of a client's publish on `topic` (already allowed by the ACL), shared by the
 * embedded broker (before it accepts the publish) and the external-broker client (when the message
 * arrives: that broker checks topics only): the size cap, the schema of the topic's kind, a
 * reported payload naming the topic's device, a command's replyTo under the caller's own reply
 * prefix. Returns the decoded payload, or the reason to refuse it.
 */
export function checkClientPayload(
  topics: Topics,
  maxBytes: number,
  topic: string,
  payload: Buffer,
  p: Principal,
  clientId: string,
): { decoded: DecodedPayload } | { problem: string } {
  if (payload.length > maxBytes) return { problem: `payload is ${payload.length} bytes, the limit is ${maxBytes}` };
  try {
    const parsed = topics.parse(topic);
    switch (parsed.kind) {
      case 'reported': {
        const reported = decodePayload(ReportedSchema, payload, `reported of ${parsed.deviceId}`, maxBytes);
        if (reported.deviceId !== parsed.deviceId) {
          return { problem: `reported payload names device ${reported.deviceId}, the topic ${parsed.deviceId}` };
        }
        return { decoded: { kind: 'reported', deviceId: parsed.deviceId, value: reported } };
      }
      case 'status':
        return {
          decoded: {
            kind: 'status',
            deviceId: parsed.deviceId,
            value: decodePayload(StatusSchema, payload, `status of ${parsed.deviceId}`, maxBytes),
          },
        };
      case 'metrics':
        return {
          decoded: {
            kind: 'metrics',
            deviceId: parsed.deviceId,
            value: decodePayload(MetricsSchema, payload, `metrics of ${parsed.deviceId}`, maxBytes),
          },
        };
      case 'cmd': {
        const request = decodePayload(CommandRequestSchema, payload, `command ${parsed.op}`, maxBytes);
        if (!isOwnReplyTopic(topics, request.replyTo, p)) {
          return {
            problem: `command ${parsed.op}: replyTo ${JSON.stringify(request.replyTo.slice(0, 200))} must be a topic under ${topics.replyPrefix(clientId)} (or the reply prefix of another client id of yours)`,
          };
        }
        return { decoded: { kind: 'cmd', op: parsed.op, value: request } };
      }
      default:
        return { problem: `no client publishes ${parsed.kind} payloads` };
    }
  } catch (err) {
    return { problem: err instanceof Error ? err.message : String(err) };
  }
}
