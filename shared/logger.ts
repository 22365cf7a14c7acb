import pc from 'picocolors';
import { type Logger, pino } from 'pino';

/**
 * pino logs on stdout, in one of two forms:
 * - `json` (systemd, pipes, files): JSON lines, each starting with a syslog priority prefix
 *   (`<3>` error ... `<7>` debug) that journald turns into the entry's priority (sd-daemon(3),
 *   SyslogLevelPrefix= is on by default), so `journalctl -p warning -u ota-agent` works.
 * - `pretty` (stdout is a terminal): one readable line per entry, `12:03:04.123 INFO  message
 *   key=value`, coloured unless NO_COLOR is set (https://no-color.org).
 * Tokens are redacted in both. Used by both daemons (`service` names which).
 */
const PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

export type LogFormat = 'json' | 'pretty';

/** Readable lines for a person at a terminal; JSON for everything else (journald sees no TTY). */
export function logFormatFor(stream: { isTTY?: boolean }): LogFormat {
  return stream.isTTY === true ? 'pretty' : 'json';
}

/** Fields every entry has, shown in the line's head (or not at all) rather than as key=value. */
const HEAD_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'service']);

function fieldValue(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** One pino JSON line as a readable line (an error's stack on the lines after it). */
export function prettyLine(json: string, colors: ReturnType<typeof pc.createColors>): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.trimEnd();
  }
  const level = Number(entry.level);
  const name = (LEVEL_NAMES[level] ?? String(entry.level)).padEnd(5);
  const paint = level >= 50 ? colors.red : level >= 40 ? colors.yellow : level >= 30 ? colors.green : colors.dim;
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : '';
  const fields: string[] = [];
  let stack = '';
  for (const [key, value] of Object.entries(entry)) {
    if (HEAD_FIELDS.has(key)) continue;
    const err = value as { message?: unknown; stack?: unknown } | null;
    if (key === 'err' && err && typeof err === 'object' && typeof err.message === 'string') {
      fields.push(`err=${fieldValue(err.message)}`);
      if (typeof err.stack === 'string') stack = `\n${err.stack.replace(/^/gm, '    ')}`;
    } else fields.push(`${colors.dim(`${key}=`)}${fieldValue(value)}`);
  }
  const msg = typeof entry.msg === 'string' ? entry.msg : '';
  return `${colors.dim(time)} ${paint(name)} ${msg}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}${stack}`;
}

export function createLogger(
  level: string,
  destination: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout,
  service = 'ota-agent',
  format: LogFormat = logFormatFor(destination),
): Logger {
  const colors = pc.createColors(format === 'pretty' && !process.env.NO_COLOR);
  return pino(
    {
      level,
      base: { service },
      redact: { paths: ['token', 'password', '*.token', '*.password', 'headers.authorization'], censor: '[redacted]' },
      hooks: {
        streamWrite(line: string) {
          if (format === 'pretty') return `${prettyLine(line, colors)}\n`;
          const m = /"level":(\d+)/.exec(line);
          return `<${PRIORITY[Number(m?.[1])] ?? 6}>${line}`;
        },
      },
    },
    destination,
  );
}
export type { Logger };
