// Prints "N passed, N failed" from tap's raw per-file results (.tap/test-results/**/*.tap) and
// the other checks of a CI run.
//
//   node .ci/summary.mjs <results dir> <tap exit status> [<check>=<exit status> ...]
//
// A test point is each top-level `ok` / `not ok` line of a file's TAP stream (the file's own
// asserts and its top-level subtests); skipped and todo points are left out of both counts.
// A file that crashed without reporting a failing point still counts as one failure, and a
// non-zero tap exit status with no failure found counts as one, so the line never says
// "0 failed" for a red run.
// Each `<check>=<status>` (typecheck=0, lint=1) is one more point: passed when its exit status
// is 0, failed otherwise. A malformed argument is an error (exit 2), never a silent pass.
// The coverage check runs inside `npm test` (posttest): when it fails, tap's points all passed
// and the non-zero `npm test` status is the one failure counted above.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const [dir = '.tap/test-results', tapStatus = '0', ...checks] = process.argv.slice(2);

function files(d) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(d);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = path.join(d, name);
    if (statSync(p).isDirectory()) out = out.concat(files(p));
    else if (name.endsWith('.tap')) out.push(p);
  }
  return out;
}

let passed = 0;
let failed = 0;
for (const file of files(dir)) {
  const text = readFileSync(file, 'utf8');
  let filePassed = 0;
  let fileFailed = 0;
  let plan = false;
  for (const line of text.split('\n')) {
    if (/^1\.\.\d+/.test(line)) plan = true;
    const m = /^(not ok|ok)\b.*?(#\s*(SKIP|TODO)\b.*)?$/i.exec(line);
    if (!m) continue;
    if (m[3]) continue;
    if (m[1] === 'ok') filePassed++;
    else fileFailed++;
  }
  // No plan line means the file ended early (crash, timeout, bail).
  if (!plan && fileFailed === 0) fileFailed = 1;
  passed += filePassed;
  failed += fileFailed;
}
if (!/^-?\d+$/.test(tapStatus)) {
  console.error(`summary: tap exit status must be a number, got "${tapStatus}"`);
  process.exit(2);
}
if (Number(tapStatus) !== 0 && failed === 0) failed = 1;
for (const check of checks) {
  const m = /^([\w-]+)=(-?\d+)$/.exec(check);
  if (!m) {
    console.error(`summary: a check is <name>=<exit status> (e.g. typecheck=0), got "${check}"`);
    process.exit(2);
  }
  if (Number(m[2]) === 0) passed++;
  else failed++;
}
console.log(`${passed} passed, ${failed} failed`);
