import { execFile } from 'node:child_process';

/**
 * sd_notify(3) for both daemons under systemd (systemd/ota-agent.service: Type=notify,
 * NotifyAccess=all, WatchdogSec=; systemd/ota-coordinator.service: Type=notify, NotifyAccess=all,
 * READY=1 only once a client can use it).
 *
 * Node cannot send AF_UNIX datagrams, so each message runs the `systemd-notify` binary
 * (execFile, no shell) with `KEY=VALUE` arguments. systemd-notify >= 246 waits (up to 5 s) until
 * the manager has processed the message (sd_notify_barrier), which is what lets PID 1 attribute a
 * message from this short-lived child to the unit; never pass --no-block.
 *
 * Without NOTIFY_SOCKET (not under systemd, tests, `ota-agent` run by hand) every method is a
 * no-op and `enabled` is false.
 *
 * Errors never reach the caller: every method resolves. A failed send (binary missing, socket
 * gone, timeout, non-zero exit) is passed to `options.onError` and kept in `lastError`; a later
 * successful send clears `lastError`. Sends run one at a time in call order, so READY=1 can never
 * overtake an earlier STATUS=, and a WATCHDOG=1 already waiting in the queue absorbs the next one.
 */
export interface Notifier {
  /** READY=1 (with STATUS= when given): start-up finished. */
  ready(status?: string): Promise<void>;
  /** WATCHDOG=1: the keep-alive ping; send it every `watchdogIntervalMs`. */
  watchdog(): Promise<void>;
  /** STATUS=: one line shown by `systemctl status`. */
  status(text: string): Promise<void>;
  /** STOPPING=1: a clean shutdown has begun. */
  stopping(): Promise<void>;
  readonly enabled: boolean;
  /** Half of WATCHDOG_USEC in ms when systemd expects pings from this process, else null. */
  readonly watchdogIntervalMs: number | null;
  /** The last send that failed, or null (cleared by the next successful send). */
  readonly lastError: Error | null;
}

export interface NotifierOptions {
  /** The systemd-notify binary: a name looked up on the env's PATH, or an absolute path. */
  binary?: string;
  /** Per-send limit; the binary's own barrier wait is 5 s. Default 10 000. */
  timeoutMs?: number;
  /** Called with every failed send (never throws into the agent). */
  onError?: (err: Error) => void;
}

/** The variables sd_notify uses; see withoutNotifyEnv(). */
export const NOTIFY_ENV_KEYS = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const;

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MAX_STATUS_LENGTH = 1024;

export function createNotifier(env: NodeJS.ProcessEnv = process.env, options: NotifierOptions = {}): Notifier {
  const socket = env.NOTIFY_SOCKET ?? '';
  const enabled = socket !== '';
  const binary = options.binary ?? 'systemd-notify';
  const timeoutMs = options.timeoutMs ?? 10_000;
  const watchdogIntervalMs = enabled ? parseWatchdogInterval(env) : null;
  // Only what systemd-notify needs: the socket, and PATH to find the binary.
  const childEnv: NodeJS.ProcessEnv = { NOTIFY_SOCKET: socket, PATH: env.PATH || DEFAULT_PATH };

  let lastError: Error | null = null;
  let queue: Promise<void> = Promise.resolve();
  let watchdogQueued: Promise<void> | null = null;

  const fail = (err: Error) => {
    lastError = err;
    try {
      options.onError?.(err);
    } catch {
      // A throwing callback must not break the queue.
    }
  };

  const run = (assignments: string[]): Promise<void> =>
    new Promise<void>((resolve) => {
      try {
        execFile(
          binary,
          assignments,
          { env: childEnv, timeout: timeoutMs, killSignal: 'SIGKILL', windowsHide: true },
          (err, _stdout, stderr) => {
            if (err) {
              const why = String(stderr).trim() || err.message;
              fail(new Error(`systemd-notify ${assignments.join(' ')}: ${why}`));
            } else {
              lastError = null;
            }
            resolve();
          },
        );
      } catch (err) {
        // execFile throws synchronously for invalid arguments; never let that reach the caller.
        fail(err instanceof Error ? err : new Error(String(err)));
        resolve();
      }
    });

  const send = (assignments: string[]): Promise<void> => {
    if (!enabled) return Promise.resolve();
    queue = queue.then(() => run(assignments));
    return queue;
  };

  return {
    enabled,
    watchdogIntervalMs,
    get lastError() {
      return lastError;
    },
    ready(status?: string) {
      return send(status === undefined ? ['READY=1'] : ['READY=1', `STATUS=${oneLine(status)}`]);
    },
    watchdog() {
      if (!enabled) return Promise.resolve();
      if (watchdogQueued) return watchdogQueued;
      const sent = queue.then(() => {
        // Taken off the queue now: a ping asked for from here on needs a send of its own.
        watchdogQueued = null;
        return run(['WATCHDOG=1']);
      });
      watchdogQueued = sent;
      queue = sent;
      return sent;
    },
    status(text: string) {
      return send([`STATUS=${oneLine(text)}`]);
    },
    stopping() {
      return send(['STOPPING=1']);
    },
  };
}

/**
 * A copy of env without NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, for the programs the agent
 * starts (probe child, exec probes, reload actions): with NotifyAccess=all any process of the unit
 * may notify, so they must not be handed the socket.
 */
export function withoutNotifyEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const key of NOTIFY_ENV_KEYS) delete copy[key];
  return copy;
}

/** WATCHDOG_USEC / 2 in ms, when set, valid, and meant for this process (WATCHDOG_PID). */
function parseWatchdogInterval(env: NodeJS.ProcessEnv): number | null {
  const usecText = env.WATCHDOG_USEC;
  if (!usecText || !/^\d+$/.test(usecText)) return null;
  const usec = Number(usecText);
  if (!Number.isSafeInteger(usec) || usec <= 0) return null;
  const pidText = env.WATCHDOG_PID;
  if (pidText !== undefined && pidText !== '' && pidText !== String(process.pid)) return null;
  return Math.max(1, Math.floor(usec / 2 / 1000));
}

/** STATUS= is one line: newlines would start new assignments, NUL cannot be passed in argv. */
function oneLine(text: string): string {
  const flat = text.replace(/[\r\n\0]+/g, ' ').trim();
  return flat.length > MAX_STATUS_LENGTH ? `${flat.slice(0, MAX_STATUS_LENGTH - 1)}…` : flat;
}
