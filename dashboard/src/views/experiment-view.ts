import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { CommandError } from '../connection.js';
import { confidenceChart, latencyChart } from '../experiment-charts.js';
import {
  ACTION_OPS,
  ARMS,
  type ArmRow,
  armDevices,
  type ComparisonRow,
  DEFAULT_PROMOTE_FORM,
  describeStop,
  type ExperimentAction,
  type ExperimentStatusRow,
  estimateText,
  experimentActions,
  experimentDevicePage,
  formatDuration,
  formatValue,
  intervalText,
  isExperimentEvent,
  levelText,
  limitText,
  needsComparison,
  otherNotReady,
  type PromoteForm,
  promoteBlockers,
  promotePlan,
  pText,
  sortExperimentDevices,
  srmLine,
  verdictSymbol,
} from '../experiments.js';
import { ago, shortTime, stateLabel, stateSymbol } from '../format.js';
import { Poller } from '../poller.js';
import { REAL_TIMERS } from '../render-batcher.js';
import { ArmLegend, BarChartSvg, IntervalBar } from './charts.js';
import { ConfirmDialog } from './confirm-dialog.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { Pager } from './pager.js';
import { useWatch } from './use-watch.js';
import { StatusBadge } from './wave-bar.js';

/**
 * `experiment.compare` again this often while the experiment runs and its page is shown: the
 * coordinator computes it on request from one merged row per device, and its reply is a few KB
 * whatever the fleet. Once the experiment ended it is fetched once more, then no longer.
 */
const COMPARE_EVERY_MS = 5_000;
/**
 * `experiment.status` lists every device of the experiment, so it is asked for less often: what it
 * adds (looks, the end) comes with an audit event, which fetches it at once, and the device rows on
 * screen follow their devices' own topics live.
 */
const STATUS_EVERY_MS = 30_000;

interface Pending {
  action: ExperimentAction;
  title: string;
  effect: string;
  args: Record<string, unknown>;
}

const ACTION_LABELS: Record<ExperimentAction, string> = {
  promote: 'Promote',
  stop: 'Stop',
  'stop-revert': 'Stop and revert',
};

