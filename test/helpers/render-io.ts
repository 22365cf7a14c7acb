import pc from 'picocolors';
import type { CliIo } from '../../coordinator/cli/io.js';

/** A CliIo for render tests: a terminal without colours that writes nowhere. */
export const renderIo: CliIo = {
  out: () => {},
  err: () => {},
  color: pc.createColors(false),
  env: {},
  cwd: '/',
  stdoutIsTTY: true,
  stderrIsTTY: false,
  live: async () => ({ update: () => {}, done: () => {} }),
  progress: () => {},
  onInterrupt: () => () => {},
};
