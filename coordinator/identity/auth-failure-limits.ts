/**
 * What to do about a failed login, decided from counts alone (no I/O; the clock is passed in):
 *
 * - Audit: a failure gets its own audit row only while its (username, reason), its source
 *   address and the whole coordinator are under their row quotas for the window. Every failure
 *   that gets no row is counted, and the next row written says how many came before it, so the
 *   chain still accounts for every failure while a client cycling through usernames (or many
 *   clients) cannot flood the append-only log.
 * - Refusal delay: the first `freeFailures` failures of an address in a window are refused at
 *   once; later refusals are held back, doubling per failure up to `holdMaxMs`. Only refusals
 *   are held: a login with good credentials is checked and answered at once whatever its address
 *   did before, so a device behind the same NAT as a misbehaving client, or an operator who
 *   mistyped a token, is never locked out; the attacker's loop is what slows down.
 *
 * Windows are fixed: each key's window starts at its first event and lasts `windowMs`.
 */
export interface AuthFailureLimitsOptions {
  /** Length of every window, ms (default 60 s). */
  windowMs?: number;
  /** Audit rows per (username, reason) per window (default 1). */
  rowsPerUser?: number;
  /** Audit rows per source address per window (default 3). */
  rowsPerAddress?: number;
  /** Audit rows per window for all failures together (default 30). */
  rowsOverall?: number;
  /** Failures of one address per window refused at once; the refusals after them are held (default 5). */
  freeFailures?: number;
  /** How long the first held refusal waits, ms; each further failure doubles it (default 1 s). */
  holdBaseMs?: number;
  /** The longest a refusal is held, ms (default 30 s). */
  holdMaxMs?: number;
  /** Most refusals held at once (each holds a connection open); more are answered at once (default 1,000). */
  maxHeld?: number;
  /** Most keys (usernames, addresses) remembered per kind; the oldest windows are forgotten first (default 10,000). */
  maxTracked?: number;
}

export interface AuthFailureVerdict {
  /** Write an audit row for this failure. */
  audit: boolean;
  /** When `audit`: failures since the previous row written that got no row of their own. */
  notAuditedBefore: number;
}

export interface FailedLogin {
  username: string;
  reason: string;
  address: string;
}

const DEFAULTS: Required<AuthFailureLimitsOptions> = {
  windowMs: 60_000,
  rowsPerUser: 1,
  rowsPerAddress: 3,
  rowsOverall: 30,
  freeFailures: 5,
  holdBaseMs: 1_000,
  holdMaxMs: 30_000,
  maxHeld: 1_000,
  maxTracked: 10_000,
};

/** Counts per key in fixed windows, at most `maxKeys` keys (Map keeps them in window-start order). */
export class FixedWindows {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number,
  ) {}

  count(key: string, now: number): number {
    const w = this.windows.get(key);
    return w && now - w.start < this.windowMs ? w.count : 0;
  }

  /** Counts one more for `key`; returns its count in the current window. */
  add(key: string, now: number): number {
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) {
      // Re-inserted, so the Map stays ordered by window start and expired windows come first.
      this.windows.delete(key);
      w = { start: now, count: 0 };
      this.windows.set(key, w);
      this.trim(now);
    }
    w.count++;
    return w.count;
  }

  get size(): number {
    return this.windows.size;
  }

  private trim(now: number): void {
    for (const [key, w] of this.windows) {
      if (this.windows.size <= this.maxKeys && now - w.start < this.windowMs) break;
      this.windows.delete(key);
    }
  }
}

export class AuthFailureLimits {
  private readonly o: Required<AuthFailureLimitsOptions>;
  private readonly failuresByAddress: FixedWindows;
  private readonly rowsByUser: FixedWindows;
  private readonly rowsByAddress: FixedWindows;
  private readonly rowsOverall: FixedWindows;
  /** Failures since the last row written that got no row. */
  private pending = 0;
  /** Failures that got no row, since this object was made. */
  private unwritten = 0;

  constructor(options: AuthFailureLimitsOptions = {}) {
    this.o = { ...DEFAULTS };
    for (const [name, value] of Object.entries(options) as [keyof AuthFailureLimitsOptions, number | undefined][]) {
      if (value === undefined) continue;
      if (!Number.isInteger(value) || value < (name === 'windowMs' || name === 'maxTracked' ? 1 : 0)) {
        throw new RangeError(
          `auth failure limits: ${name} must be a non-negative integer (windowMs and maxTracked at least 1), got ${value}`,
        );
      }
      this.o[name] = value;
    }
    const { windowMs, maxTracked } = this.o;
    this.failuresByAddress = new FixedWindows(windowMs, maxTracked);
    this.rowsByUser = new FixedWindows(windowMs, maxTracked);
    this.rowsByAddress = new FixedWindows(windowMs, maxTracked);
    this.rowsOverall = new FixedWindows(windowMs, 1);
  }

  /** Records one failed login at `now` (ms) and says whether it gets an audit row. */
  failure(f: FailedLogin, now: number): AuthFailureVerdict {
    this.failuresByAddress.add(f.address, now);
    const userKey = `${f.username.slice(0, 128)}\0${f.reason}`;
    const underQuota =
      this.rowsByUser.count(userKey, now) < this.o.rowsPerUser &&
      this.rowsByAddress.count(f.address, now) < this.o.rowsPerAddress &&
      this.rowsOverall.count('', now) < this.o.rowsOverall;
    if (!underQuota) {
      this.pending++;
      this.unwritten++;
      return { audit: false, notAuditedBefore: 0 };
    }
    this.rowsByUser.add(userKey, now);
    this.rowsByAddress.add(f.address, now);
    this.rowsOverall.add('', now);
    const notAuditedBefore = this.pending;
    this.pending = 0;
    return { audit: true, notAuditedBefore };
  }

  /**
   * How long to hold back the refusal of a failure `failure()` just recorded for `address`, with
   * `heldNow` refusals held already.
   */
  refusalDelayMs(address: string, now: number, heldNow = 0): number {
    if (heldNow >= this.o.maxHeld) return 0;
    const beyond = this.failuresByAddress.count(address, now) - this.o.freeFailures;
    if (beyond <= 0) return 0;
    return Math.min(this.o.holdBaseMs * 2 ** Math.min(beyond - 1, 30), this.o.holdMaxMs);
  }

  /** Failures that got no audit row, since this object was made. */
  get notAudited(): number {
    return this.unwritten;
  }
}
