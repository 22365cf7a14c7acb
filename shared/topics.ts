import { OtaError } from './errors.js';
import { isClientId, isSafeId } from './names.js';

/**
 * The MQTT topics of design section 3, under a configurable prefix (default `ota/v1`).
 * Ids that go into a topic are checked (names.ts): they can hold no `/`, `+` or `#`, so a
 * device id can never widen a subscription or address another device's topic.
 */

export const DEFAULT_PREFIX = 'ota/v1';

export type ParsedTopic =
  | { kind: 'desired'; deviceId: string }
  | { kind: 'reported'; deviceId: string }
  | { kind: 'status'; deviceId: string }
  | { kind: 'metrics'; deviceId: string }
  | { kind: 'rollout'; rolloutId: string }
  | { kind: 'audit' }
  | { kind: 'fleet' }
  /**
   * `operator`: the caller's name, in the topic form `cmd/{op}/{name}`. Through an external broker
   * it is how the coordinator learns who called (MQTT 3.1.1 does not tell a subscriber who
   * published; that broker's ACL lets each operator publish only under its own name).
   */
  | { kind: 'cmd'; op: string; operator?: string }
  | { kind: 'reply'; clientId: string; rest: string };

const DEVICE_TOPICS = ['desired', 'reported', 'status', 'metrics'] as const;
type DeviceTopic = (typeof DEVICE_TOPICS)[number];

function checkPrefix(prefix: string): string {
  const levels = prefix.split('/');
  if (prefix === '' || levels.some((l) => l === '' || l.includes('+') || l.includes('#'))) {
    throw new OtaError('E_CONFIG', `invalid topic prefix ${JSON.stringify(prefix)}: use levels like "ota/v1"`);
  }
  return prefix;
}

function id(kind: string, value: string): string {
  if (!isSafeId(value)) {
    throw new OtaError(
      'E_TOPIC',
      `invalid ${kind} ${JSON.stringify(value)} for a topic: use letters, digits, ".", "_", "-"`,
    );
  }
  return value;
}

/** A reply topic's client id level: a device id, an operator's name, or `name@suffix`. */
function clientIdLevel(value: string): string {
  if (!isClientId(value)) {
    throw new OtaError(
      'E_TOPIC',
      `invalid client id ${JSON.stringify(value)} for a topic: use a name (letters, digits, ".", "_", "-"), or name@suffix`,
    );
  }
  return value;
}

export interface Topics {
  readonly prefix: string;
  desired(deviceId: string): string;
  reported(deviceId: string): string;
  status(deviceId: string): string;
  metrics(deviceId: string): string;
  rollout(rolloutId: string): string;
  audit(): string;
  /** The retained fleet summary (FleetSummarySchema). */
  fleet(): string;
  /** `cmd/{op}`, or `cmd/{op}/{operator}` naming the caller (what clients send: both brokers take it). */
  cmd(op: string, operator?: string): string;
  /** Every reply topic of a client lies under this prefix; the ACL lets only that client subscribe. */
  replyPrefix(clientId: string): string;
  reply(clientId: string, name: string): string;
  /** Subscription filters the coordinator uses. */
  allDevices(kind: DeviceTopic): string;
  allCommands(): string;
  allRollouts(): string;
  parse(topic: string): ParsedTopic;
}

export function createTopics(prefix: string = DEFAULT_PREFIX): Topics {
  const p = checkPrefix(prefix);
  const depth = p.split('/').length;
  return {
    prefix: p,
    desired: (d) => `${p}/devices/${id('device id', d)}/desired`,
    reported: (d) => `${p}/devices/${id('device id', d)}/reported`,
    status: (d) => `${p}/devices/${id('device id', d)}/status`,
    metrics: (d) => `${p}/devices/${id('device id', d)}/metrics`,
    rollout: (r) => `${p}/rollouts/${id('rollout id', r)}`,
    audit: () => `${p}/audit`,
    fleet: () => `${p}/fleet`,
    cmd: (op, operator) =>
      operator === undefined
        ? `${p}/cmd/${id('command', op)}`
        : `${p}/cmd/${id('command', op)}/${id('operator name', operator)}`,
    replyPrefix: (c) => `${p}/reply/${clientIdLevel(c)}/`,
    reply: (c, name) => `${p}/reply/${clientIdLevel(c)}/${id('reply name', name)}`,
    allDevices: (kind) => `${p}/devices/+/${kind}`,
    allCommands: () => `${p}/cmd/#`,
    allRollouts: () => `${p}/rollouts/+`,
    parse(topic: string): ParsedTopic {
      const bad = (why: string) => new OtaError('E_TOPIC', `topic ${JSON.stringify(topic.slice(0, 200))}: ${why}`);
      if (!topic.startsWith(`${p}/`)) throw bad(`not under the prefix ${p}/`);
      const levels = topic.split('/').slice(depth);
      const [head, second, third, ...more] = levels;
      switch (head) {
        case 'devices': {
          if (second === undefined || third === undefined || more.length > 0) {
            throw bad('expected devices/{id}/{desired|reported|status|metrics}');
          }
          if (!isSafeId(second)) throw bad(`invalid device id ${JSON.stringify(second)}`);
          if (!(DEVICE_TOPICS as readonly string[]).includes(third))
            throw bad(`unknown device topic ${JSON.stringify(third)}`);
          return { kind: third as DeviceTopic, deviceId: second };
        }
        case 'rollouts':
          if (second === undefined || third !== undefined) throw bad('expected rollouts/{rolloutId}');
          if (!isSafeId(second)) throw bad(`invalid rollout id ${JSON.stringify(second)}`);
          return { kind: 'rollout', rolloutId: second };
        case 'audit':
          if (second !== undefined) throw bad('expected audit with nothing after it');
          return { kind: 'audit' };
        case 'fleet':
          if (second !== undefined) throw bad('expected fleet with nothing after it');
          return { kind: 'fleet' };
        case 'cmd':
          if (second === undefined || more.length > 0) throw bad('expected cmd/{op} or cmd/{op}/{operator}');
          if (!isSafeId(second)) throw bad(`invalid command ${JSON.stringify(second)}`);
          if (third === undefined) return { kind: 'cmd', op: second };
          if (!isSafeId(third)) throw bad(`invalid operator name ${JSON.stringify(third)}`);
          return { kind: 'cmd', op: second, operator: third };
        case 'reply': {
          if (second === undefined || third === undefined) throw bad('expected reply/{clientId}/...');
          if (!isClientId(second)) throw bad(`invalid client id ${JSON.stringify(second)}`);
          const rest = [third, ...more].join('/');
          if (rest === '' || rest.includes('+') || rest.includes('#')) throw bad('invalid reply topic');
          return { kind: 'reply', clientId: second, rest };
        }
        default:
          throw bad(`unknown topic kind ${JSON.stringify(head ?? '')}`);
      }
    },
  };
}

/**
 * The reply topics a connection with `clientId` reads (each with anything below it): its own
 * `reply/{clientId}`, and for an operator's `name@suffix` also `reply/{name}/{suffix}`, the form
 * otactl and the dashboard use (an external broker's ACL can grant `reply/{name}/#` per operator).
 */
export function senderReplyTopics(topics: Topics, clientId: string): string[] {
  const own = topics.replyPrefix(clientId).slice(0, -1);
  const at = clientId.indexOf('@');
  if (at < 0) return [own];
  return [own, topics.reply(clientId.slice(0, at), clientId.slice(at + 1))];
}
