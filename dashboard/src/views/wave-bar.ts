import type { RolloutSummary } from '../../../shared/messages.js';
import { stateLabel, stateSymbol } from '../format.js';
import { waveSegments } from '../queries.js';
import { html } from './html.js';

/**
 * A wave as a bar split by device state, with a text legend (state, symbol, count) under it: the
 * bar's colours are a second signal, never the only one. The bar itself is one image for screen
 * readers, labelled with the same counts.
 */
export function WaveBar({ wave }: { wave: RolloutSummary['waves'][number] }) {
  const segments = waveSegments(wave);
  const label = segments.length ? segments.map((s) => `${stateLabel(s.state)} ${s.count}`).join(', ') : 'no devices';
  return html`<div class="wave-bar-wrap">
    <div class="wave-bar" role="img" aria-label=${`wave ${wave.wave}: ${label}`}>
      ${segments.map(
        (s) =>
          html`<span class=${`seg st-${s.state}`} style=${{ width: `${s.percent}%` }} title=${`${stateLabel(s.state)}: ${s.count}`}></span>`,
      )}
    </div>
    <ul class="legend" data-wave=${wave.wave}>
      ${segments.map(
        (s) =>
          html`<li class=${`st-${s.state}`} data-state=${s.state}><span class="sym" aria-hidden="true">${stateSymbol(s.state)}</span> ${stateLabel(s.state)} <b class="count">${s.count}</b></li>`,
      )}
    </ul>
  </div>`;
}

export function StatusBadge({ status }: { status: string }) {
  return html`<span class=${`badge st-${status}`} data-status=${status}><span aria-hidden="true">${stateSymbol(status)}</span> ${stateLabel(status)}</span>`;
}
