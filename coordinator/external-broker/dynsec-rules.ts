import type { Topics } from '../../shared/topics.js';

/**
 * The access rules of design section 3 as Mosquitto 2 dynamic-security roles (pure data).
 *
 * Mosquitto 2.0.11's plugin does not substitute `%c`/`%u` in ACL topics (design section 12: a
 * `%c` rule matched nothing), so every device and operator gets a role of its own with literal
 * topics. The default access (mosquitto-config.ts) denies every publish and subscribe, so a role
 * lists exactly what its client may do:
 *
 * - device `{id}`: publish its own `reported`, `status` (also its will: Mosquitto 2 checks a will
 *   against the ACL at CONNECT) and `metrics`; subscribe its own `desired`. Its client is tied to
 *   the client id `{id}`.
 * - operator `{name}`: publish commands on `cmd/+/{name}` only (the name in the topic is how the
 *   coordinator learns who called; it checks the role itself and answers E_FORBIDDEN), subscribe
 *   its own replies `reply/{name}/#` and the read-only views.
 * - the coordinator: everything under the prefix, and the plugin's control topic.
 *
 * What topic rules cannot say, the coordinator checks when a message arrives (payload schema and
 * size, a reported payload naming its own device, retained metrics): see external-broker.ts.
 */

export interface DynsecAcl {
  acltype: 'publishClientSend' | 'publishClientReceive' | 'subscribePattern' | 'subscribeLiteral';
  topic: string;
  allow: boolean;
  priority?: number;
}

export const DYNSEC_CONTROL_TOPIC = '$CONTROL/dynamic-security/v1';
export const DYNSEC_RESPONSE_TOPIC = '$CONTROL/dynamic-security/v1/response';

/** Role names: one per device and per operator, so a role never grants another's topics. */
export const roleNames = {
  device: (id: string) => `ota-device-${id}`,
  operator: (name: string) => `ota-operator-${name}`,
  coordinator: 'ota-coordinator',
};

/** Whose role `rolename` is, when it is one of ours. */
export function ownerOfRole(
  rolename: string,
): { kind: 'device'; deviceId: string } | { kind: 'operator'; name: string } | null {
  if (rolename.startsWith('ota-device-')) return { kind: 'device', deviceId: rolename.slice('ota-device-'.length) };
  if (rolename.startsWith('ota-operator-')) return { kind: 'operator', name: rolename.slice('ota-operator-'.length) };
  return null;
}

const send = (topic: string): DynsecAcl => ({ acltype: 'publishClientSend', topic, allow: true });
const subscribe = (topic: string): DynsecAcl => ({ acltype: 'subscribePattern', topic, allow: true });

export function deviceAcls(topics: Topics, id: string): DynsecAcl[] {
  return [send(topics.reported(id)), send(topics.status(id)), send(topics.metrics(id)), subscribe(topics.desired(id))];
}

export function operatorAcls(topics: Topics, name: string): DynsecAcl[] {
  const p = topics.prefix;
  return [
    send(`${p}/cmd/+/${name}`),
    subscribe(`${p}/reply/${name}/#`),
    subscribe(topics.allRollouts()),
    subscribe(topics.audit()),
    subscribe(topics.fleet()),
    subscribe(topics.allDevices('reported')),
    subscribe(topics.allDevices('status')),
    subscribe(topics.allDevices('metrics')),
    subscribe(topics.allDevices('desired')),
  ];
}

const receive = (topic: string): DynsecAcl => ({ acltype: 'publishClientReceive', topic, allow: true });

export function coordinatorAcls(topics: Topics): DynsecAcl[] {
  return [
    send(`${topics.prefix}/#`),
    subscribe(`${topics.prefix}/#`),
    receive(`${topics.prefix}/#`),
    send(`${DYNSEC_CONTROL_TOPIC}/#`),
    send(DYNSEC_CONTROL_TOPIC),
    subscribe(`${DYNSEC_CONTROL_TOPIC}/#`),
    // The plugin's answers are delivered only with an explicit receive rule, whatever the default.
    receive(`${DYNSEC_CONTROL_TOPIC}/#`),
  ];
}

/** The commands that create a device's role and client (one control message). */
export function createDeviceCommands(topics: Topics, id: string, token: string): object[] {
  const rolename = roleNames.device(id);
  return [
    { command: 'createRole', rolename, acls: deviceAcls(topics, id) },
    { command: 'createClient', username: id, password: token, clientid: id, roles: [{ rolename }] },
  ];
}

export function createOperatorCommands(topics: Topics, name: string, token: string): object[] {
  const rolename = roleNames.operator(name);
  return [
    { command: 'createRole', rolename, acls: operatorAcls(topics, name) },
    { command: 'createClient', username: name, password: token, roles: [{ rolename }] },
  ];
}

/** Deleting the client ends its sessions (the plugin kicks it); then its role goes. */
export function deleteCommands(kind: 'device' | 'operator', name: string): object[] {
  const rolename = kind === 'device' ? roleNames.device(name) : roleNames.operator(name);
  return [
    { command: 'deleteClient', username: name },
    { command: 'deleteRole', rolename },
  ];
}
