/**
 * The page's routes live in the URL's fragment (`#/rollouts/ro-1`): bookmarkable, never sent to
 * the server, and never holding a secret (the token stays in sessionStorage). Ids in a route are
 * URI-encoded, so any valid id (even `constructor`) round-trips.
 */
export type Route =
  | { view: 'fleet' }
  | { view: 'rollouts' }
  | { view: 'rollout'; id: string }
  | { view: 'experiments' }
  | { view: 'experiment'; id: string }
  | { view: 'devices'; text: string; state: string; model: string; version: string; page: number }
  | { view: 'device'; id: string }
  | { view: 'releases' }
  | { view: 'audit'; text: string };

export const VIEWS = ['fleet', 'rollouts', 'experiments', 'devices', 'releases', 'audit'] as const;

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function parseRoute(hash: string): Route {
  const raw = hash.replace(/^#\/?/, '');
  const [pathPart = '', query = ''] = raw.split('?', 2);
  const parts = pathPart
    .split('/')
    .filter((p) => p !== '')
    .map(decode);
  const params = new URLSearchParams(query);
  const get = (k: string) => params.get(k) ?? '';
  switch (parts[0]) {
    case 'rollouts':
      return parts[1] ? { view: 'rollout', id: parts[1] } : { view: 'rollouts' };
    case 'experiments':
      return parts[1] ? { view: 'experiment', id: parts[1] } : { view: 'experiments' };
    case 'devices':
      if (parts[1]) return { view: 'device', id: parts[1] };
      return {
        view: 'devices',
        text: get('q'),
        state: get('state'),
        model: get('model'),
        version: get('version'),
        page: Math.max(1, Number.parseInt(get('page'), 10) || 1),
      };
    case 'releases':
      return { view: 'releases' };
    case 'audit':
      return { view: 'audit', text: get('q') };
    default:
      return { view: 'fleet' };
  }
}

export function formatRoute(route: Route): string {
  switch (route.view) {
    case 'rollout':
      return `#/rollouts/${encodeURIComponent(route.id)}`;
    case 'experiment':
      return `#/experiments/${encodeURIComponent(route.id)}`;
    case 'device':
      return `#/devices/${encodeURIComponent(route.id)}`;
    case 'devices': {
      const params = new URLSearchParams();
      if (route.text) params.set('q', route.text);
      if (route.state) params.set('state', route.state);
      if (route.model) params.set('model', route.model);
      if (route.version) params.set('version', route.version);
      if (route.page > 1) params.set('page', String(route.page));
      const q = params.toString();
      return `#/devices${q ? `?${q}` : ''}`;
    }
    case 'audit':
      return route.text ? `#/audit?${new URLSearchParams({ q: route.text })}` : '#/audit';
    default:
      return `#/${route.view}`;
  }
}