/** One experiment: its arms side by side, each metric's verdict, SRM, the charts, the actions. */
export function ExperimentView(props: ViewProps & { id: string }) {
  const { state, connection, live, ops, now, notify, onAudit, watch, id } = props;
  const [status, setStatus] = useState<ExperimentStatusRow | null>(null);
  const [comparison, setComparison] = useState<ComparisonRow | null>(null);
  const [statusError, setStatusError] = useState<{ code: string; message: string } | null>(null);
  const [compareError, setCompareError] = useState<string | null>(null);
  const [pending, setPending] = useState<Pending | null>(null);
  const [promoteOpen, setPromoteOpen] = useState(false);
  const [form, setForm] = useState<PromoteForm>(DEFAULT_PROMOTE_FORM);
  const [formProblem, setFormProblem] = useState<string | null>(null);
  const [page, setPage] = useState(1);
  // What the pollers read between renders (their closures outlive a render).
  const statusRef = useRef<ExperimentStatusRow | null>(null);
  const comparisonRef = useRef<ComparisonRow | null>(null);
  const pollers = useRef<Poller[]>([]);

  useEffect(() => {
    if (!live) return;
    let gone = false;
    // A hidden tab asks for nothing it already has (a background tab's timers are slowed anyway).
    const hidden = () => typeof document !== 'undefined' && document.hidden;
    const statusPoller = new Poller(
      async () => {
        if (hidden() && statusRef.current) return;
        try {
          const s = await connection.ask<ExperimentStatusRow>('experiment.status', { id });
          if (gone) return;
          statusRef.current = s;
          setStatus(s);
          setStatusError(null);
        } catch (err) {
          if (!gone)
            setStatusError({ code: err instanceof CommandError ? err.code : '', message: (err as Error).message });
        }
      },
      REAL_TIMERS,
      STATUS_EVERY_MS,
    );
    const comparePoller = new Poller(
      async () => {
        if (hidden() && comparisonRef.current) return;
        if (!needsComparison(statusRef.current?.status ?? null, comparisonRef.current)) return;
        try {
          const c = await connection.ask<ComparisonRow>('experiment.compare', { id });
          if (gone) return;
          comparisonRef.current = c;
          setComparison(c);
          setCompareError(null);
        } catch (err) {
          if (!gone) setCompareError((err as Error).message);
        }
      },
      REAL_TIMERS,
      COMPARE_EVERY_MS,
    );
    pollers.current = [statusPoller, comparePoller];
    for (const p of pollers.current) p.start();
    // A look, a halt, a stop or a promotion: both at once, not at the next tick.
    const off = onAudit((e) => {
      if (isExperimentEvent(e, id)) for (const p of pollers.current) p.poke();
    });
    return () => {
      gone = true;
      for (const p of pollers.current) p.stop();
      pollers.current = [];
      off();
    };
  }, [connection, live, id, onAudit]);

  const sorted = useMemo(() => (status ? sortExperimentDevices(status.devices) : []), [status]);
  const list = status ? experimentDevicePage(state, status.model, sorted, page) : null;
  useWatch(watch, list ? list.rows.map((d) => d.id) : []);

  // A confirmation whose action the experiment no longer allows (it ended meanwhile, or the
  // operator lost the role) is withdrawn, saying why, rather than sent to be refused. Not while
  // its command is on its way: the audit event of its own effect may come before the reply.
  const sending = useRef(false);
  const withdrawn =
    pending !== null && !sending.current && (!status || !experimentActions(status, ops).includes(pending.action));
  useEffect(() => {
    if (!withdrawn || !pending) return;
    setPending(null);
    notify(
      `${ACTION_LABELS[pending.action]} withdrawn: ${id} is now ${status ? status.status : 'gone'}${ops.has(ACTION_OPS[pending.action]) ? '' : ', and your role may not do it'}.`,
      'error',
    );
  }, [withdrawn, pending, status, ops, id, notify]);

  if (!status) {
    const missing = statusError?.code === 'E_NOT_FOUND';
    return html`<section><h1>Experiment ${id}</h1>
      ${
        statusError && !missing
          ? html`<p class="message error" role="alert">Could not load the experiment: ${statusError.code ? `${statusError.code}: ` : ''}${statusError.message}</p>`
          : html`<p class="muted" role="status">${missing ? `No experiment ${id} is known to the coordinator.` : live ? 'Loading…' : 'Not connected.'}</p>`
      }
      <p><a href="#/experiments">All experiments</a></p></section>`;
  }

  const actions = experimentActions(status, ops);
  const blockers = promoteBlockers(comparison);
  const perArm = armDevices(status);
  const c = comparison;

  const send = async (p: Pending) => {
    sending.current = true;
    try {
      await connection.ask(ACTION_OPS[p.action], p.args);
      // Closed before `sending` drops: the experiment's new status must not withdraw it.
      setPending(null);
    } finally {
      sending.current = false;
    }
    notify(`${ACTION_LABELS[p.action]}: done for ${id}.`);
    setPromoteOpen(false);
    for (const poller of pollers.current) poller.poke();
  };

  const ask = (action: ExperimentAction) => {
    if (action === 'promote') {
      setPromoteOpen(true);
      setFormProblem(null);
      return;
    }
    const revert = action === 'stop-revert';
    setPending({ action, ...describeStop(status, revert), args: { id, revert } });
  };

  const review = (e: Event) => {
    e.preventDefault();
    const plan = promotePlan(status, form, blockers);
    if (!plan.ok) {
      setFormProblem(plan.problem);
      return;
    }
    setFormProblem(null);
    setPending({ action: 'promote', title: plan.title, effect: plan.effect, args: plan.args });
  };

  const to = status.promotedTo;
  return html`<section aria-labelledby="experiment-title" data-experiment=${id}>
    <p><a href="#/experiments">← Experiments</a></p>
    <h1 id="experiment-title">${id} <${StatusBadge} status=${status.status} /></h1>
    <p data-field="versions">${status.model}: control <b>${status.control}</b> vs candidate <b>${status.candidate}</b> on group <b>${status.group}</b> · split ${100 - status.split}/${status.split} · started ${shortTime(status.startedAt)} by ${status.createdBy}${c ? ` · running for ${formatDuration(c.elapsedMs)}` : ''}</p>
    <p data-field="looks">
      ${
        c
          ? c.look.index === 0
            ? html`Before the first planned look: intervals at its level, ${levelText(c.look.level)}. `
            : html`Planned look <b>${c.look.index}</b> reached: intervals at ${levelText(c.look.level)}. `
          : null
      }
      ${status.lastLook ? html`Last planned look ${status.lastLook.look} (${ago(status.lastLook.at, now)}): <b>${status.lastLook.outcome.replace(/_/g, ' ')}</b>, <span class="small">${status.lastLook.detail}</span>. ` : 'No planned look yet. '}
      ${status.nextLookAt ? html`Next planned look at ${shortTime(status.nextLookAt)}.` : null}
    </p>
    ${
      status.endReason
        ? html`<p class=${status.status === 'halted' ? 'message error' : 'message'} role=${status.status === 'halted' ? 'alert' : undefined} data-field="end-reason"><b>${status.status === 'halted' ? 'Halted' : 'Ended'}${status.endedAt ? ` ${shortTime(status.endedAt)}` : ''}:</b> ${status.endReason}</p>`
        : null
    }
    ${
      to
        ? html`<p data-field="promoted-to">Promoted to ${'rolloutId' in to ? html`rollout <a href=${`#/rollouts/${encodeURIComponent(to.rolloutId)}`}>${to.rolloutId}</a>` : html`channel <b>${to.channel}</b>`}.</p>`
        : null
    }
    ${statusError ? html`<p class="message error" role="alert">Could not refresh the experiment: ${statusError.code ? `${statusError.code}: ` : ''}${statusError.message}</p>` : null}
    ${
      actions.length > 0
        ? html`<div class="actions" role="group" aria-label="Experiment actions">
            ${actions.map(
              (a) =>
                html`<button type="button" class=${a === 'promote' ? 'primary' : 'danger'} disabled=${!live} aria-expanded=${a === 'promote' ? promoteOpen : undefined} onClick=${() => ask(a)}>${a === 'promote' ? 'Promote…' : ACTION_LABELS[a]}</button>`,
            )}
          </div>`
        : null
    }
    ${promoteOpen && actions.includes('promote') ? renderPromoteForm() : null}
    ${
      pending && !withdrawn
        ? html`<${ConfirmDialog}
            title=${pending.title}
            effect=${pending.effect}
            confirmLabel=${ACTION_LABELS[pending.action]}
            needsReason=${false}
            danger=${pending.action !== 'promote' || pending.args.force === true}
            onConfirm=${() => send(pending)}
            onClose=${() => setPending(null)} />`
        : null
    }
    ${compareError ? html`<p class="message error" role="alert">Could not load the comparison: ${compareError}</p>` : null}
    ${c ? renderComparison(c) : html`<p class="muted" role="status">${live ? 'Comparing the arms…' : 'Not connected.'}</p>`}
    <h2>Devices</h2>
    <table class="grid" data-table="experiment-devices">
      <thead><tr><th scope="col">Device</th><th scope="col">Arm</th><th scope="col">State</th><th scope="col">Runs</th><th scope="col">Online</th></tr></thead>
      <tbody>
        ${(list?.rows ?? []).map(
          (d) => html`<tr key=${d.id} data-device=${d.id} data-arm=${d.arm}>
            <td><a href=${`#/devices/${encodeURIComponent(d.id)}`}>${d.id}</a></td>
            <td>${d.arm}</td>
            <td class=${d.state ? `st-${d.state}` : ''}>${d.state ? html`<span aria-hidden="true">${stateSymbol(d.state)}</span> ${stateLabel(d.state)}` : '–'}</td>
            <td>${d.current ?? '–'}</td>
            <td>${d.online ? 'online' : 'offline'}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <${Pager} page=${list?.page ?? 1} pages=${list?.pages ?? 1} total=${list?.total ?? 0} onPage=${setPage} />
  </section>`;

  function renderPromoteForm() {
    const s = status as ExperimentStatusRow;
    const set = (patch: Partial<PromoteForm>) => setForm((f) => ({ ...f, ...patch }));
    return html`<form class="form-panel" aria-labelledby="promote-title" data-form="promote" onSubmit=${review}>
      <h2 id="promote-title">Promote ${s.model} ${s.candidate}</h2>
      <p class="small">A rollout of the candidate over group ${s.group} (waves, gates and the halt rule as for any rollout), or a channel move now. The experiment ends as promoted, with the comparison as evidence in the audit.</p>
      <label for="promote-waves">Waves (cumulative percents; <code>50:manual</code> waits for approval)</label>
      <input id="promote-waves" value=${form.waves} disabled=${form.moveChannel}
        onInput=${(e: Event) => set({ waves: (e.target as HTMLInputElement).value })} />
      <label class="check"><input type="checkbox" checked=${form.moveChannel}
        onChange=${(e: Event) => set({ moveChannel: (e.target as HTMLInputElement).checked })} /> Move the channel now instead of a rollout (every device following it at once, no waves)</label>
      <label for="promote-channel">Channel (blank: stable)</label>
      <input id="promote-channel" value=${form.channel} placeholder="stable"
        onInput=${(e: Event) => set({ channel: (e.target as HTMLInputElement).value })} />
      ${
        blockers.length > 0
          ? html`<p class="message error" data-field="promote-blockers">The coordinator refuses to promote while ${blockers.join(' and ')}: tick Force below to promote anyway.</p>`
          : null
      }
      <label class="check"><input type="checkbox" checked=${form.force}
        onChange=${(e: Event) => set({ force: (e.target as HTMLInputElement).checked })} /> Force: promote although a guardrail metric is worse or the sample ratio is off</label>
      ${form.force ? html`<p class="message error" role="alert">Forcing overrides the guardrails: the candidate goes out although the evidence says it should not. The audit records it under your name.</p>` : null}
      ${formProblem ? html`<p class="message error" role="alert">${formProblem}</p>` : null}
      <div class="actions">
        <button type="button" onClick=${() => setPromoteOpen(false)}>Cancel</button>
        <button type="submit" class="primary" disabled=${!live}>Review promotion…</button>
      </div>
    </form>`;
  }

  function renderArm(a: ArmRow) {
    const d = perArm[a.arm];
    return html`<article class="card arm" data-arm=${a.arm} aria-labelledby=${`arm-${a.arm}`}>
      <h3 id=${`arm-${a.arm}`}><span class=${`swatch arm-${a.arm}`} aria-hidden="true"></span> ${a.arm === 'control' ? 'Control' : 'Candidate'} <b>${a.version}</b></h3>
      <dl class="facts">
        <div><dt>Devices</dt><dd data-field="devices">${a.devices}</dd></div>
        <div><dt>Reporting</dt><dd data-field="reporting">${a.reporting}</dd></div>
        <div><dt>Samples</dt><dd data-field="samples">${a.samples}</dd></div>
        <div><dt>Errors</dt><dd><span data-field="errors">${a.errors}</span>${a.samples > 0 ? html` <span class="small">(${formatValue(a.errors / a.samples, 'error_rate')})</span>` : null}</dd></div>
        <div><dt>Run ${a.version} now</dt><dd data-field="on-version">${d.onVersion} of ${d.devices}</dd></div>
        <div><dt>Online</dt><dd data-field="online">${d.online} of ${d.devices}</dd></div>
      </dl>
    </article>`;
  }

  function renderComparison(c: ComparisonRow) {
    const srm = srmLine(c);
    const others = otherNotReady(c);
    const latency = latencyChart(c);
    const confidence = confidenceChart(c);
    return html`
      <h2>Arms</h2>
      <div class="arms">${ARMS.map((arm) => renderArm(c[arm]))}</div>
      <h2>Metrics</h2>
      <table class="grid" data-table="metrics">
        <thead><tr><th scope="col">Metric</th><th scope="col">Control</th><th scope="col">Candidate</th><th scope="col">Difference</th><th scope="col">Interval (${levelText(c.look.level)})</th><th scope="col">Limit</th><th scope="col">Verdict</th><th scope="col">Devices</th><th scope="col">p</th></tr></thead>
        <tbody>
          ${c.metrics.map(
            (m) => html`<tr key=${m.spec} data-metric=${m.metric} data-verdict=${m.verdict}>
              <th scope="row" title=${m.spec}>${m.metric}</th>
              <td class="num" data-field="control">${formatValue(m.control, m.metric)}</td>
              <td class="num" data-field="candidate">${formatValue(m.candidate, m.metric)}</td>
              <td class="num nowrap" data-field="difference">${estimateText(m)}</td>
              <td data-field="interval"><span class="num">${intervalText(m)}</span> <${IntervalBar} metric=${m} /></td>
              <td class="nowrap" data-field="limit">${limitText(m)}</td>
              <td class=${`verdict verdict-${m.verdict}`} data-field="verdict"><span aria-hidden="true">${verdictSymbol(m.verdict)}</span> ${m.verdict}${m.meetsThreshold ? html` <span class="small">(within the limit)</span>` : null}${m.note ? html`<br /><span class="small" data-field="note">${m.note}</span>` : null}</td>
              <td class="num">${m.devices.control} / ${m.devices.candidate}</td>
              <td class="num nowrap">${m.p === null ? '–' : pText(m.p)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      <p data-field="srm" data-flagged=${String(srm.flagged)} class=${srm.flagged ? 'message error' : 'small'} role=${srm.flagged ? 'alert' : undefined}>
        <b>SRM</b> ${srm.text}${srm.reason ? html`. <b>No automatic decision:</b> ${srm.reason}` : null}
      </p>
      ${
        others.length > 0
          ? html`<p class="small" data-field="not-ready">No automatic decision now: ${others.join('; ')}.</p>`
          : c.status === 'running' && !srm.flagged
            ? html`<p class="small" data-field="not-ready">Ready: the judge decides at the next planned look (${shortTime(c.look.nextAt)}).</p>`
            : null
      }
      <h2>Latency</h2>
      <${ArmLegend} control=${c.control.version} candidate=${c.candidate.version} />
      <${BarChartSvg} chart=${latency} name="latency" unit="ms"
        label=${`latency quantiles in ms, control ${c.control.version} and candidate ${c.candidate.version}`}
        empty="No latency reported yet." />
      <h2>Confidence</h2>
      <${ArmLegend} control=${c.control.version} candidate=${c.candidate.version} />
      <${BarChartSvg} chart=${confidence} name="confidence" unit="%"
        label=${`confidence histograms, share of each arm's inferences per bin of 0.1, control ${c.control.version} and candidate ${c.candidate.version}`}
        empty="No confidence reported yet." />
    `;
  }
}
