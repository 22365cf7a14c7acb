import pc from 'picocolors';
import { EXIT_FAILURE, EXIT_OK } from './exit.js';

/** A region of stdout redrawn in place (a terminal), for `rollout status --watch`. */
export interface LiveRegion {
  update(text: string): void;
  /** Keeps the last frame on screen and stops redrawing. */
  done(): void;
}

/**
 * Where a command writes: data to stdout, messages to stderr (design section 7). Passed into
 * every command so tests and the demo can capture both.
 */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  /** Colours only for a terminal, and never with NO_COLOR (https://no-color.org). */
  color: ReturnType<typeof pc.createColors>;
  /** The environment the connection settings are read from (OTA_URL, OTA_USER, ...). */
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdout is a terminal: redraw in place instead of printing one line per change. */
  stdoutIsTTY: boolean;
  /** stderr is a terminal: progress may rewrite its line. */
  stderrIsTTY: boolean;
  /** A live region on stdout: redrawn in place on a terminal, else one line per update. */
  live(): Promise<LiveRegion>;
  /** Rewrites the current stderr line (progress); `final` ends the line. */
  progress(text: string, final?: boolean): void;
  /** Calls `handler` on Ctrl-C (SIGINT) or SIGTERM; returns the function that stops listening. */
  onInterrupt(handler: () => void): () => void;
}

/**
 * What to do when writing to stdout or stderr fails. EPIPE means the reader went away
 * (`otactl ... | head -1`, quitting `less`): a C program would die of SIGPIPE, silently; Node
 * ignores SIGPIPE and emits EPIPE instead, which unhandled is a crash with a stack trace. Nobody
 * reads the rest, so otactl stops at once, quietly, with 0 (the reader chose to stop; a script
 * under `set -o pipefail` does not fail because `head` closed early). Any other write error
 * (EIO on a closed terminal) leaves no channel to report it on: exit 1, also quietly.
 */
export function exitCodeForWriteError(err: NodeJS.ErrnoException): number {
  return err.code === 'EPIPE' ? EXIT_OK : EXIT_FAILURE;
}

/**
 * `finalCode`: the command's exit code once it has finished (null before). A write that fails
 * after that (the last flush) must not replace a failure's exit code with 0.
 */
export function processIo(finalCode: () => number | null = () => null): CliIo {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => process.exit(finalCode() ?? exitCodeForWriteError(err)));
  }
  const stdoutIsTTY = process.stdout.isTTY === true;
  const stderrIsTTY = process.stderr.isTTY === true;
  // Colours go into tables on stdout and messages on stderr: both must be terminals.
  const enabled = !process.env.NO_COLOR && stdoutIsTTY && stderrIsTTY;
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    color: pc.createColors(enabled),
    env: process.env,
    cwd: process.cwd(),
    stdoutIsTTY,
    stderrIsTTY,
    async live() {
      // A terminal of unknown or zero height (some ptys) cannot be redrawn: print lines instead.
      if (!stdoutIsTTY || !process.stdout.rows) {
        return { update: (text) => process.stdout.write(`${text}\n`), done: () => {} };
      }
      // Loaded only here: most commands never redraw, and otactl starts faster without it.
      const { createLogUpdate } = await import('log-update');
      const log = createLogUpdate(process.stdout);
      return { update: (text) => log(text), done: () => log.done() };
    },
    progress(text, final = false) {
      if (stderrIsTTY) process.stderr.write(`\r\u001B[2K${text}${final ? '\n' : ''}`);
      else if (final) process.stderr.write(`${text}\n`);
    },
    onInterrupt(handler) {
      const signals = ['SIGINT', 'SIGTERM'] as const;
      for (const s of signals) process.on(s, handler);
      return () => {
        for (const s of signals) process.off(s, handler);
      };
    },
  };
}

/** Aligned "label  value" lines for human output. */
export function keyValueLines(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
}
