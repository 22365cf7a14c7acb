#!/usr/bin/env node
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { goodModel, goodProbe, wrongOutputsModel } from './tiny-models.js';

/**
 * `npm run demo`. Today it shows the offline release flow, run through the real otactl binary:
 * a release key, a signed model with its inference probe, verification as a device does it, and
 * a tampered model refused. The coordinator and agents join this demo with their own issues.
 * Exits non-zero when any step does not behave as shown.
 */
const otactl = fileURLToPath(new URL('../coordinator/cli/main.js', import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'ota-demo-'));
const at = (f: string) => path.join(dir, f);
let failures = 0;

function step(title: string, args: string[], expectExit: number): void {
  process.stdout.write(
    `\n== ${title}\n$ otactl ${args.map((a) => (a.startsWith(dir) ? path.relative(dir, a) : a)).join(' ')}\n`,
  );
  const r = spawnSync(process.execPath, [otactl, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  process.stdout.write(r.stdout.replaceAll(`${dir}/`, ''));
  process.stdout.write(r.stderr.replaceAll(`${dir}/`, ''));
  const ok = r.status === expectExit;
  if (!ok) failures++;
  process.stdout.write(`-> exit ${r.status} ${ok ? '(as expected)' : `(EXPECTED ${expectExit})`}\n`);
}

try {
  writeFileSync(at('model.onnx'), goodModel());
  writeFileSync(at('probe.json'), JSON.stringify(goodProbe(), null, 2));
  step('create a release key (offline)', ['keygen', '--out', at('release.key')], 0);
  step(
    'sign model v1 with its inference probe',
    [
      'release',
      'sign',
      '--model',
      'detector',
      '--version',
      '1.0.0',
      '--file',
      at('model.onnx'),
      '--probe',
      at('probe.json'),
      '--key',
      at('release.key'),
      '--out',
      at('envelope.json'),
    ],
    0,
  );
  step(
    'verify it as a device would',
    [
      'release',
      'verify',
      '--envelope',
      at('envelope.json'),
      '--file',
      at('model.onnx'),
      '--pubkey',
      at('release.key.pub'),
    ],
    0,
  );
  writeFileSync(at('model.onnx'), wrongOutputsModel());
  step(
    'someone swaps the model bytes: refused',
    [
      'release',
      'verify',
      '--envelope',
      at('envelope.json'),
      '--file',
      at('model.onnx'),
      '--pubkey',
      at('release.key.pub'),
    ],
    1,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(
  failures === 0 ? '\ndemo: every step behaved as shown\n' : `\ndemo: ${failures} step(s) misbehaved\n`,
);
process.exitCode = failures === 0 ? 0 : 1;
