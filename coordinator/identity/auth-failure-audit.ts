import type { Logger } from '../../shared/logger.js';
import type { AuditEvent } from '../../shared/messages.js';
import type { Store } from '../store/store.js';
import { AuthFailureLimits, type AuthFailureVerdict } from './auth-failure-limits.js';

/**
 * Authentication failures go into the audit chain (design section 6), rate limited by
 * AuthFailureLimits: per (username, reason), per source address and overall, each row saying
 * how many failures before it got no row, so neither a client retrying a wrong token in a loop
 * nor one cycling through usernames (or addresses) can flood the append-only log.
 */
export class AuthFailureAudit {
  private readonly limits: AuthFailureLimits;

  constructor(
    private readonly deps: {
      store: Store;
      now: () => Date;
      logger: Logger;
      /** Shared with the broker's refusal delay (default: its own, with the default limits). */
      limits?: AuthFailureLimits;
      /** The rows it appended (the audit_rows metric follows the chain through this). */
      onAudit?: (events: AuditEvent[]) => void;
    },
  ) {
    this.limits = deps.limits ?? new AuthFailureLimits();
  }

  /** Records one failure; the verdict says whether it got a row. */
  record(info: { clientId: string; username: string; reason: string; address?: string }): AuthFailureVerdict {
    const now = this.deps.now().getTime();
    const address = info.address ?? '(unknown)';
    const verdict = this.limits.failure({ username: info.username, reason: info.reason, address }, now);
    if (!verdict.audit) return verdict;
    let events: AuditEvent[];
    try {
      events = this.deps.store.appendAudit(
        [
          {
            actor: info.username.slice(0, 128) || '(none)',
            action: 'auth.failed',
            subject: `client:${info.clientId.slice(0, 200)}`,
            details: {
              reason: info.reason,
              address: address.slice(0, 64),
              // Failures (any user, any address) since the previous auth.failed row that got no row.
              earlierFailuresNotAudited: verdict.notAuditedBefore,
            },
          },
        ],
        new Date(now).toISOString(),
      );
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message }, 'could not audit an authentication failure');
      return { audit: false, notAuditedBefore: 0 };
    }
    this.deps.onAudit?.(events);
    return verdict;
  }
}
