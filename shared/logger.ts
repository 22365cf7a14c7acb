import { type Logger, pino } from 'pino';

/**
 * pino JSON lines on stdout. Each line starts with a syslog priority prefix (`<3>` error ...
 * `<7>` debug) that journald turns into the entry's priority (sd-daemon(3), SyslogLevelPrefix=
 * is on by default), so `journalctl -p warning -u ota-agent` works. Tokens are redacted.
 * Used by both daemons (`service` names which).
 */
const PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

export function createLogger(
  level: string,
  destination: NodeJS.WritableStream = process.stdout,
  service = 'ota-agent',
): Logger {
  return pino(
    {
      level,
      base: { service },
      redact: { paths: ['token', 'password', '*.token', '*.password', 'headers.authorization'], censor: '[redacted]' },
      hooks: {
        streamWrite(line: string) {
          const m = /"level":(\d+)/.exec(line);
          return `<${PRIORITY[Number(m?.[1])] ?? 6}>${line}`;
        },
      },
    },
    destination,
  );
}
export type { Logger };
