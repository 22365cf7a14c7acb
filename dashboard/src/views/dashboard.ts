import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { AuditEvent } from '../../../shared/messages.js';
import { Connection, type LinkState } from '../connection.js';
import { type ChannelRow, FleetState, type ReleaseRow } from '../fleet-state.js';
import { REAL_TIMERS, RenderBatcher } from '../render-batcher.js';
import { formatRoute, parseRoute, type Route, VIEWS } from '../router.js';
import type { Credentials } from '../session-store.js';
import { AuditView } from './audit-view.js';
import type { ViewProps } from './context.js';
import { DeviceView } from './device-view.js';
import { DevicesView } from './devices-view.js';
import { ExperimentView } from './experiment-view.js';
import { ExperimentsView } from './experiments-view.js';
import { FleetView } from './fleet-view.js';
import { html } from './html.js';
import { ReleasesView } from './releases-view.js';
import { RolloutView } from './rollout-view.js';
import { RolloutsView } from './rollouts-view.js';

/** Audit actions after which a snapshot is fetched again (what the live topics do not carry). */
const REFRESH_ON: Record<string, readonly ('devices' | 'releases' | 'channels')[]> = {
  'device.enrolled': ['devices'],
  'device.removed': ['devices'],
  'release.published': ['releases', 'channels'],
  'channel.moved': ['channels', 'devices'],
  'key.revoked': ['releases'],
  'key.added': ['releases'],
  'trust.published': ['releases'],
  'rollout.completed': ['channels'],
};
/** Refreshes asked for within this long are one request. */
const REFRESH_DEBOUNCE_MS = 500;
/**
 * The devices list is a page the coordinator filtered (`device.find`; the page does not receive
 * every report): while it filters on state, model or version, the page is asked for again when the
 * fleet summary says something changed, at most this often.
 */
const DEVICES_REFRESH_MS = 5_000;

interface Notice {
  id: number;
  text: string;
  kind: 'info' | 'error';
}

/** Exposed for bench:dashboard and the browser tests: how fast reports reach the screen. */
declare global {
  interface Window {
    otaDashboard?: { state: FleetState; renders: number };
  }
}

