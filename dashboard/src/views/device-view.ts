import { useEffect, useState } from 'preact/hooks';
import { type ListedModel, listedDevice } from '../../../shared/device-row.js';
import type { DeviceRow } from '../fleet-state.js';
import { ago, shortTime, stateLabel, stateSymbol } from '../format.js';
import { deviceView } from '../queries.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { useWatch } from './use-watch.js';

/** The result of `device.show` the page reads (checked against the coordinator's at typecheck). */
export interface DeviceShow extends Omit<DeviceRow, 'models'> {
  lastReport: { models: Record<string, ListedModel> } | null;
  facts: Record<string, unknown> | null;
  desired: { model: string; releaseId: string; rolloutId: string | null; source: string; updatedAt: string }[];
  history: {
    model: string;
    state: string;
    version: string | null;
    rolloutId: string | null;
    error: { code: string; message: string } | null;
    ts: string;
  }[];
}

/** One device: its models (current, previous, state, error), facts, desired entries and history. */
export function DeviceView(props: ViewProps & { id: string }) {
  const { state, connection, live, now, id, watch } = props;
  useWatch(watch, [id]);
  const d = deviceView(state, id);
  const [detail, setDetail] = useState<DeviceShow | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Fetched again when the device's history grows (a model changes state or version) or it comes
  // and goes: pushed, not polled. Not on every report: a download reports its progress often.
  const report = state.reports.get(id);
  const reportTs = report
    ? Object.entries(report.models)
        .map(([m, x]) => `${m}:${x.state}:${x.version}`)
        .join(',')
    : '';
  const statusTs = String(state.statuses.get(id)?.online ?? '');
  useEffect(() => {
    if (!live) return;
    let gone = false;
    connection
      .ask<DeviceShow>('device.show', { id })
      .then((r) => {
        if (gone) return;
        // Its row, as a list row would have it: a device opened by its address (a link, a
        // bookmark) may be on no page the list fetched.
        state.putDevice(listedDevice(r, r.lastReport?.models));
        setDetail(r);
        setError(null);
      })
      .catch((err: Error) => !gone && setError(err.message));
    return () => {
      gone = true;
    };
  }, [connection, live, state, id, reportTs, statusTs]);

  if (!d) {
    return html`<section><h1>Device ${id}</h1>
      <p class="message" role="status">${error ?? (live ? 'Loading…' : 'Not connected.')}</p>
      <p><a href="#/devices">All devices</a></p></section>`;
  }
  const facts = state.statuses.get(id)?.facts ?? (detail?.facts as Record<string, unknown> | null | undefined) ?? null;
  return html`<section aria-labelledby="device-title" data-device=${id}>
    <p><a href="#/devices">← Devices</a></p>
    <h1 id="device-title">${id}</h1>
    <p data-field="presence">${d.online ? `● online (last message ${ago(d.lastSeen, now)})` : `○ offline · last seen ${ago(d.lastSeen, now)}`}${d.agentVersion ? ` · agent ${d.agentVersion}` : ''}${d.channel ? ` · channel ${d.channel}` : ''}</p>
    <p class="small">${Object.entries(d.labels).map(([k, v]) => html`<span class="tag">${k}=${v}</span> `)}</p>
    ${error ? html`<p class="message error" role="alert">${error}</p>` : null}
    <h2>Models</h2>
    <table class="grid" data-table="device-models">
      <thead><tr><th scope="col">Model</th><th scope="col">State</th><th scope="col">About</th><th scope="col">Current</th><th scope="col">Previous</th><th scope="col">Rollout</th><th scope="col">Error</th></tr></thead>
      <tbody>
        ${d.models.map(
          (m) => html`<tr key=${m.model} data-model=${m.model}>
            <th scope="row">${m.model}</th>
            <td class=${`st-${m.state}`}><span aria-hidden="true">${stateSymbol(m.state)}</span> ${stateLabel(m.state)}</td>
            <td>${m.version ?? '–'}</td>
            <td>${m.current ?? '–'}</td>
            <td>${m.previousVersion ?? '–'}</td>
            <td>${m.rolloutId ? html`<a href=${`#/rollouts/${encodeURIComponent(m.rolloutId)}`}>${m.rolloutId}</a>` : '–'}</td>
            <td>${m.error ? html`<code class="error-code">${m.error.code}</code> <span class="small">${m.error.message}</span>` : ''}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <h2>Facts</h2>
    ${
      facts
        ? html`<dl class="facts">${Object.entries(facts).map(([k, v]) => html`<div><dt>${k}</dt><dd>${Array.isArray(v) ? v.join(', ') || 'none' : String(v)}</dd></div>`)}</dl>`
        : html`<p class="muted">Not reported yet.</p>`
    }
    <h2>Desired</h2>
    ${
      detail && detail.desired.length > 0
        ? html`<table class="grid"><thead><tr><th scope="col">Model</th><th scope="col">Release</th><th scope="col">Source</th><th scope="col">Since</th></tr></thead>
            <tbody>${detail.desired.map((x) => html`<tr key=${x.model}><td>${x.model}</td><td>${x.releaseId}</td><td>${x.source}${x.rolloutId ? ` (${x.rolloutId})` : ''}</td><td>${shortTime(x.updatedAt)}</td></tr>`)}</tbody></table>`
        : html`<p class="muted">${detail ? 'Nothing assigned.' : 'Loading…'}</p>`
    }
    <h2>History</h2>
    <ol class="timeline" data-table="device-history">
      ${(detail?.history ?? [])
        .slice()
        .reverse()
        .map(
          (h, i) => html`<li key=${`${h.ts}-${i}`}>
            <time datetime=${h.ts}>${shortTime(h.ts)}</time> ${h.model} <span class=${`st-${h.state}`}>${stateSymbol(h.state)} ${stateLabel(h.state)}</span> ${h.version ?? ''}${' '}${h.error ? html`<code class="error-code">${h.error.code}</code>` : null}
          </li>`,
        )}
    </ol>
  </section>`;
}
