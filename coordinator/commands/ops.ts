import type { Role } from '../store/records.js';

/**
 * Every operation of the command API (`ota/v1/cmd/{op}`, design sections 3 and 7) with the
 * least role that may call it. Viewers read; operators publish releases, move channels and run
 * rollouts and experiments; admins also manage devices, groups, trusted keys and operators. The broker ACL
 * refuses a publish to a command the principal's role may not call; the command handler checks
 * again (defence in depth).
 */
export const OPS = {
  'key.add': 'admin',
  'key.ls': 'viewer',
  'key.revoke': 'admin',
  'trust.publish': 'admin',
  'trust.show': 'viewer',
  'device.add': 'admin',
  'device.ls': 'viewer',
  'device.find': 'viewer',
  'device.show': 'viewer',
  'device.rm': 'admin',
  'group.create': 'admin',
  'group.ls': 'viewer',
  'release.publish': 'operator',
  'release.ls': 'viewer',
  'channel.set': 'operator',
  'channel.ls': 'viewer',
  'rollout.create': 'operator',
  'rollout.ls': 'viewer',
  'rollout.status': 'viewer',
  'rollout.approve': 'operator',
  'rollout.promote': 'operator',
  'rollout.halt': 'operator',
  'rollout.resume': 'operator',
  'rollout.abort': 'operator',
  'experiment.create': 'operator',
  'experiment.ls': 'viewer',
  'experiment.status': 'viewer',
  'experiment.compare': 'viewer',
  'experiment.promote': 'operator',
  'experiment.stop': 'operator',
  'audit.ls': 'viewer',
  'audit.verify': 'viewer',
  'audit.export': 'viewer',
  'metrics.query': 'viewer',
  'operator.add': 'admin',
  'operator.ls': 'admin',
  'operator.rm': 'admin',
  'operator.role': 'admin',
  'operator.whoami': 'viewer',
} as const satisfies Record<string, Role>;

export type Op = keyof typeof OPS;

/**
 * Ops whose result carries a secret: a new token, shown once. Their reply goes to the connection
 * that asked and to no other session, even of the same operator (route-messages.ts, Broker.publish
 * onlyTo), so runCommand refuses them, before doing anything, unless their replyTo is under that
 * connection's own client id.
 */
const SECRET_RESULT_OPS: ReadonlySet<string> = new Set<Op>(['device.add', 'operator.add']);

export function returnsSecret(op: string): boolean {
  return SECRET_RESULT_OPS.has(op);
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function isOp(op: string): op is Op {
  return Object.hasOwn(OPS, op);
}

/** Whether `role` may call `op`; unknown ops are allowed through to get an E_COMMAND reply. */
export function roleAllows(role: Role, op: string): boolean {
  if (!isOp(op)) return true;
  return RANK[role] >= RANK[OPS[op]];
}

/** The ops `role` may call, in the order of OPS (`operator.whoami`: what the dashboard offers). */
export function opsFor(role: Role): Op[] {
  return (Object.keys(OPS) as Op[]).filter((op) => roleAllows(role, op));
}
