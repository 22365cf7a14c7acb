import { readFileSync } from 'node:fs';
import t from 'tap';
import { ROLLOUT_DEVICE_STATES, ROLLOUT_STATUSES, WAVE_STATES } from '../shared/states.js';

// Issue 11 item 7: every state an operator sees in `rollout status` is documented, from the one
// vocabulary (shared/states.ts), so a new state cannot appear undocumented.

const doc = readFileSync(new URL('../docs/rollouts.md', import.meta.url), 'utf8');

t.test('docs/rollouts.md documents every rollout device state in its table', async (t) => {
  const table = doc.slice(doc.indexOf('**Device states in a rollout**'));
  for (const state of ROLLOUT_DEVICE_STATES) {
    t.match(table, new RegExp(`^\\| [^|]*\`${state}\``, 'm'), `${state} has a row`);
  }
});

t.test('docs/rollouts.md names every rollout status and wave state', async (t) => {
  for (const status of ROLLOUT_STATUSES) t.match(doc, `\`${status}\``, status);
  for (const state of WAVE_STATES) t.match(doc, `\`${state}\``, state);
});
