import { formatBytes } from '../queries.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';

/** What is published, signed by which keys, and which channel points where. */
export function ReleasesView({ state }: ViewProps) {
  const releases = [...state.releases].sort((a, b) => (a.publishedAt < b.publishedAt ? 1 : -1));
  const channelsOf = (id: string) => state.channels.filter((c) => c.releaseId === id).map((c) => c.channel);
  return html`<section aria-labelledby="releases-title">
    <h1 id="releases-title">Releases and channels</h1>
    <h2>Channels</h2>
    ${
      state.channels.length === 0
        ? html`<p class="muted">No channel yet.</p>`
        : html`<table class="grid" data-table="channels"><thead><tr><th scope="col">Model</th><th scope="col">Channel</th><th scope="col">Release</th><th scope="col">Moved</th></tr></thead>
            <tbody>${state.channels.map((c) => html`<tr key=${c.id}><td>${c.model}</td><td>${c.channel}</td><td>${c.releaseId}</td><td>${c.updatedAt}</td></tr>`)}</tbody></table>`
    }
    <h2>Releases</h2>
    ${
      releases.length === 0
        ? html`<p class="muted">Nothing published yet (<code>otactl release publish</code>).</p>`
        : html`<table class="grid" data-table="releases">
            <thead><tr><th scope="col">Release</th><th scope="col">Size</th><th scope="col">Signed by</th><th scope="col">Published</th><th scope="col">Channels</th><th scope="col">Trust</th></tr></thead>
            <tbody>
              ${releases.map(
                (r) => html`<tr key=${r.id} data-release=${r.id}>
                  <th scope="row">${r.model} ${r.version}</th>
                  <td class="num">${formatBytes(r.size)}</td>
                  <td>${(r.signedBy ?? []).map((k) => html`<code title=${k}>${k.slice(0, 12)}</code> `)}</td>
                  <td class="small">${r.publishedAt} by ${r.publishedBy}</td>
                  <td>${channelsOf(r.id).join(', ')}</td>
                  <td>${r.revoked ? html`<span class="st-failed">✕ revoked</span> <span class="small">${r.revokedReason}</span>` : html`<span class="st-healthy">✓ trusted</span>`}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
    }
  </section>`;
}
