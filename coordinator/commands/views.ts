import type { ChannelRecord, GroupRecord, OperatorRecord, TrustedKeyRecord } from '../store/records.js';

/*
 * Command results (and so `otactl --json`) name an object's own id `id`, whatever its kind
 * (devices, releases, rollouts, groups, operators, keys, channels); a reference to another object
 * is `<kind>Id` (`releaseId`, `deviceId`). A script reads one key for every kind. The store's
 * rows keep their column names; these views are what leaves the coordinator.
 */

export type KeyView = Omit<TrustedKeyRecord, 'keyId'> & { id: string };
export type GroupView = Omit<GroupRecord, 'name'> & { id: string };
export type OperatorView = Omit<OperatorRecord, 'name'> & { id: string };
/** A channel is one per (model, channel name): its id is `model/channel`, as in its audit subject. */
export type ChannelView = ChannelRecord & { id: string };

export function keyView({ keyId, ...rest }: TrustedKeyRecord): KeyView {
  return { id: keyId, ...rest };
}
export function groupView({ name, ...rest }: GroupRecord): GroupView {
  return { id: name, ...rest };
}
export function operatorView({ name, ...rest }: OperatorRecord): OperatorView {
  return { id: name, ...rest };
}
export function channelView(c: ChannelRecord): ChannelView {
  return { id: `${c.model}/${c.channel}`, ...c };
}
