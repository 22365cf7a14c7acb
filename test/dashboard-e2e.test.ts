import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Locator } from 'playwright-core';
import t from 'tap';
import { goodModel } from '../scripts/tiny-models.js';
import type { AuditEvent, RolloutSummary } from '../shared/messages.js';
import {
  BrowserHarness,
  browserSkip,
  goToRoute,
  linkIndicator,
  mark,
  marked,
  recordChanges,
  recorded,
  sessionValue,
  signIn,
  submitSignIn,
} from './helpers/browser.js';
import { FleetFixture } from './helpers/fleet-fixture.js';
import { openSession, publishOutcome } from './helpers/mqtt-session.js';
import { addOperator, rolloutStatus } from './helpers/operators.js';

// Issue 13, the dashboard in Debian's chromium against a real coordinator process and eight real
// agents: sign-in (wrong and good token, sign-out), a rollout's wave counts arriving on screen
// without a reload, a viewer with no actions (and the broker refusing its approve), approve
// clicked in the page advancing the rollout with the operator named in the audit, and the
// README's screenshot of a rollout in progress. Any console error or uncaught exception in a
// page fails its test (helpers/browser.ts).

t.setTimeout(300_000);

/**
 * The sorted device ids of a table's rows, once they are `want` (the page's fetch is on its way)
 * or after ~10 s of waiting for it.
 */
