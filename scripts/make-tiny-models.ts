#!/usr/bin/env node
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../shared/fs-atomic.js';
import { goodModel, goodProbe, invalidModel, nanModel, wrongOutputsModel } from './tiny-models.js';

/**
 * Writes the tiny models into a directory (default ./tiny-models):
 *   good.onnx + good.probe.json   passes its probe
 *   wrong.onnx                    loads and runs, fails the golden check of good.probe.json
 *   nan.onnx                      loads and runs, produces NaN
 *   invalid.onnx                  not an ONNX model
 */
const dir = path.resolve(process.argv[2] ?? 'tiny-models');
mkdirSync(dir, { recursive: true });
const files: [string, Uint8Array | string][] = [
  ['good.onnx', goodModel()],
  ['good.probe.json', `${JSON.stringify(goodProbe(), null, 2)}\n`],
  ['wrong.onnx', wrongOutputsModel()],
  ['nan.onnx', nanModel()],
  ['invalid.onnx', invalidModel()],
];
for (const [name, data] of files) {
  await writeFileAtomic(path.join(dir, name), data);
  process.stdout.write(`${path.join(dir, name)}\n`);
}
