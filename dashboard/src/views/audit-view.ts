import { useEffect, useRef, useState } from 'preact/hooks';
import { shortTime } from '../format.js';
import { auditMatches, auditSummary } from '../queries.js';
import type { Route } from '../router.js';
import type { ViewProps } from './context.js';
import { html } from './html.js';
import { replaceRoute } from './navigate.js';

const SHOWN = 500;

interface Verdict {
  ok: boolean;
  count: number;
  head: string | null;
  firstBad: number | null;
  reason: string | null;
}

/** The live tail of the audit log, a filter, and the hash chain's verification. */
export function AuditView({
  state,
  connection,
  live,
  route,
}: ViewProps & { route: Extract<Route, { view: 'audit' }> }) {
  const [verdict, setVerdict] = useState<Verdict | null>(null);
  const [verifyError, setVerifyError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const verify = async () => {
    setBusy(true);
    try {
      setVerdict(await connection.ask<Verdict>('audit.verify'));
      setVerifyError(null);
    } catch (err) {
      setVerifyError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  // Verified once when the view opens (and on the button): a verification walks the whole chain
  // on the coordinator, so it is not repeated at each reconnect of every open page.
  const verifiedOnce = useRef(false);
  // biome-ignore lint/correctness/useExhaustiveDependencies: once, when first live
  useEffect(() => {
    if (!live || verifiedOnce.current) return;
    verifiedOnce.current = true;
    void verify();
  }, [live]);
  const events = state.audit.filter((e) => auditMatches(e, route.text)).reverse();
  return html`<section aria-labelledby="audit-title">
    <h1 id="audit-title">Audit</h1>
    <div class="verify" data-field="verify">
      <button type="button" onClick=${verify} disabled=${!live || busy}>Verify the chain</button>
      ${
        verifyError
          ? html`<span class="st-failed" role="alert">${verifyError}</span>`
          : verdict
            ? verdict.ok
              ? html`<span class="st-healthy" role="status">✓ chain intact: <b data-field="audit-count">${verdict.count}</b> events, head <code data-field="audit-head">${verdict.head ?? '–'}</code></span>`
              : html`<span class="st-failed" role="alert">✕ chain broken at seq ${verdict.firstBad}: ${verdict.reason} (${verdict.count} events)</span>`
            : html`<span role="status">verifying…</span>`
      }
    </div>
    <form class="filters" role="search" onSubmit=${(e: Event) => e.preventDefault()}>
      <label for="audit-filter">Filter</label>
      <input id="audit-filter" type="search" placeholder="action, actor or subject" value=${route.text}
        onInput=${(e: Event) => replaceRoute({ view: 'audit', text: (e.target as HTMLInputElement).value })} />
    </form>
    <p class="small">Newest first; ${events.length > SHOWN ? `the newest ${SHOWN} of ${events.length} loaded` : `${events.length} loaded`} (the full log: <code>otactl audit export</code>).</p>
    <table class="grid" data-table="audit">
      <thead><tr><th scope="col">Seq</th><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Subject</th><th scope="col">Details</th></tr></thead>
      <tbody>
        ${events.slice(0, SHOWN).map(
          (e) => html`<tr key=${e.seq} data-seq=${e.seq} data-action=${e.action}>
            <td class="num">${e.seq}</td><td class="small"><time datetime=${e.ts}>${shortTime(e.ts)}</time></td>
            <td>${e.actor}</td><td>${e.action}</td><td>${e.subject ?? ''}</td><td class="small">${auditSummary(e)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}
