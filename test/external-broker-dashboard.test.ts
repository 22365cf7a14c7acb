import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import type { AuditEvent } from '../shared/messages.js';
import { BrowserHarness, browserSkip, goToRoute, signIn } from './helpers/browser.js';
import { FleetFixture } from './helpers/fleet-fixture.js';
import { mosquittoSkip, TestMosquitto } from './helpers/mosquitto.js';
import { addOperator } from './helpers/operators.js';

// Issue 16: the dashboard works unchanged through an external broker. The page connects to the
// coordinator's /mqtt as always; the coordinator passes the WebSocket's bytes to Mosquitto, which
// authenticates the operator. Chromium (Debian's), a coordinator process, Mosquitto, real agents:
// the fleet's counts arrive, and approve clicked in the page advances a rollout.

t.setTimeout(300_000);

const DEVICES = ['cam-1', 'cam-2', 'cam-3'];

t.test(
  'the dashboard through Mosquitto: live counts and an approve',
  { skip: browserSkip() || mosquittoSkip() },
  async (t) => {
    const browser = await BrowserHarness.launch(t);
    if (!browser) return;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-ext-dash-'));
    const broker = await TestMosquitto.start(t, path.join(dir, 'broker'));
    const f = await FleetFixture.create(t, { env: broker.env, dir });
    const base = f.coordinator.httpUrl.replace(/\/$/, '');
    await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
    for (const id of DEVICES) await f.enrol(id);
    const alice = await addOperator(f, 'alice', 'operator');
    for (const id of DEVICES) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
    await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });
    await f.admin.call('rollout.create', {
      id: 'r-ext',
      model: 'det',
      version: '2.0.0',
      devices: DEVICES,
      waves: '34,100:manual',
    });
    await f.waitForRollout('r-ext', (s) => s.status === 'waiting_approval', 'at the gate');

    await browser.test(t, 'sign in, the fleet, approve', async (t, open) => {
      const page = await open();
      await signIn(page, base, 'alice', alice.token);
      await page.locator('[data-stat="devices"]').filter({ hasText: /^3$/ }).waitFor();
      await page.locator('[data-stat="online"]').filter({ hasText: /^3$/ }).waitFor();
      t.pass('the fleet counts arrived through the broker');
      await goToRoute(page, '#/rollouts/r-ext');
      await page
        .getByRole('group', { name: 'Rollout actions' })
        .getByRole('button', { name: 'Approve next wave' })
        .click();
      const dialog = page.getByRole('dialog');
      await dialog.getByRole('button', { name: 'Approve next wave' }).click();
      await dialog.waitFor({ state: 'detached' });
      await f.waitForRollout('r-ext', (s) => s.status === 'completed', 'completed');
      await page.locator('[data-field="current-wave"]').filter({ hasText: /^2$/ }).waitFor();
      await page
        .locator('#rollout-title')
        .filter({ hasText: /completed/ })
        .waitFor();
      t.pass('the page shows wave 2 and the rollout completed, live');
      const audit = await f.admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'r-ext' });
      t.equal(audit.find((e) => e.action === 'rollout.approved')?.actor, 'alice', 'approved by alice, from the page');
    });
  },
);
