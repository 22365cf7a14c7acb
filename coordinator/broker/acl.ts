import { CLIENT_ID_SEPARATOR, isSafeId } from '../../shared/names.js';
import type { ParsedTopic, Topics } from '../../shared/topics.js';
import { roleAllows } from '../commands/ops.js';
import type { Principal } from './principal.js';

/**
 * The broker ACL of design section 3, as pure functions: each returns `true` or the reason it
 * refuses. The coordinator itself publishes `desired`, `rollouts/*`, `audit`, `fleet` and `reply/*` with
 * `aedes.publish` (no client), so no client may publish on them.
 *
 * - A device's client id is its device id. It publishes only its own `reported` and `status`
 *   (both may be retained; `status` is also its will) and `metrics` (not retained), and
 *   subscribes only to its own `desired`, without wildcards.
 * - An operator's client id is its name exactly, or its name, `@` and a safe suffix (`admin`,
 *   `admin@otactl-3f2a`). No name or device id contains `@` (shared/names.ts), so a client id
 *   belongs to one operator only, whatever names exist: `bob` can never use a client id of
 *   `bob-admin` or `bob.admin`, nor read their replies (the earlier rule, `name-` + anything,
 *   let `bob` do both). It publishes only commands its role may call (never retained, never as a
 *   will), and subscribes to its own replies, rollouts, audit events, the fleet summary and the device topics
 *   (read-only views).
 */

export interface PublishOptions {
  retain: boolean;
  will: boolean;
}

const DEVICE_VIEW_KINDS = ['reported', 'status', 'metrics', 'desired'] as const;

function describe(p: Principal): string {
  return p.kind === 'device' ? `device ${p.deviceId}` : `operator ${p.name} (${p.role})`;
}

function parse(topics: Topics, topic: string): ParsedTopic | string {
  try {
    return topics.parse(topic);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/**
 * Whether `clientId` is one of operator `name`'s client ids: the name itself, or the name, `@`
 * and a safe suffix. Exact: `bob@x` is bob's, `bob-admin@x` and `bob.admin` are not.
 */
export function isOperatorClientId(name: string, clientId: string): boolean {
  if (clientId === name) return true;
  const head = `${name}${CLIENT_ID_SEPARATOR}`;
  return clientId.startsWith(head) && isSafeId(clientId.slice(head.length));
}

export function checkClientId(p: Principal, clientId: string): true | string {
  const shown = JSON.stringify(clientId.slice(0, 80));
  if (p.kind === 'device') {
    if (clientId === p.deviceId) return true;
    return `${describe(p)} must connect with client id ${JSON.stringify(p.deviceId)}, not ${shown}`;
  }
  if (isOperatorClientId(p.name, clientId)) return true;
  const form = `${JSON.stringify(p.name)} or ${JSON.stringify(`${p.name}${CLIENT_ID_SEPARATOR}<suffix>`)} (suffix: 1-64 letters, digits, ".", "_", "-")`;
  const oldSuffix = clientId.startsWith(`${p.name}-`) ? clientId.slice(p.name.length + 1) : null;
  if (oldSuffix !== null && isSafeId(oldSuffix)) {
    // The form accepted before: name it and its replacement, so an old script is fixed in one step.
    return `${describe(p)}: client id ${shown} has the old form <name>-<suffix>, no longer accepted: an operator's client id is ${form}, e.g. ${JSON.stringify(`${p.name}${CLIENT_ID_SEPARATOR}${oldSuffix}`)}`;
  }
  return `${describe(p)}: client id ${shown} is not one of this operator's: use ${form}`;
}

/**
 * Replies are private to the operator: a client may read the replies of any client id of the
 * same operator (the ids checkClientId lets it use), so a script can send from one connection
 * and listen on another (mosquitto_pub + mosquitto_sub), and nobody can read another
 * operator's replies. Replies that carry a secret (a new token) go to the requesting
 * connection only, whoever else subscribes (create-broker.ts, authorizeForward).
 */
export function ownsReplyClientId(p: Principal, replyClientId: string): boolean {
  return p.kind === 'operator' && isOperatorClientId(p.name, replyClientId);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function canPublish(
  p: Principal,
  clientId: string,
  topic: string,
  opts: PublishOptions,
  topics: Topics,
): true | string {
  const who = `${describe(p)} (client ${clientId})`;
  const parsed = parse(topics, topic);
  if (typeof parsed === 'string') return `${who} may not publish: ${parsed}`;

  if (p.kind === 'device') {
    switch (parsed.kind) {
      case 'reported':
      case 'status':
      case 'metrics':
        break;
      default:
        return `${who} may not publish to ${parsed.kind} topics`;
    }
    if (parsed.deviceId !== p.deviceId) {
      return `${who} may not publish to another device's ${parsed.kind} (${parsed.deviceId})`;
    }
    if (clientId !== p.deviceId) return `${who}: client id does not match the device id`;
    if (opts.retain && parsed.kind === 'metrics') return `${who} may not retain metrics`;
    if (opts.will && parsed.kind !== 'status') return `${who} may only use its own status as its will`;
    return true;
  }

  if (parsed.kind !== 'cmd') return `${who} may publish only commands, not ${parsed.kind}`;
  if (opts.will) return `${who} may not use a command as its will`;
  if (opts.retain) return `${who} may not retain a command`;
  if (!roleAllows(p.role, parsed.op)) return `${who}: role ${p.role} may not call ${parsed.op}`;
  if (parsed.operator !== undefined && parsed.operator !== p.name) {
    return `${who} may not call ${parsed.op} in the name of ${parsed.operator}: use ${topics.cmd(parsed.op, p.name)}`;
  }
  return true;
}

export function canSubscribe(p: Principal, clientId: string, filter: string, topics: Topics): true | string {
  const who = `${describe(p)} (client ${clientId})`;
  const refused = (why: string) => `${who} may not subscribe to ${JSON.stringify(filter.slice(0, 200))}: ${why}`;

  if (p.kind === 'device') {
    if (clientId !== p.deviceId) return refused('client id does not match the device id');
    if (filter === topics.desired(p.deviceId)) return true;
    return refused(`a device subscribes only to its own desired topic`);
  }

  if (filter.includes('+') || filter.includes('#')) {
    const allowed = [topics.allRollouts(), ...DEVICE_VIEW_KINDS.map((k) => topics.allDevices(k))];
    if (allowed.includes(filter)) return true;
    // reply/{id}/# for a client id of this operator's own (see ownsReplyClientId).
    const replyAll = new RegExp(`^${escapeRegExp(topics.prefix)}/reply/([^/+#]+)/#$`).exec(filter);
    if (replyAll && ownsReplyClientId(p, replyAll[1] as string)) return true;
    return refused('wildcards are allowed only in rollouts/+, devices/+/{kind} and the own reply/{clientId}/#');
  }

  const parsed = parse(topics, filter);
  if (typeof parsed === 'string') return refused(parsed);
  switch (parsed.kind) {
    case 'rollout':
    case 'audit':
    case 'fleet':
    case 'desired':
    case 'reported':
    case 'status':
    case 'metrics':
      return true;
    case 'reply':
      if (ownsReplyClientId(p, parsed.clientId)) return true;
      return refused("replies of another operator's client");
    case 'cmd':
      return refused('commands are for the coordinator');
  }
}
