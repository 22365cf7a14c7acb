#!/usr/bin/env node
import { processIo } from './io.js';
import { runCli } from './program.js';

let code: number | null = null;
code = await runCli(
  process.argv.slice(2),
  processIo(() => code),
);
// Exit now rather than when the event loop drains: a request abandoned on a closed connection
// must not keep otactl waiting for its timeout. Output is flushed first.
const flush = (stream: NodeJS.WriteStream) => new Promise<void>((resolve) => stream.write('', () => resolve()));
await Promise.all([flush(process.stdout), flush(process.stderr)]);
process.exit(code);
