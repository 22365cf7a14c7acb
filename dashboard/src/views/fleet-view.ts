import { fleetOverview } from '../queries.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { RolloutCard } from './rollouts-view.js';

/** Fleet at a glance: devices online/offline, which version how many devices run, channels, active rollouts. */
export function FleetView({ state }: ViewProps) {
  const o = fleetOverview(state);
  return html`<section aria-labelledby="fleet-title">
    <h1 id="fleet-title">Fleet</h1>
    <dl class="stats">
      <div><dt>Devices</dt><dd data-stat="devices">${o.devices ?? '…'}</dd></div>
      <div><dt>Online</dt><dd data-stat="online">${o.online ?? '…'}</dd></div>
      <div><dt>Offline</dt><dd data-stat="offline">${o.offline ?? '…'}</dd></div>
      <div><dt>Active rollouts</dt><dd data-stat="active-rollouts">${o.activeRollouts.length}</dd></div>
    </dl>
    <h2>Active rollouts</h2>
    ${
      o.activeRollouts.length === 0
        ? html`<p class="muted">No rollout is running. Start one with <code>otactl rollout create</code>.</p>`
        : html`<div class="cards">${o.activeRollouts.map((r) => html`<${RolloutCard} summary=${r} key=${r.id} />`)}</div>`
    }
    <h2>Versions per model</h2>
    ${
      o.devices === null
        ? html`<p class="muted" role="status">Waiting for the coordinator's fleet summary…</p>`
        : o.models.length === 0
          ? html`<p class="muted">No device has reported a model yet.</p>`
          : html`<table class="grid">
            <caption class="sr-only">Which version how many devices run, per model</caption>
            <thead><tr><th scope="col">Model</th><th scope="col">Version</th><th scope="col">Devices</th><th scope="col">Share</th></tr></thead>
            <tbody>
              ${o.models.flatMap((m) =>
                m.versions.map((v, i) => {
                  const total = m.versions.reduce((n, x) => n + x.devices, 0);
                  const share = total ? Math.round((100 * v.devices) / total) : 0;
                  return html`<tr key=${`${m.model}@${v.version}`}>
                    ${i === 0 ? html`<th scope="row" rowspan=${m.versions.length}>${m.model}${m.failing ? html`<div class="small st-failed">✕ ${m.failing} failing</div>` : null}${m.updating ? html`<div class="small">${m.updating} updating</div>` : null}</th>` : null}
                    <td><a href=${`#/devices?model=${encodeURIComponent(m.model)}&version=${encodeURIComponent(v.version)}`}>${v.version}</a></td>
                    <td class="num">${v.devices}</td>
                    <td><span class="meter" role="img" aria-label=${`${share}%`}><span style=${{ width: `${share}%` }}></span></span> ${share}%</td>
                  </tr>`;
                }),
              )}
            </tbody>
          </table>`
    }
    <h2>Channels</h2>
    ${
      state.channels.length === 0
        ? html`<p class="muted">No channel yet (<code>otactl release publish --channel</code>).</p>`
        : html`<table class="grid">
            <thead><tr><th scope="col">Channel</th><th scope="col">Release</th><th scope="col">Moved</th></tr></thead>
            <tbody>${state.channels.map((c) => html`<tr key=${c.id}><td>${c.id}</td><td>${c.releaseId}</td><td>${c.updatedAt}</td></tr>`)}</tbody>
          </table>`
    }
  </section>`;
}
