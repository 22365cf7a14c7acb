import type { Connection } from '../connection.js';
import type { FleetState } from '../fleet-state.js';

/** What every view gets from the dashboard shell. */
export interface ViewProps {
  state: FleetState;
  connection: Connection;
  /** True while connected and subscribed: actions are offered only then. */
  live: boolean;
  /** Ops this operator's role may call (`operator.whoami`); empty until known. */
  ops: ReadonlySet<string>;
  /** The page's clock (ms), read once per render. */
  now: number;
  /** Shows a short message to the operator (role="status", or role="alert" for errors). */
  notify: (text: string, kind?: 'info' | 'error') => void;
  /**
   * The devices this view shows (its rows on screen): their own topics are followed live, the
   * others' are not (FleetState.setWatched). Call through useWatch.
   */
  watch: (ids: readonly string[]) => void;
  /** Subscribes to audit events as they arrive; returns the unsubscribe function. */
  onAudit: (fn: (e: import('../../../shared/messages.js').AuditEvent) => void) => () => void;
}
