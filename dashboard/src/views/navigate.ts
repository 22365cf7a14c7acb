import { formatRoute, type Route } from '../router.js';

/**
 * Moves to `route` without a new history entry (a search box typed into would otherwise leave one
 * entry per keystroke for the back button). replaceState fires no hashchange: one is sent, so
 * the shell follows as it does for links.
 */
export function replaceRoute(route: Route): void {
  history.replaceState(history.state, '', formatRoute(route));
  window.dispatchEvent(new HashChangeEvent('hashchange'));
}
