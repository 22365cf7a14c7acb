#!/usr/bin/env node
import { readPackageVersion } from '../shared/version.js';

// The device agent arrives with its own issue; until then the executable answers --version and
// says plainly that it cannot run yet, instead of pretending to.
if (process.argv.includes('--version')) {
  process.stdout.write(`${readPackageVersion()}\n`);
} else {
  process.stderr.write('ota-agent: the device agent is not implemented in this version yet\n');
  process.exitCode = 1;
}