export function Dashboard({
  credentials,
  prefix,
  onAccepted,
  onRefused,
  onSignOut,
}: {
  credentials: Credentials;
  prefix: string;
  onAccepted: () => void;
  onRefused: (message: string) => void;
  onSignOut: () => void;
}) {
  const state = useMemo(() => new FleetState(prefix), [prefix]);
  const [, setFrame] = useState(0);
  const [link, setLink] = useState<LinkState>({ kind: 'connecting' });
  const [ops, setOps] = useState<ReadonlySet<string>>(new Set());
  const [role, setRole] = useState<string | null>(null);
  const [route, setRoute] = useState<Route>(() => parseRoute(location.hash));
  const [notices, setNotices] = useState<Notice[]>([]);
  const auditListeners = useRef(new Set<(e: AuditEvent) => void>());
  const connectionRef = useRef<Connection | null>(null);
  const renders = useRef(0);
  const routeRef = useRef(route);
  routeRef.current = route;
  // Set by the connection effect: a devices refresh, throttled to DEVICES_REFRESH_MS.
  const devicesRefresh = useRef<RenderBatcher | null>(null);

  const notify = useCallback((text: string, kind: 'info' | 'error' = 'info') => {
    const id = Date.now() + Math.random();
    setNotices((n) => [...n.slice(-3), { id, text, kind }]);
    setTimeout(() => setNotices((n) => n.filter((x) => x.id !== id)), kind === 'error' ? 12_000 : 5_000);
  }, []);

  const batcher = useMemo(() => new RenderBatcher(() => setFrame(state.version), REAL_TIMERS), [state]);

  // After each render is on screen: the reports it drew count as shown (bench:dashboard).
  useEffect(() => {
    renders.current++;
    state.rendered(Date.now());
    window.otaDashboard = { state, renders: renders.current };
  });

  // Filtering the devices list on what changes with reports: its snapshot may be minutes old.
  const snapshotFilter = filtersOnReports(route);
  useEffect(() => {
    if (snapshotFilter) devicesRefresh.current?.schedule();
  }, [snapshotFilter]);

  useEffect(() => {
    const onHash = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    let refreshTimer: ReturnType<typeof setTimeout> | null = null;
    const due = new Set<'devices' | 'releases' | 'channels'>();
    let stopped = false;
    let auditFrom = 0;
    const refresh = async (what: ReadonlySet<'devices' | 'releases' | 'channels'>) => {
      const c = connectionRef.current;
      if (c?.state.kind !== 'live') return;
      try {
        await Promise.all([
          // The devices view asks for its own page (device.find); it is told to ask again.
          what.has('devices') ? state.staleDevices() : null,
          what.has('releases') ? c.ask<ReleaseRow[]>('release.ls').then((r) => state.setReleases(r)) : null,
          what.has('channels') ? c.ask<ChannelRow[]>('channel.ls').then((r) => state.setChannels(r)) : null,
        ]);
        batcher.schedule();
      } catch (err) {
        if (!stopped) notify(`Could not refresh: ${(err as Error).message}`, 'error');
      }
    };
    const scheduleRefresh = (what: readonly ('devices' | 'releases' | 'channels')[]) => {
      for (const w of what) due.add(w);
      if (refreshTimer !== null) return;
      refreshTimer = setTimeout(() => {
        refreshTimer = null;
        const now = new Set(due);
        due.clear();
        void refresh(now);
      }, REFRESH_DEBOUNCE_MS);
    };
    const devicesRefresher = new RenderBatcher(() => scheduleRefresh(['devices']), REAL_TIMERS, DEVICES_REFRESH_MS);
    devicesRefresh.current = devicesRefresher;
    // Everything the live topics do not carry, fetched at each (re)connect: what happened while
    // the page was away is in these snapshots, and the audit tail continues from its last seq.
    const loadSnapshot = async (c: Connection) => {
      try {
        const who = await c.ask<{ id: string; role: string; ops: string[] }>('operator.whoami');
        setOps(new Set(who.ops));
        setRole(who.role);
        // Not 'devices': the devices view asks for its page itself when the link comes back.
        await refresh(new Set(['releases', 'channels'] as const));
        // What the audit log gained while the page was away (after the head it had before this
        // connection subscribed), or the newest events at first: the newest 1,000 after it, as
        // much as the tail keeps anyway.
        state.addAudit(
          await c.ask<AuditEvent[]>('audit.ls', {
            afterSeq: auditFrom,
            limit: auditFrom === 0 ? 200 : 1000,
            newest: true,
          }),
        );
        batcher.schedule();
      } catch (err) {
        if (!stopped) notify(`Could not load the fleet: ${(err as Error).message}`, 'error');
      }
    };
    const connection = new Connection({
      url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`,
      user: credentials.user,
      token: credentials.token,
      prefix,
      onConnected: () => {
        auditFrom = state.auditHead;
        state.resetLive();
      },
      onMessage: (topic, text, retained) => {
        const applied = state.applyMessage(topic, text, retained);
        if (applied.kind === 'audit') {
          const refreshes = Object.hasOwn(REFRESH_ON, applied.event.action)
            ? REFRESH_ON[applied.event.action]
            : undefined;
          if (refreshes) scheduleRefresh(refreshes);
          for (const fn of auditListeners.current) fn(applied.event);
        }
        if (applied.kind === 'fleet' && filtersOnReports(routeRef.current)) devicesRefresher.schedule();
        if (applied.kind !== 'ignored') batcher.schedule();
      },
      onState: (s) => {
        if (stopped) return;
        setLink(s);
        if (s.kind === 'live') {
          onAccepted();
          void loadSnapshot(connection);
        }
        if (s.kind === 'refused') onRefused(s.message);
      },
    });
    // Views may have named their devices before this connection existed.
    connection.watch(state.watched);
    connectionRef.current = connection;
    return () => {
      stopped = true;
      if (refreshTimer !== null) clearTimeout(refreshTimer);
      devicesRefresher.cancel();
      devicesRefresh.current = null;
      batcher.cancel();
      connection.close();
      connectionRef.current = null;
    };
  }, [credentials, prefix, state, batcher, notify, onAccepted, onRefused]);

  const watch = useCallback(
    (ids: readonly string[]) => {
      const { added, removed } = state.setWatched(ids);
      if (added.length === 0 && removed.length === 0) return;
      connectionRef.current?.watch(state.watched);
      batcher.schedule();
    },
    [state, batcher],
  );

  const onAudit = useCallback((fn: (e: AuditEvent) => void) => {
    auditListeners.current.add(fn);
    return () => auditListeners.current.delete(fn);
  }, []);

  const connection = connectionRef.current;
  const live = link.kind === 'live';
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`;
  if (!connection || (!live && link.kind !== 'refused' && !('everConnected' in link && link.everConnected))) {
    // Not connected yet: say what is happening, not a blank page.
    const unreachable = link.kind === 'reconnecting';
    return html`<main class="sign-in">
      <div class="panel">
        <h1>OTA models</h1>
        ${
          unreachable
            ? html`<p class="message error" role="alert">Cannot reach the coordinator at ${url} (${link.reason}). Is it running? Retrying every 2 s.</p>`
            : html`<p role="status">Connecting to ${url} as ${credentials.user}…</p>`
        }
        <button type="button" onClick=${onSignOut}>Back to sign in</button>
      </div>
    </main>`;
  }

  const props: ViewProps = { state, connection, live, ops, now: Date.now(), notify, onAudit, watch };
  const current =
    route.view === 'rollout'
      ? 'rollouts'
      : route.view === 'experiment'
        ? 'experiments'
        : route.view === 'device'
          ? 'devices'
          : route.view;
  return html`<div class="shell">
    <header class="top">
      <a class="brand" href="#/fleet">OTA models</a>
      <nav aria-label="Views">
        ${VIEWS.map(
          (v) =>
            html`<a href=${formatRoute(v === 'devices' ? { view: 'devices', text: '', state: '', model: '', version: '', page: 1 } : v === 'audit' ? { view: 'audit', text: '' } : ({ view: v } as Route))}
              aria-current=${current === v ? 'page' : undefined}>${v[0]?.toUpperCase()}${v.slice(1)}</a>`,
        )}
      </nav>
      <span class=${`link link-${link.kind}`} role="status" aria-live="polite" data-link=${link.kind}>
        <span aria-hidden="true">${live ? '●' : '○'}</span> ${live ? 'live' : link.kind === 'refused' ? 'signed out' : 'reconnecting…'}
      </span>
      <span class="who">${credentials.user}${role ? html` <span class="muted">(${role})</span>` : null}</span>
      <button type="button" onClick=${onSignOut}>Sign out</button>
    </header>
    ${
      !live
        ? html`<p class="banner" role="alert">The connection to the coordinator was lost${link.kind === 'reconnecting' ? ` (${link.reason})` : ''}: reconnecting. What you see may be out of date; actions are off until it is back.</p>`
        : null
    }
    <main id="main">${renderView(route, props)}</main>
    <div class="notices">
      ${notices.map((n) => html`<p class=${`notice ${n.kind}`} role=${n.kind === 'error' ? 'alert' : 'status'} key=${n.id}>${n.text}</p>`)}
    </div>
  </div>`;
}

/**
 * Whether the route is the devices list filtered on something reports and presence change (state,
 * online, model, version): only then does it need its page again as the fleet moves. Ids and
 * labels change only by enrolment and removal, which ask again anyway (REFRESH_ON); the rows on
 * screen are live.
 */
function filtersOnReports(route: Route): boolean {
  return route.view === 'devices' && (route.state !== '' || route.model !== '' || route.version !== '');
}

function renderView(route: Route, props: ViewProps) {
  switch (route.view) {
    case 'fleet':
      return html`<${FleetView} ...${props} />`;
    case 'rollouts':
      return html`<${RolloutsView} ...${props} />`;
    case 'rollout':
      return html`<${RolloutView} ...${props} id=${route.id} key=${route.id} />`;
    case 'experiments':
      return html`<${ExperimentsView} ...${props} />`;
    case 'experiment':
      return html`<${ExperimentView} ...${props} id=${route.id} key=${route.id} />`;
    case 'devices':
      return html`<${DevicesView} ...${props} route=${route} />`;
    case 'device':
      return html`<${DeviceView} ...${props} id=${route.id} key=${route.id} />`;
    case 'releases':
      return html`<${ReleasesView} ...${props} />`;
    case 'audit':
      return html`<${AuditView} ...${props} route=${route} />`;
  }
}
