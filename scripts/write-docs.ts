#!/usr/bin/env node
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../shared/fs-atomic.js';
import { renderErrorsMarkdown, renderSchemas } from './docs-render.js';

/** Rewrites docs/schemas/*.json and docs/errors.md from the code (see docs-render.ts). */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
for (const [name, text] of renderSchemas()) {
  await writeFileAtomic(path.join(root, 'docs', 'schemas', name), text);
}
await writeFileAtomic(path.join(root, 'docs', 'errors.md'), renderErrorsMarkdown());
process.stdout.write('wrote docs/schemas/*.json and docs/errors.md\n');
