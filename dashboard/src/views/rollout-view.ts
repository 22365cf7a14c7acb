import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { AuditEvent, RolloutSummary } from '../../../shared/messages.js';
import { shortTime, stateLabel, stateSymbol } from '../format.js';
import {
  allowedActions,
  auditSummary,
  describeAction,
  formatBytes,
  isRolloutEvent,
  type LiveRolloutDevice,
  PAGE_SIZE,
  pct,
  type RolloutAction,
  type RolloutDevicePage,
  type RolloutDeviceRow,
  rolloutDeviceList,
  rolloutPageArgs,
  rolloutTimeline,
  shownRolloutWave,
} from '../queries.js';
import { REAL_TIMERS, RenderBatcher } from '../render-batcher.js';
import { ConfirmDialog } from './confirm-dialog.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { Pager } from './pager.js';
import { useWatch } from './use-watch.js';
import { StatusBadge, WaveBar } from './wave-bar.js';

const ACTION_OPS: Record<RolloutAction, { op: string; label: string; args: Record<string, unknown> }> = {
  approve: { op: 'rollout.approve', label: 'Approve next wave', args: {} },
  promote: { op: 'rollout.promote', label: 'Promote', args: {} },
  halt: { op: 'rollout.halt', label: 'Halt', args: {} },
  resume: { op: 'rollout.resume', label: 'Resume', args: {} },
  'abort-keep': { op: 'rollout.abort', label: 'Abort, keep', args: { policy: 'keep' } },
  'abort-revert': { op: 'rollout.abort', label: 'Abort, revert', args: { policy: 'revert' } },
};

/** Audit actions after which the rollout's device list is fetched again (new devices, set back). */
const RELOAD_ON = new Set(['rollout.wave_started', 'rollout.aborted', 'rollout.created']);
/**
 * The device list (`rollout.status`) is fetched again when the summary's counts move, at most this
 * often: the page follows only the rows on screen live, so the state filter and the other pages
 * are as of the last fetch. The counts themselves come from the summary, always current.
 */
const ROWS_REFRESH_MS = 3_000;

