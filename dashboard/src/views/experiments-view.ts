import { useEffect, useState } from 'preact/hooks';
import { changesExperiments, type ExperimentRow, lastLookText, sortedExperiments, splitText } from '../experiments.js';
import { ago, shortTime } from '../format.js';
import { Poller } from '../poller.js';
import { REAL_TIMERS } from '../render-batcher.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { StatusBadge } from './wave-bar.js';

/**
 * `experiment.ls` again at most this often while the list is shown. What changes it (created,
 * a planned look, halted, stopped, promoted) is an audit event, which fetches it at once; this is
 * the safety net for an event the page missed.
 */
const LIST_EVERY_MS = 60_000;

/** Every experiment: running first, then the newest. */
export function ExperimentsView({ connection, live, now, onAudit }: ViewProps) {
  const [list, setList] = useState<ExperimentRow[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!live) return;
    let gone = false;
    const poller = new Poller(
      async () => {
        try {
          const rows = await connection.ask<ExperimentRow[]>('experiment.ls');
          if (gone) return;
          setList(rows);
          setError(null);
        } catch (err) {
          if (!gone) setError((err as Error).message);
        }
      },
      REAL_TIMERS,
      LIST_EVERY_MS,
    );
    poller.start();
    const off = onAudit((e) => {
      if (changesExperiments(e)) poller.poke();
    });
    return () => {
      gone = true;
      poller.stop();
      off();
    };
  }, [connection, live, onAudit]);

  const rows = list ? sortedExperiments(list) : [];
  return html`<section aria-labelledby="experiments-title">
    <h1 id="experiments-title">Experiments</h1>
    ${error ? html`<p class="message error" role="alert">Could not load the experiments: ${error}</p>` : null}
    ${
      list === null
        ? html`<p class="muted" role="status">${live ? 'Loading…' : 'Not connected.'}</p>`
        : rows.length === 0
          ? html`<p class="muted">No experiment yet. Start one with <code>otactl experiment create --model M --control V1 --candidate V2 --group G --metric 'latency_ms p95 <= +10%'</code>.</p>`
          : html`<table class="grid" data-table="experiments">
              <thead><tr><th scope="col">Experiment</th><th scope="col">Model</th><th scope="col">Control vs candidate</th><th scope="col">Group</th><th scope="col">Split (devices)</th><th scope="col">Status</th><th scope="col">Last look</th><th scope="col">Started</th></tr></thead>
              <tbody>
                ${rows.map(
                  (e) => html`<tr key=${e.id} data-experiment=${e.id}>
                    <td><a href=${`#/experiments/${encodeURIComponent(e.id)}`}>${e.id}</a></td>
                    <td>${e.model}</td>
                    <td data-field="versions">${e.control} vs ${e.candidate}</td>
                    <td>${e.group}</td>
                    <td class="num" data-field="split">${splitText(e)}</td>
                    <td><${StatusBadge} status=${e.status} /></td>
                    <td data-field="last-look">${lastLookText(e)}${e.lastLook ? html` <span class="small">${ago(e.lastLook.at, now)}</span>` : null}</td>
                    <td class="small">${shortTime(e.startedAt)}</td>
                  </tr>`,
                )}
              </tbody>
            </table>`
    }
  </section>`;
}
