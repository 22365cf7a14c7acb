#!/usr/bin/env node
import { readPackageVersion } from '../shared/version.js';

// The coordinator arrives with its own issue; until then the executable answers --version and
// says plainly that it cannot run yet, instead of pretending to.
if (process.argv.includes('--version')) {
  process.stdout.write(`${readPackageVersion()}\n`);
} else {
  process.stderr.write('ota-coordinator: the coordinator is not implemented in this version yet\n');
  process.exitCode = 1;
}
