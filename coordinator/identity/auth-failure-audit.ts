import type { Logger } from '../../shared/logger.js';
import type { AuditEvent } from '../../shared/messages.js';
import type { Store } from '../store/store.js';

/**
 * Authentication failures go into the audit chain (design section 6), rate limited: at most one
 * row per (username, reason) per window, with the number of failures it stands for, so a client
 * retrying a wrong token in a loop cannot flood the append-only log.
 */
export class AuthFailureAudit {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly deps: {
      store: Store;
      now: () => Date;
      logger: Logger;
      windowMs?: number;
      maxKeys?: number;
      /** The rows it appended (the audit_rows metric follows the chain through this). */
      onAudit?: (events: AuditEvent[]) => void;
    },
  ) {}

  record(info: { clientId: string; username: string; reason: string }): void {
    const now = this.deps.now().getTime();
    const windowMs = this.deps.windowMs ?? 60_000;
    const key = `${info.username}\0${info.reason}`;
    const w = this.windows.get(key);
    if (w && now - w.start < windowMs) {
      w.count++;
      return;
    }
    const suppressed = w ? w.count - 1 : 0;
    this.windows.set(key, { start: now, count: 1 });
    if (this.windows.size > (this.deps.maxKeys ?? 10_000)) {
      for (const [k, v] of this.windows) if (now - v.start >= windowMs) this.windows.delete(k);
    }
    let events: AuditEvent[];
    try {
      events = this.deps.store.appendAudit(
        [
          {
            actor: info.username.slice(0, 128) || '(none)',
            action: 'auth.failed',
            subject: `client:${info.clientId.slice(0, 200)}`,
            details: { reason: info.reason, earlierFailuresNotLogged: suppressed },
          },
        ],
        new Date(now).toISOString(),
      );
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message }, 'could not audit an authentication failure');
      return;
    }
    this.deps.onAudit?.(events);
  }
}