export function RolloutView(props: ViewProps & { id: string }) {
  const { state, connection, live, ops, notify, onAudit, id, watch } = props;
  const summary = state.rollouts.get(id);
  const [rows, setRows] = useState<RolloutDevicePage | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [loadedTimeline, setTimeline] = useState<AuditEvent[]>([]);
  const [generation, setGeneration] = useState(0);
  // The action being confirmed, with the summary its confirmation describes (taken when it opened,
  // so the numbers do not change under the cursor).
  const [pending, setPending] = useState<{ action: RolloutAction; summary: RolloutSummary } | null>(null);
  const [wave, setWave] = useState<number | null>(null);
  const [stateFilter, setStateFilter] = useState('');
  const [page, setPage] = useState(1);

  // The summary's counts moved: the rows again, throttled (each fetch is the whole rollout), and
  // never two at once: a change while one is on its way asks for one more after it (a reply slower
  // than the throttle must not be thrown away for a newer request, again and again).
  const [rowsGeneration, setRowsGeneration] = useState(0);
  const fetching = useRef(false);
  const again = useRef(false);
  const rowsRefresher = useMemo(
    () =>
      new RenderBatcher(
        () => {
          if (fetching.current) again.current = true;
          else setRowsGeneration((g) => g + 1);
        },
        REAL_TIMERS,
        ROWS_REFRESH_MS,
      ),
    [],
  );
  useEffect(() => () => rowsRefresher.cancel(), [rowsRefresher]);

  // The page of the device list on screen (the coordinator filters and pages): at open, at every
  // reconnect, when the wave, the filter or the page changes, after a wave starts, and as the
  // counts move. Until the summary is known, the wave to ask for is not.
  const shownWave = summary ? shownRolloutWave(summary, wave) : null;
  useEffect(() => {
    if (!live || shownWave === null) return;
    let gone = false;
    fetching.current = true;
    const args = rolloutPageArgs(id, shownWave, stateFilter, page);
    connection
      .ask<{ devices: RolloutDeviceRow[]; devicesTotal: number }>('rollout.status', args)
      .then((r) => {
        if (gone) return;
        const last = Math.max(1, Math.ceil(r.devicesTotal / PAGE_SIZE));
        // A page past the end (the filter matches fewer devices now): the last one instead.
        if (r.devices.length === 0 && page > last) {
          setPage(last);
          return;
        }
        setRows({ rows: r.devices, total: r.devicesTotal });
        setLoadError(null);
      })
      .catch((err: Error) => !gone && setLoadError(err.message))
      .finally(() => {
        if (gone) return;
        fetching.current = false;
        if (again.current) {
          again.current = false;
          rowsRefresher.schedule();
        }
      });
    return () => {
      gone = true;
      fetching.current = false;
    };
  }, [connection, live, id, shownWave, stateFilter, page, generation, rowsGeneration, rowsRefresher]);

  // The timeline: at open, at every reconnect, after a wave starts (then the live tail adds to it).
  useEffect(() => {
    if (!live) return;
    let gone = false;
    connection
      .ask<AuditEvent[]>('audit.ls', { rolloutId: id, limit: 200, newest: true })
      .then((events) => !gone && setTimeline(events))
      .catch((err: Error) => !gone && setLoadError(`the timeline: ${err.message}`));
    return () => {
      gone = true;
    };
  }, [connection, live, id, generation]);

  const countsKey = summary ? `${summary.status}:${JSON.stringify(summary.waves.map((w) => w.counts))}` : '';
  const firstCounts = useRef(countsKey);
  useEffect(() => {
    // Not for the summary the view opened with: the first fetch is the effect above.
    if (countsKey === firstCounts.current) return;
    firstCounts.current = '';
    rowsRefresher.schedule();
  }, [countsKey, rowsRefresher]);

  // Only the rare events that change the device list set state here: the timeline is read from
  // the live tail at each (batched) render, so a wave of outcomes never renders once per event.
  useEffect(
    () =>
      onAudit((e) => {
        if (RELOAD_ON.has(e.action) && isRolloutEvent(e, id)) setGeneration((g) => g + 1);
      }),
    [onAudit, id],
  );

  // A confirmation whose action the rollout no longer allows (it moved on, or the operator lost
  // the role) is withdrawn, saying why, rather than sent to be refused.
  // Not while its command is on its way: the rollout's new summary may arrive before the reply.
  const sending = useRef(false);
  const withdrawn =
    pending !== null &&
    !sending.current &&
    (!summary || !allowedActions(summary).includes(pending.action) || !ops.has(ACTION_OPS[pending.action].op));
  useEffect(() => {
    if (!withdrawn || !pending) return;
    setPending(null);
    notify(
      `${ACTION_OPS[pending.action].label} withdrawn: ${id} is now ${summary ? summary.status.replace('_', ' ') : 'gone'}${ops.has(ACTION_OPS[pending.action].op) ? '' : ', and your role may not do it'}.`,
      'error',
    );
  }, [withdrawn, pending, summary, ops, id, notify]);

  const list = summary && rows ? rolloutDeviceList(state, summary, rows, { wave, page }) : null;
  useWatch(watch, list ? list.onScreen.map((d) => d.id) : []);

  if (!summary) {
    return html`<section><h1>Rollout ${id}</h1>
      <p class="muted" role="status">${live ? `No rollout ${id} is known to the coordinator.` : 'Loading…'}</p>
      <p><a href="#/rollouts">All rollouts</a></p></section>`;
  }

  const timeline = rolloutTimeline(loadedTimeline, state.audit, id);
  const onScreen: LiveRolloutDevice[] = list?.onScreen ?? [];
  const actions = allowedActions(summary).filter((a) => ops.has(ACTION_OPS[a].op));

  const run = async (a: RolloutAction, reason: string) => {
    const spec = ACTION_OPS[a];
    const args = a === 'halt' ? { id, reason } : { id, ...spec.args };
    sending.current = true;
    try {
      await connection.ask(spec.op, args);
    } finally {
      sending.current = false;
    }
    notify(`${spec.label}: done for ${id}.`);
  };

  return html`<section aria-labelledby="rollout-title" data-rollout=${id}>
    <p><a href="#/rollouts">← Rollouts</a></p>
    <h1 id="rollout-title">${id} <${StatusBadge} status=${summary.status} /></h1>
    <p>${summary.model} → <b>${summary.version}</b> · wave <b data-field="current-wave">${summary.currentWave}</b> of ${summary.waves.length}${summary.abortPolicy ? ` · aborted (${summary.abortPolicy})` : ''}${summary.reverted ? ` · ${summary.reverted} set back` : ''}</p>
    <p data-field="failures">Failures: <b>${summary.failures.count}</b> of ${summary.failures.assigned} assigned (${pct(summary.failures.rate)}${summary.failures.acknowledged ? `, ${summary.failures.acknowledged} acknowledged by resume` : ''}); the rollout halts above ${pct(summary.maxFailureRate)}.</p>
    ${summary.haltReason ? html`<p class="message error" role="alert" data-field="halt-reason"><b>Halted:</b> ${summary.haltReason}</p>` : null}
    ${
      summary.analysis
        ? html`<p data-field="analysis" data-state=${summary.analysis.state}><b>Analysis of wave ${summary.analysis.wave}:</b> ${summary.analysis.state} (${summary.analysis.measurements} of ${summary.analysis.maxMeasurements} measurements, failures ${summary.analysis.failures} of ${summary.analysis.failureLimit} allowed)${summary.analysis.detail ? html`<br /><span class="small">${summary.analysis.detail}</span>` : null}</p>`
        : null
    }
    ${
      actions.length > 0
        ? html`<div class="actions" role="group" aria-label="Rollout actions">
            ${actions.map(
              (a) =>
                html`<button type="button" class=${a.startsWith('abort') || a === 'halt' ? 'danger' : 'primary'} disabled=${!live} onClick=${() => setPending({ action: a, summary })}>${ACTION_OPS[a].label}</button>`,
            )}
          </div>`
        : null
    }
    ${
      pending && !withdrawn
        ? html`<${ConfirmDialog}
            ...${describeAction(pending.action, pending.summary)}
            confirmLabel=${ACTION_OPS[pending.action].label}
            needsReason=${pending.action === 'halt'}
            danger=${pending.action.startsWith('abort') || pending.action === 'halt'}
            onConfirm=${(reason: string) => run(pending.action, reason)}
            onClose=${() => setPending(null)} />`
        : null
    }
    <h2>Waves</h2>
    <ol class="waves">
      ${summary.waves.map(
        (w) => html`<li class="wave" data-wave=${w.wave} data-state=${w.state}>
          <div class="wave-head">
            <button type="button" class="link-button" aria-pressed=${shownWave === w.wave} onClick=${() => {
              setWave(w.wave);
              setPage(1);
            }}>Wave ${w.wave}</button>
            <span>${w.percent}% · ${w.devices} device${w.devices === 1 ? '' : 's'} · ${w.approval === 'manual' ? 'manual gate' : 'automatic'}${w.analysis ? ' · analysis gate after' : ''}</span>
            <${StatusBadge} status=${w.state} />
            ${w.state === 'waiting_approval' ? html`<b class="gate">waits for approval</b>` : null}
            ${w.reverted ? html`<span class="small">${w.reverted} set back</span>` : null}
          </div>
          <${WaveBar} wave=${w} />
        </li>`,
      )}
    </ol>
    <h2>Devices of wave ${shownWave}</h2>
    ${loadError ? html`<p class="message error" role="alert">Could not load the devices: ${loadError}</p>` : null}
    <div class="filters" role="group" aria-label="Filter by state">
      <button type="button" aria-pressed=${stateFilter === ''} onClick=${() => setStateFilter('')}>all ${list?.inWave ?? 0}</button>
      ${[...(list?.counts ?? [])].map(
        ([s, n]) =>
          html`<button type="button" aria-pressed=${stateFilter === s} onClick=${() => {
            setStateFilter(s);
            setPage(1);
          }}>${stateSymbol(s)} ${stateLabel(s)} ${n}</button>`,
      )}
    </div>
    <table class="grid" data-table="rollout-devices">
      <thead><tr><th scope="col">Device</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col">Error</th><th scope="col">Online</th><th scope="col">Runs</th></tr></thead>
      <tbody>
        ${onScreen.map(
          (d) => html`<tr key=${d.id} data-device=${d.id} data-state=${d.state}>
            <td><a href=${`#/devices/${encodeURIComponent(d.id)}`}>${d.id}</a></td>
            <td class=${`st-${d.state}`}><span aria-hidden="true">${stateSymbol(d.state)}</span> ${stateLabel(d.state)}${d.revertedTo ? html` <span class="small">(${d.revertedTo.version === null ? 'set back: keeps what it runs' : `set back to ${d.revertedTo.version}`})</span>` : null}</td>
            <td>${d.progress && d.progress.total > 0 ? html`<progress max=${d.progress.total} value=${d.progress.bytes} aria-label=${`download of ${d.id}`}></progress> ${formatBytes(d.progress.bytes)} / ${formatBytes(d.progress.total)}` : ''}</td>
            <td>${d.error ? html`<code class="error-code">${d.error.code}</code> <span class="small">${d.error.message}</span>` : ''}</td>
            <td>${d.online ? 'online' : 'offline'}</td>
            <td>${d.current ?? '–'}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <${Pager} page=${list?.page ?? 1} pages=${list?.pages ?? 1} total=${list?.matching ?? 0} onPage=${setPage} />
    <h2>Timeline</h2>
    ${timeline.total > timeline.events.length ? html`<p class="small">The newest ${timeline.events.length} of ${timeline.total} events (all of them: <code>otactl audit ls --rollout ${id}</code>).</p>` : null}
    <ol class="timeline" data-table="rollout-timeline">
      ${timeline.events.map(
        (e) => html`<li key=${e.seq} data-action=${e.action}>
          <time datetime=${e.ts}>${shortTime(e.ts)}</time> <b>${e.action}</b> by ${e.actor}${' '}<span class="small">${auditSummary(e)}</span>
        </li>`,
      )}
    </ol>
  </section>`;
}
