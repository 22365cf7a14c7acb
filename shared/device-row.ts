/**
 * A device as a list shows it (`device.ls`, `device.find`, the dashboard's rows): who it is, and
 * per model only the last reported state, versions and error (none of the report's progress,
 * times or rollout). One mapping for the coordinator's replies and the page's own rows.
 */

/** What a list row keeps of each reported model. */
export interface ListedModel {
  state: string;
  version: string | null;
  current: string | null;
  error: { code: string; message: string } | null;
}

export interface ListedDevice<M extends ListedModel = ListedModel> {
  id: string;
  labels: Record<string, string>;
  channel: string;
  online: boolean;
  lastSeen: string | null;
  agentVersion: string | null;
  models: Record<string, Pick<M, 'state' | 'version' | 'current' | 'error'>>;
}

/** `d`'s row with the models of its last report (a null-prototype record: a model may be `constructor`). */
export function listedDevice<M extends ListedModel>(
  d: Omit<ListedDevice, 'models'>,
  reported: Record<string, M> | null | undefined,
): ListedDevice<M> {
  const models: Record<string, Pick<M, 'state' | 'version' | 'current' | 'error'>> = Object.create(null);
  for (const [model, m] of Object.entries(reported ?? {})) {
    models[model] = { state: m.state, version: m.version, current: m.current, error: m.error };
  }
  return {
    id: d.id,
    labels: d.labels,
    channel: d.channel,
    online: d.online,
    lastSeen: d.lastSeen,
    agentVersion: d.agentVersion,
    models,
  };
}
