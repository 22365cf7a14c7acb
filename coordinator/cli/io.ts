import pc from 'picocolors';

/**
 * Where a command writes: data to stdout, messages to stderr (design section 7). Passed into
 * every command so tests and the demo can capture both.
 */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  /** Colours only for a terminal, and never with NO_COLOR (https://no-color.org). */
  color: ReturnType<typeof pc.createColors>;
}

export function processIo(): CliIo {
  const enabled = !process.env.NO_COLOR && process.stderr.isTTY === true;
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    color: pc.createColors(enabled),
  };
}

/** Aligned "label  value" lines for human output. */
export function keyValueLines(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
}
