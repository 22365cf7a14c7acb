import { useEffect, useState } from 'preact/hooks';
import { ago, stateLabel, stateSymbol } from '../format.js';
import { type DeviceFindReply, deviceFindArgs, devicePage, filterChoices, PAGE_SIZE } from '../queries.js';
import { formatRoute, type Route } from '../router.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { replaceRoute } from './navigate.js';
import { Pager } from './pager.js';
import { useWatch } from './use-watch.js';

type DevicesRoute = Extract<Route, { view: 'devices' }>;

/** Typing in the search box asks once it pauses this long, not at every key. */
const SEARCH_PAUSE_MS = 250;

/**
 * Devices, searched and filtered by id, label, state and model version, 50 to a page. The filter
 * is in the URL fragment, so a filtered list can be bookmarked and shared. The coordinator
 * filters and pages (`device.find`): the page holds 50 rows, never the whole fleet.
 */
export function DevicesView({ state, connection, live, now, route, watch }: ViewProps & { route: DevicesRoute }) {
  const [reply, setReply] = useState<DeviceFindReply | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  // Asked at open, at every reconnect, when the filter or the page changes, and when the rows may
  // be out of date (state.devicesEpoch: enrolments, removals, channel moves, and the fleet summary
  // moving while the filter is on what reports change; views/dashboard.ts).
  const { text, state: stateFilter, model, version, page } = route;
  const epoch = state.devicesEpoch;
  useEffect(() => {
    if (!live) return;
    let gone = false;
    const ask = () =>
      connection
        .ask<DeviceFindReply>('device.find', deviceFindArgs({ text, state: stateFilter, model, version }, page))
        .then((r) => {
          if (gone) return;
          const last = Math.max(1, Math.ceil(r.total / PAGE_SIZE));
          // A page past the end (fewer devices match now): the last one instead.
          if (r.devices.length === 0 && page > last) {
            replaceRoute({ ...route, page: last });
            return;
          }
          state.setDevices(r.devices);
          setReply(r);
          setLoadError(null);
        })
        .catch((err: Error) => !gone && setLoadError(err.message));
    const timer = setTimeout(ask, text === '' ? 0 : SEARCH_PAUSE_MS);
    return () => {
      gone = true;
      clearTimeout(timer);
    };
  }, [connection, live, state, text, stateFilter, model, version, page, epoch]);

  const result = reply ? devicePage(state, reply) : null;
  // The rows on screen follow their devices' reports; which devices match is the coordinator's
  // answer, asked again when the fleet summary changes (views/dashboard.ts).
  useWatch(watch, result?.rows.map((d) => d.id) ?? []);
  const choices = filterChoices(reply);
  const go = (change: Partial<DevicesRoute>) => {
    location.hash = formatRoute({ ...route, page: 1, ...change });
  };
  const select = (
    id: string,
    label: string,
    value: string,
    options: string[],
    key: keyof DevicesRoute,
    show: (o: string) => string = (o) => o,
  ) =>
    html`<label for=${id}>${label}</label>
      <select id=${id} value=${value} onChange=${(e: Event) => go({ [key]: (e.target as HTMLSelectElement).value })}>
        <option value="">any</option>
        ${options.map((o) => html`<option value=${o}>${show(o)}</option>`)}
      </select>`;
  return html`<section aria-labelledby="devices-title">
    <h1 id="devices-title">Devices</h1>
    <form class="filters" role="search" onSubmit=${(e: Event) => e.preventDefault()}>
      <label for="device-search">Search</label>
      <input id="device-search" type="search" placeholder="id, label value, or key=value" value=${route.text}
        onInput=${(e: Event) => replaceRoute({ ...route, page: 1, text: (e.target as HTMLInputElement).value })} />
      ${select('device-state', 'State', route.state, choices.states, 'state', stateLabel)}
      ${select('device-model', 'Model', route.model, choices.models, 'model')}
      ${select('device-version', 'Version', route.version, choices.versions, 'version')}
    </form>
    ${loadError ? html`<p class="message error" role="alert" data-field="load-error">Could not list the devices: ${loadError}</p>` : null}
    <p role="status" class="small" data-field="matches">${result ? `${result.total} device${result.total === 1 ? '' : 's'} match` : live ? 'Loading…' : 'Not connected.'}</p>
    <table class="grid" data-table="devices">
      <thead><tr><th scope="col">Device</th><th scope="col">Online</th><th scope="col">Models</th><th scope="col">Labels</th><th scope="col">Last seen</th></tr></thead>
      <tbody>
        ${(result?.rows ?? []).map(
          (d) => html`<tr key=${d.id} data-device=${d.id}>
            <td><a href=${formatRoute({ view: 'device', id: d.id })}>${d.id}</a></td>
            <td>${d.online ? '● online' : '○ offline'}</td>
            <td>${d.models.map(
              (m) =>
                html`<div class=${`st-${m.state}`}><span aria-hidden="true">${stateSymbol(m.state)}</span> ${m.model} ${m.current ?? '–'} <span class="small">${stateLabel(m.state)}${m.state !== 'healthy' && m.version && m.version !== m.current ? ` ${m.version}` : ''}${m.error ? ` ${m.error.code}` : ''}</span></div>`,
            )}</td>
            <td class="small">${Object.entries(d.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')}</td>
            <td class="small">${d.online ? 'now' : ago(d.lastSeen, now)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${result ? html`<${Pager} page=${result.page} pages=${result.pages} total=${result.total} onPage=${(p: number) => go({ page: p })} />` : null}
  </section>`;
}
