/**
 * How states and times read on the page. Every state has a word and a symbol as well as a
 * colour (the stylesheet's `st-<state>` classes): colour is never the only signal.
 */
const SYMBOLS: Record<string, string> = {
  healthy: '✓',
  rolled_back: '↺',
  failed: '✕',
  probing: '◔',
  applying: '◑',
  verifying: '◕',
  downloading: '↓',
  assigned: '→',
  pending: '○',
  idle: '·',
  running: '▶',
  waiting_approval: '‖',
  halted: '■',
  completed: '✓',
  aborted: '✕',
  skipped: '–',
  stopped: '□',
  promoted: '⇧',
};

export function stateLabel(state: string): string {
  return state.replace(/_/g, ' ');
}

export function stateSymbol(state: string): string {
  return Object.hasOwn(SYMBOLS, state) ? (SYMBOLS[state] as string) : '•';
}

/** `3 s ago`, `5 min ago`, `2 h ago`, `4 d ago`; `never` for null. */
export function ago(ts: string | null, nowMs: number): string {
  if (ts === null) return 'never';
  const ms = nowMs - Date.parse(ts);
  if (!Number.isFinite(ms)) return ts;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}

/** `2026-12-06 04:14:06` (UTC, as the coordinator writes it): sortable and unambiguous. */
export function shortTime(ts: string): string {
  return ts.replace('T', ' ').replace(/\.\d+Z$|Z$/, '');
}