async function shownRows(rows: Locator, want: readonly string[]): Promise<string[]> {
  const shown = async () =>
    (await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-device') ?? ''))).sort();
  for (let i = 0; i < 400 && JSON.stringify(await shown()) !== JSON.stringify(want); i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  return shown();
}

const DEVICES = ['cam-1', 'cam-2', 'cam-3', 'cam-4', 'cam-5', 'cam-6', 'cam-7', 'cam-8'];
const SESSION_KEY = 'ota-dashboard-session';
const SCREENSHOT = fileURLToPath(new URL('../docs/img/dashboard-rollout.png', import.meta.url));

t.test('the dashboard in chromium: sign-in, live waves, a viewer, approve', { skip: browserSkip() }, async (t) => {
  const browser = await BrowserHarness.launch(t);
  if (!browser) return;
  const f = await FleetFixture.create(t);
  const base = f.coordinator.httpUrl.replace(/\/$/, '');
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  for (const id of DEVICES) await f.enrol(id, { labels: { site: 'lab' } });
  const alice = await addOperator(f, 'alice', 'operator');
  const vic = await addOperator(f, 'vic', 'viewer');
  for (const id of DEVICES) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
  await f.publish('det', '2.0.0', goodModel(2), { counter: 2 });

  await browser.test(
    t,
    'sign-in: a wrong token gets a message, a good one the fleet; sign-out forgets',
    async (t, open) => {
      const page = await open();
      await submitSignIn(page, base, 'alice', 'not-the-token');
      const refused = page.getByRole('alert').and(page.locator('#sign-in-error'));
      await refused.filter({ hasText: 'Wrong user or token' }).waitFor();
      t.equal(await sessionValue(page, SESSION_KEY), null, 'a refused token is not kept');

      await signIn(page, base, 'alice', alice.token);
      t.ok(await page.getByRole('heading', { name: 'Fleet' }).isVisible(), 'the fleet view is shown');
      await page.locator('[data-stat="devices"]').filter({ hasText: /^8$/ }).waitFor();
      await page.locator('[data-stat="online"]').filter({ hasText: /^8$/ }).waitFor();
      // The versions table: det 1.0.0 on all eight devices.
      await page
        .getByRole('row')
        .filter({ has: page.getByRole('rowheader', { name: 'det' }) })
        .filter({ has: page.getByRole('cell', { name: '1.0.0' }) })
        .filter({ has: page.getByRole('cell', { name: '8', exact: true }) })
        .waitFor();
      t.match(await page.locator('header .who').textContent(), /alice.*\(operator\)/, 'the header names the operator');
      const kept = await sessionValue(page, SESSION_KEY);
      t.same(
        JSON.parse(kept ?? 'null'),
        { user: 'alice', token: alice.token },
        'the accepted token is in sessionStorage',
      );
      t.notOk(page.url().includes(alice.token), 'the token is not in the URL');

      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('button', { name: 'Sign in' }).waitFor();
      t.ok(await page.getByLabel('Token').isVisible(), 'back to the sign-in form');
      t.equal(await sessionValue(page, SESSION_KEY), null, 'sign-out cleared the token');
      t.notOk(page.url().includes(alice.token), 'the token is not in the URL');
    },
  );

  await browser.test(
    t,
    "the devices list: the coordinator's filtered pages, never the whole fleet",
    async (t, open) => {
      const page = await open();
      const sent: string[] = [];
      page.on('websocket', (ws) =>
        ws.on('framesent', (f) => sent.push(typeof f.payload === 'string' ? f.payload : f.payload.toString('latin1'))),
      );
      await signIn(page, base, 'vic', vic.token);
      await goToRoute(page, '#/devices');
      const rows = page.locator('table[data-table="devices"] tbody tr');
      const matches = page.locator('[data-field="matches"]');
      await matches.filter({ hasText: /^8 devices match$/ }).waitFor();
      t.same(await shownRows(rows, DEVICES), DEVICES, 'every device, 8 of a page of 50');
      // Typed: the coordinator's answer for "cam-3" (asked once the typing pauses).
      await page.getByLabel('Search').fill('CAM-3');
      await matches.filter({ hasText: /^1 device match$/ }).waitFor();
      t.same(await shownRows(rows, ['cam-3']), ['cam-3'], 'the id search ignores case');
      await page.getByLabel('Search').fill('site=lab');
      await matches.filter({ hasText: /^8 devices match$/ }).waitFor();
      // The state and version choices, from the coordinator's answer.
      await page.getByLabel('State').selectOption('offline');
      await matches.filter({ hasText: /^0 devices match$/ }).waitFor();
      t.same(await shownRows(rows, []), [], 'all eight are online');
      await page.getByLabel('State').selectOption('healthy');
      await page.getByLabel('Version').selectOption('1.0.0');
      await matches.filter({ hasText: /^8 devices match$/ }).waitFor();
      t.match(page.url(), /#\/devices\?.*state=healthy.*version=1\.0\.0/, 'the filter is in the address');
      t.ok(
        sent.some((p) => p.includes('cmd/device.find') && p.includes('"version":"1.0.0"')),
        'the filter went to the coordinator',
      );
      // An enrolment and a removal (audit events): the page asks for its page again.
      await goToRoute(page, '#/devices?q=lab');
      await matches.filter({ hasText: /^8 devices match$/ }).waitFor();
      await f.admin.call('device.add', { id: 'cam-9', labels: { site: 'lab' } });
      await matches.filter({ hasText: /^9 devices match$/ }).waitFor();
      t.same(await shownRows(rows, [...DEVICES, 'cam-9']), [...DEVICES, 'cam-9'], 'the device enrolled meanwhile');
      await f.admin.call('device.rm', { id: 'cam-9' });
      await matches.filter({ hasText: /^8 devices match$/ }).waitFor();
      t.same(await shownRows(rows, DEVICES), DEVICES, 'and gone once removed');
      t.notOk(
        sent.some((p) => p.includes('cmd/device.ls')),
        'the page never asked for the whole fleet (device.ls)',
      );
    },
  );

  await browser.test(
    t,
    "a rollout's wave counts arrive on screen as agents report, without reload",
    async (t, open) => {
      const page = await open();
      await signIn(page, base, 'alice', alice.token);
      // Opened before the rollout exists: everything shown about it came over the live connection.
      await goToRoute(page, '#/rollouts/r-v2');
      await page.getByText('No rollout r-v2 is known to the coordinator.').waitFor();
      await mark(page);
      // Every text the wave-1 legend shows, as it changes.
      await recordChanges(page, 'legend', 'li.wave[data-wave="1"] ul.legend');

      const created = await f.admin.call<RolloutSummary>('rollout.create', {
        id: 'r-v2',
        model: 'det',
        version: '2.0.0',
        devices: DEVICES,
        waves: '25,75:manual,100:manual',
        maxFailureRate: 0,
      });
      t.equal(created.waves[0]?.devices, 2, 'two canaries');
      const wave1 = page.locator('li.wave[data-wave="1"]');
      await wave1.locator('ul.legend li[data-state="healthy"] b.count').filter({ hasText: /^2$/ }).waitFor();
      await page.locator('h1 [data-status="waiting_approval"]').waitFor();
      await page.locator('li.wave[data-wave="2"]').getByText('waits for approval').waitFor();
      const gate = await f.waitForRollout('r-v2', (s) => s.status === 'waiting_approval', 'waiting at the gate');
      t.equal(gate.waves[0]?.counts.healthy, 2, 'the coordinator agrees: two canaries healthy');
      t.ok(await marked(page), 'the same document all along: no reload');
      const legend = await recorded(page, 'legend');
      t.ok(legend.length >= 2, `the legend changed on screen as reports came (${JSON.stringify(legend)})`);
      t.match(legend.at(-1), /healthy\s*2/);
      // The canaries' rows: healthy, on 2.0.0.
      const rows = page.locator('table[data-table="rollout-devices"] tbody tr');
      t.equal(await rows.count(), 2, 'the device table lists the two canaries');
      for (const row of await rows.all()) {
        t.equal(await row.getAttribute('data-state'), 'healthy');
        t.match(await row.textContent(), /2\.0\.0/);
      }
      // Another wave: the coordinator's page for it (rollout.status filters; the state filter is
      // checked below, where a wave has devices in two states).
      const byWave = async (w: number) =>
        (await rolloutStatus(f, 'r-v2')).devices
          .filter((d) => d.wave === w)
          .map((d) => d.id)
          .sort();
      const wave2 = await byWave(2);
      t.equal(wave2.length, 4, 'wave 2 has four devices');
      await page.getByRole('button', { name: 'Wave 2', exact: true }).click();
      await page.getByRole('heading', { name: 'Devices of wave 2' }).waitFor();
      t.same(await shownRows(rows, wave2), wave2, "wave 2's devices, as the coordinator paged them");
      await page.getByRole('button', { name: 'Wave 1', exact: true }).click();
      t.same(await shownRows(rows, await byWave(1)), await byWave(1), 'wave 1 again: the two canaries');
    },
  );

  await browser.test(t, 'a viewer sees no actions, and the broker refuses its approve', async (t, open) => {
    const page = await open();
    await signIn(page, base, 'vic', vic.token);
    await goToRoute(page, '#/rollouts/r-v2');
    await page.locator('h1 [data-status="waiting_approval"]').waitFor();
    // The role came back from operator.whoami: the page knows what vic may do.
    await page.locator('header .who').filter({ hasText: '(viewer)' }).waitFor();
    await page.locator('li.wave[data-wave="2"]').getByText('waits for approval').waitFor();
    t.equal(await page.getByRole('group', { name: 'Rollout actions' }).count(), 0, 'no action group');
    for (const name of ['Approve next wave', 'Promote', 'Halt', 'Abort, keep', 'Abort, revert']) {
      t.equal(await page.getByRole('button', { name }).count(), 0, `no ${name} button`);
    }

    // The broker refuses it anyway: vic's approve, published by hand, closes the connection.
    const session = await openSession(t, f.coordinator.mqttUrl, 'vic', vic.token, 'vic@by-hand');
    const body = { correlationId: 'c-1', replyTo: 'ota/v1/reply/vic@by-hand/r', args: { id: 'r-v2' } };
    t.equal(
      await publishOutcome(session, 'ota/v1/cmd/rollout.approve', Buffer.from(JSON.stringify(body))),
      'closed',
      'the broker closed the connection',
    );
    const after = await rolloutStatus(f, 'r-v2');
    t.match(after.summary, { status: 'waiting_approval', currentWave: 1 }, 'still waiting at the gate');
    const audit = await f.admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'r-v2' });
    t.notOk(
      audit.some((e) => e.action === 'rollout.approved'),
      'no approval in the audit',
    );
  });

  await browser.test(
    t,
    'approve clicked in the page advances the rollout; the audit names the operator',
    async (t, open) => {
      // One wave-2 device goes offline first: it is assigned but never reports (offline devices do
      // not block a wave), so wave 2's bar stays split for the screenshot below.
      const status = await rolloutStatus(f, 'r-v2');
      const offline = status.devices.find((d) => d.wave === 2)?.id ?? '';
      t.ok(offline, `${offline} is in wave 2`);

      const page = await open();
      // What the page asks the broker for (MQTT packets in WebSocket frames): the topic names are
      // plain bytes in a SUBSCRIBE.
      const sent: string[] = [];
      page.on('websocket', (ws) =>
        ws.on('framesent', (f) => sent.push(typeof f.payload === 'string' ? f.payload : f.payload.toString('latin1'))),
      );
      await signIn(page, base, 'alice', alice.token);
      // Seen online, then killed: its will (older than its online status) turns it offline on
      // the page, live (a dead device once stayed "online" on the page for good).
      await goToRoute(page, `#/devices/${offline}`);
      await page
        .locator('[data-field="presence"]')
        .filter({ hasText: /^● online/ })
        .waitFor();
      await f.agents.get(offline)?.kill9();
      await page
        .locator('[data-field="presence"]')
        .filter({ hasText: /^○ offline/ })
        .waitFor();
      t.pass(`${offline} shows offline once killed`);
      await goToRoute(page, '#/rollouts/r-v2');
      const actions = page.getByRole('group', { name: 'Rollout actions' });
      await actions.getByRole('button', { name: 'Approve next wave' }).click();
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      t.match(
        await dialog.textContent(),
        /4 devices of wave 2 are sent det 2\.0\.0/,
        'the confirmation says what happens',
      );
      t.equal((await rolloutStatus(f, 'r-v2')).summary.currentWave, 1, 'nothing sent before the confirmation');
      await dialog.getByRole('button', { name: 'Approve next wave' }).click();
      await dialog.waitFor({ state: 'detached' });

      const advanced = await f.waitForRollout('r-v2', (s) => s.currentWave === 2, 'wave 2 started');
      // Wave 2 may already have completed and wait at the wave-3 gate.
      t.match(advanced.status, /^(running|waiting_approval)$/);
      t.match(
        (await rolloutStatus(f, 'r-v2')).summary,
        { status: /^(running|waiting_approval)$/, currentWave: 2 },
        'otactl: the rollout is in wave 2',
      );
      await page.locator('[data-field="current-wave"]').filter({ hasText: /^2$/ }).waitFor();
      const audit = await f.admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'r-v2' });
      const approved = audit.filter((e) => e.action === 'rollout.approved');
      t.equal(approved.length, 1, 'one approval');
      t.equal(approved[0]?.actor, 'alice', 'the audit row names the operator signed in to the page');
      await page.locator('ol.timeline li[data-action="rollout.approved"]').filter({ hasText: 'by alice' }).waitFor();
      // Wave 2 split (its offline device stays assigned): the "assigned" filter is the
      // coordinator's page of that one device, not the wave's four.
      const filters = page.getByRole('group', { name: 'Filter by state' });
      await filters.getByRole('button', { name: /healthy 3$/ }).waitFor();
      await filters.getByRole('button', { name: /assigned 1$/ }).click();
      const rows = page.locator('table[data-table="rollout-devices"] tbody tr');
      t.same(await shownRows(rows, [offline]), [offline], 'wave 2 filtered on assigned: the offline device');
      await filters.getByRole('button', { name: /^all 4$/ }).click();
      // The page follows the devices it shows, never every device (design section 10).
      t.ok(
        sent.some((f) => f.includes(`ota/v1/devices/${offline}/status`)),
        `the device page subscribed to ${offline}'s own topics`,
      );
      t.ok(
        sent.some((f) => f.includes('ota/v1/fleet')),
        'and to the fleet summary',
      );
      t.notOk(
        sent.some((f) => f.includes('ota/v1/devices/+/')),
        'no subscription to every device (devices/+/...)',
      );
    },
  );

  await browser.test(
    t,
    'a rollout in progress: wave 2 split, wave 3 at its gate (README screenshot)',
    async (t, open) => {
      const page = await open({ viewport: { width: 1280, height: 800 } });
      await signIn(page, base, 'alice', alice.token);
      await goToRoute(page, '#/rollouts/r-v2');
      const wave2 = page.locator('li.wave[data-wave="2"]');
      await wave2.locator('ul.legend li[data-state="healthy"] b.count').filter({ hasText: /^3$/ }).waitFor();
      const states = await wave2
        .locator('ul.legend li')
        .evaluateAll((items) =>
          items.map((li) => `${li.getAttribute('data-state')} ${li.querySelector('b.count')?.textContent}`),
        );
      t.ok(states.length >= 2, `wave 2's bar is split (${states.join(', ')})`);
      t.equal(await wave2.locator('.wave-bar .seg').count(), states.length, 'one bar segment per state');
      const shown = await rolloutStatus(f, 'r-v2');
      t.equal(shown.devices.filter((d) => d.wave === 2 && d.state === 'healthy').length, 3, 'the coordinator agrees');
      // Wave 2 is done as far as the gate goes (the offline device does not block): wave 3 waits.
      await page.locator('h1 [data-status="waiting_approval"]').waitFor();
      await page.locator('li.wave[data-wave="3"]').getByText('waits for approval').waitFor();
      t.equal(
        (await rolloutStatus(f, 'r-v2')).summary.status,
        'waiting_approval',
        'the coordinator: at the wave-3 gate',
      );
      if (process.env.OTA_WRITE_SCREENSHOT === '1') {
        mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
        await page.screenshot({ path: SCREENSHOT });
        t.comment(`screenshot written to ${SCREENSHOT}`);
      }
      t.ok(await linkIndicator(page, 'live').isVisible(), 'still live');
    },
  );
});
