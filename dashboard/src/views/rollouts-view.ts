import type { RolloutSummary } from '../../../shared/messages.js';
import { pct, sortedRollouts } from '../queries.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { StatusBadge, WaveBar } from './wave-bar.js';

/** A rollout in a few lines: status, current wave's bar, failures against the tolerance. */
export function RolloutCard({ summary: s }: { summary: RolloutSummary }) {
  const wave = s.waves[s.currentWave - 1];
  return html`<article class="card" data-rollout=${s.id}>
    <h3><a href=${`#/rollouts/${encodeURIComponent(s.id)}`}>${s.id}</a></h3>
    <p>${s.model} → <b>${s.version}</b> <${StatusBadge} status=${s.status} /></p>
    <p class="small">wave ${s.currentWave} of ${s.waves.length} · failures ${s.failures.count} (${pct(s.failures.rate)} of ${s.failures.assigned}, tolerance ${pct(s.maxFailureRate)})</p>
    ${wave ? html`<${WaveBar} wave=${wave} />` : null}
    ${s.haltReason ? html`<p class="small st-failed">■ ${s.haltReason}</p>` : null}
  </article>`;
}

export function RolloutsView({ state }: ViewProps) {
  const rollouts = sortedRollouts(state);
  return html`<section aria-labelledby="rollouts-title">
    <h1 id="rollouts-title">Rollouts</h1>
    ${
      rollouts.length === 0
        ? html`<p class="muted">No rollout yet. Start one with <code>otactl rollout create --model M --version V --group G --waves 1,10:manual,100</code>.</p>`
        : html`<table class="grid">
            <thead><tr><th scope="col">Rollout</th><th scope="col">Release</th><th scope="col">Status</th><th scope="col">Wave</th><th scope="col">Failures</th><th scope="col">Updated</th></tr></thead>
            <tbody>
              ${rollouts.map(
                (s) => html`<tr key=${s.id} data-rollout=${s.id}>
                  <td><a href=${`#/rollouts/${encodeURIComponent(s.id)}`}>${s.id}</a></td>
                  <td>${s.model} ${s.version}</td>
                  <td><${StatusBadge} status=${s.status} /></td>
                  <td class="num">${s.currentWave} / ${s.waves.length}</td>
                  <td class="num">${s.failures.count} (${pct(s.failures.rate)} / ${pct(s.maxFailureRate)})</td>
                  <td>${s.updatedAt}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
    }
  </section>`;
}
