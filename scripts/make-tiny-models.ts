#!/usr/bin/env node
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../shared/fs-atomic.js';
import { parseMakerArgs, tinyModelFiles } from './tiny-models.js';

/**
 * `npm run models -- [--versions N] [DIR]`: writes the tiny models into DIR (default
 * ./tiny-models); `--help` says what it writes. Exit codes: 0 done (or help), 1 the files could
 * not be written, 2 usage error (nothing written).
 */
const parsed = parseMakerArgs(process.argv.slice(2));
if (parsed.kind === 'help') {
  process.stdout.write(parsed.text);
} else if (parsed.kind === 'usage') {
  process.stderr.write(`make-tiny-models: ${parsed.message}\n${parsed.usage}`);
  process.exitCode = 2;
} else {
  try {
    const dir = path.resolve(parsed.dir);
    mkdirSync(dir, { recursive: true });
    for (const [name, data] of tinyModelFiles(parsed.versions)) {
      await writeFileAtomic(path.join(dir, name), data);
      process.stdout.write(`${path.join(dir, name)}\n`);
    }
  } catch (err) {
    process.stderr.write(`make-tiny-models: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
