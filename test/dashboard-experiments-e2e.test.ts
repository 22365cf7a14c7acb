import { promises as fs, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import t from 'tap';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { armOf } from '../coordinator/experiments/assign.js';
import type { Comparison } from '../coordinator/experiments/compare.js';
import type { ExperimentStatusResult, ExperimentView } from '../coordinator/experiments/experiment-service.js';
import { formatMs } from '../dashboard/src/experiment-charts.js';
import { DEFAULT_DISTRIBUTION, type Distribution, simulatedSeries } from '../scripts/fleet-sim/metric-distributions.js';
import { mulberry32 } from '../scripts/mulberry32.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { BrowserHarness, browserSkip, goToRoute, mark, marked, signIn } from './helpers/browser.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { TestSigners } from './helpers/signing.js';

// Issue 15, the dashboard's experiment view in Debian's chromium against a real coordinator (in
// process: real Aedes, SQLite and HTTP) whose devices send metric summaries over MQTT drawn from
// set distributions, the candidate three times slower. The list shows the experiment; its page
// shows both arms' numbers as `experiment.compare` has them, both charts with a bar per quantile
// and per bin, each metric's verdict, and refreshes by itself as a device sends more; a viewer
// gets no actions; an operator's promote is refused by the guardrail (the coordinator's message
// in the dialog) and its stop-and-revert, confirmed, stops the experiment. The experiment is
// called `constructor`: its URL round-trips like any id. Any console error fails the page.

t.setTimeout(300_000);

const topics = createTopics();
const DEVICES = 24;
const EXP = 'constructor';
const SCREENSHOT = fileURLToPath(new URL('../docs/img/dashboard-experiment.png', import.meta.url));
const METRICS = ['latency_ms p95 <= +10%', 'confidence mean >= -0.05', 'error_rate <= +1pp'];

/** One summary of 50 inferences of `version` from device `id`, its window starting at `windowStartMs`. */
async function sendSummary(
  client: MqttClient,
  id: string,
  version: string,
  windowStartMs: number,
  dist: Distribution,
  seed: number,
) {
  const summary = {
    ts: new Date(windowStartMs + 60_000).toISOString(),
    windowStart: new Date(windowStartMs).toISOString(),
    windowSeconds: 60,
    windowsMerged: 1,
    series: [simulatedSeries('det', version, 50, mulberry32(seed), dist)],
    dropped: { observations: 0, windows: 0 },
  };
  await client.publishAsync(topics.metrics(id), encodePayload(summary), { qos: 1 });
}

t.test(
  'the experiment view in chromium: list, arms, charts, verdicts, roles, stop and revert',
  { skip: browserSkip() },
  async (t) => {
    const browser = await BrowserHarness.launch(t);
    if (!browser) return;
    const { running, token, admin, dataDir } = await startInProcessCoordinator(t);
    const base = running.httpUrl.replace(/\/$/, '');

    // Two releases of det, 24 devices in group cams on det 1, and an experiment of det 2 against it
    // whose minimum duration is never reached here: the judge takes no look, only people act.
    const signers = new TestSigners();
    await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
    for (const variant of [1, 2]) {
      const bytes = goodModel(variant);
      const file = path.join(dataDir, '..', `m${variant}.onnx`);
      await fs.writeFile(file, bytes);
      const envelope = signers.release('det', String(variant), bytes, { counter: variant });
      await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file });
    }
    const ids = Array.from({ length: DEVICES }, (_, i) => `cam-${String(i).padStart(2, '0')}`);
    const tokens = new Map<string, string>();
    for (const id of ids) tokens.set(id, (await admin.call<{ token: string }>('device.add', { id })).token);
    await admin.call('group.create', { name: 'cams', devices: ids });
    await admin.call('channel.set', { model: 'det', channel: 'stable', version: '1', yes: true });
    const created = await admin.call<ExperimentView>('experiment.create', {
      id: EXP,
      model: 'det',
      control: '1',
      candidate: '2',
      group: 'cams',
      split: 50,
      metrics: METRICS,
      minDurationMs: 3_600_000,
      minDevices: 5,
    });
    const arm = new Map(ids.map((id) => [id, armOf(EXP, id, 50)]));
    t.equal(created.arms.candidate, [...arm.values()].filter((a) => a === 'candidate').length);
    const olga = await admin.call<{ token: string }>('operator.add', { name: 'olga', role: 'operator' });
    const vera = await admin.call<{ token: string }>('operator.add', { name: 'vera', role: 'viewer' });

    // Every device reports once: the candidate arm three times slower.
    const start = Date.parse(created.startedAt);
    const clients = new Map<string, MqttClient>();
    t.teardown(() => Promise.all([...clients.values()].map((c) => c.endAsync(true))));
    let seed = 1;
    for (const id of ids) {
      const client = await mqtt.connectAsync(running.mqttUrl, {
        clientId: id,
        username: id,
        password: tokens.get(id) as string,
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      clients.set(id, client);
      const candidate = arm.get(id) === 'candidate';
      const dist = { ...DEFAULT_DISTRIBUTION, medianMs: candidate ? 30 : 10 };
      await sendSummary(client, id, candidate ? '2' : '1', start + 1000, dist, seed++);
    }
    const compared = await admin.call<Comparison>('experiment.compare', { id: EXP });
    t.equal(compared.control.reporting + compared.candidate.reporting, DEVICES, 'every device reports');
    t.equal(compared.metrics[0]?.verdict, 'worse', 'the slower candidate is worse at p95');

    await browser.test(
      t,
      'the list shows the experiment, and its page the numbers of experiment.compare',
      async (t, open) => {
        const page = await open();
        await signIn(page, base, 'vera', vera.token);
        await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Experiments' }).click();
        const row = page.locator(`table[data-table="experiments"] tr[data-experiment="${EXP}"]`);
        await row.waitFor();
        const text = await row.textContent();
        t.match(text, /det/, 'the model');
        t.match(await row.locator('[data-field="versions"]').textContent(), /^1 vs 2$/, 'control vs candidate');
        t.match(text, /cams/, 'the group');
        t.equal(
          await row.locator('[data-field="split"]').textContent(),
          `50/50 · ${created.arms.control} / ${created.arms.candidate}`,
          'the split and the devices per arm',
        );
        t.equal(await row.locator('[data-status]').getAttribute('data-status'), 'running', 'the status');
        t.equal(await row.locator('[data-field="last-look"]').textContent(), 'none yet', 'no look yet');

        await row.getByRole('link', { name: EXP }).click();
        await page.waitForURL(/#\/experiments\/constructor$/);
        await page.getByRole('heading', { name: EXP, level: 1 }).waitFor();
        await mark(page);
        for (const a of ['control', 'candidate'] as const) {
          const card = page.locator(`article.arm[data-arm="${a}"]`);
          await card
            .locator('[data-field="samples"]')
            .filter({ hasText: new RegExp(`^${compared[a].samples}$`) })
            .waitFor();
          for (const field of ['devices', 'reporting', 'samples', 'errors'] as const) {
            t.equal(
              await card.locator(`[data-field="${field}"]`).textContent(),
              String(compared[a][field]),
              `${a} ${field} as experiment.compare says: ${compared[a][field]}`,
            );
          }
          t.match(await card.textContent(), a === 'control' ? /Control\s*1/ : /Candidate\s*2/);
        }

        // The charts: four quantiles and ten confidence bins, a bar per arm each, in ms and shares.
        const latency = page.locator('svg[data-chart="latency"]');
        t.equal(await latency.locator('rect.bar').count(), 8, 'p50, p90, p95, p99 of both arms');
        for (const a of ['control', 'candidate'] as const) {
          const q = compared[a].latencyMs;
          t.ok(q, `${a} has latencies`);
          for (const k of ['p50', 'p90', 'p95', 'p99'] as const) {
            const bar = latency.locator(`rect.bar[data-arm="${a}"][data-key="${k}"]`);
            t.equal(Number(await bar.getAttribute('data-value')), q?.[k], `${a} ${k} is the compared ${q?.[k]} ms`);
            t.match(
              await bar.locator('title').textContent(),
              `${a} ${a === 'control' ? '1' : '2'} ${k}: ${formatMs(q?.[k] ?? 0)} ms`,
            );
          }
        }
        const labels = await latency.locator('text.bar-label').allTextContents();
        t.same(
          labels,
          (['p50', 'p90', 'p95', 'p99'] as const).flatMap((k) => [
            formatMs(compared.control.latencyMs?.[k] ?? 0),
            formatMs(compared.candidate.latencyMs?.[k] ?? 0),
          ]),
          'each bar labelled with its ms',
        );
        const confidence = page.locator('svg[data-chart="confidence"]');
        t.equal(await confidence.locator('rect.bar').count(), 20, 'ten bins of both arms');
        for (const a of ['control', 'candidate'] as const) {
          const shares = (await confidence
            .locator(`rect.bar[data-arm="${a}"]`)
            .evaluateAll((bars) => bars.map((b) => Number(b.getAttribute('data-value'))))) as number[];
          const bins = compared[a].confidence ?? [];
          const total = bins.reduce((x, y) => x + y, 0);
          t.same(
            shares.map((s) => s.toFixed(6)),
            bins.map((c) => ((100 * c) / total).toFixed(6)),
            `${a}: each bin's share of its ${total} inferences`,
          );
        }

        // One row per metric, with the coordinator's verdict; the slower candidate is worse.
        for (const m of compared.metrics) {
          const mrow = page.locator(`table[data-table="metrics"] tr[data-metric="${m.metric}"]`);
          t.equal(await mrow.getAttribute('data-verdict'), m.verdict, `${m.metric}: ${m.verdict}`);
          t.match(await mrow.locator('[data-field="verdict"]').textContent(), m.verdict);
        }
        const p95 = page.locator('table[data-table="metrics"] tr[data-metric="latency_ms p95"]');
        t.match(await p95.locator('[data-field="verdict"]').getAttribute('class'), /verdict-worse/, 'worse, in red');
        t.match(await p95.locator('[data-field="limit"]').textContent(), '≤ +10.0%');
        t.equal(await p95.locator('svg[data-interval] rect.ci').count(), 1, 'its interval as a bar');
        const srm = page.locator('[data-field="srm"]');
        t.equal(await srm.getAttribute('data-flagged'), 'false', 'no sample ratio mismatch');
        t.match(await srm.textContent(), /ok/);
        t.match(
          await page.locator('[data-field="not-ready"]').textContent(),
          /running for .* of the minimum 1h/,
          'why no automatic decision is taken',
        );

        // A device sends more: the page shows the new numbers by itself.
        const one = ids.find((id) => arm.get(id) === 'control') as string;
        await sendSummary(clients.get(one) as MqttClient, one, '1', start + 61_000, DEFAULT_DISTRIBUTION, 999);
        const after = await admin.call<Comparison>('experiment.compare', { id: EXP });
        t.equal(after.control.samples, compared.control.samples + 50, 'the coordinator counted 50 more');
        await page
          .locator('article.arm[data-arm="control"] [data-field="samples"]')
          .filter({ hasText: new RegExp(`^${after.control.samples}$`) })
          .waitFor();
        t.ok(await marked(page), 'the same document: no reload');
        if (process.env.OTA_WRITE_SCREENSHOT === '1') {
          mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
          // The page down to the confidence chart (the device table under it is a plain list).
          await page.evaluate(() => (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 0));
          const box = await confidence.boundingBox();
          const height = Math.ceil((box?.y ?? 784) + (box?.height ?? 0) + 16);
          await page.screenshot({ path: SCREENSHOT, fullPage: true, clip: { x: 0, y: 0, width: 1280, height } });
          t.comment(`screenshot written to ${SCREENSHOT}`);
        }
      },
    );

    await browser.test(t, 'a viewer sees no actions', async (t, open) => {
      const page = await open();
      await signIn(page, base, 'vera', vera.token);
      await goToRoute(page, `#/experiments/${encodeURIComponent(EXP)}`);
      await page.locator('header .who').filter({ hasText: '(viewer)' }).waitFor();
      await page.locator('table[data-table="metrics"] tr[data-metric="latency_ms p95"]').waitFor();
      t.equal(await page.getByRole('group', { name: 'Experiment actions' }).count(), 0, 'no action group');
      for (const name of ['Promote…', 'Stop', 'Stop and revert']) {
        t.equal(await page.getByRole('button', { name, exact: true }).count(), 0, `no ${name} button`);
      }
    });

    await browser.test(
      t,
      'an operator: promote refused by the guardrail, then stop and revert, confirmed',
      async (t, open) => {
        const page = await open();
        await signIn(page, base, 'olga', olga.token);
        await goToRoute(page, `#/experiments/${encodeURIComponent(EXP)}`);
        const actions = page.getByRole('group', { name: 'Experiment actions' });
        await actions.getByRole('button', { name: 'Promote…' }).click();
        const form = page.locator('form[data-form="promote"]');
        t.equal(await form.getByLabel(/^Waves/).inputValue(), '10,50,100', 'the default waves');
        t.match(
          await form.locator('[data-field="promote-blockers"]').textContent(),
          /refuses to promote while latency_ms p95 is worse than its threshold/,
          'the form says the coordinator will refuse',
        );
        await form.getByRole('button', { name: 'Review promotion…' }).click();
        const dialog = page.getByRole('dialog');
        await dialog.waitFor();
        t.match(
          await dialog.textContent(),
          /A rollout of det 2 over group cams \(24 devices\) starts in waves 10,50,100/,
        );
        await dialog.getByRole('button', { name: 'Promote' }).click();
        // The coordinator's refusal, as it says it, in the dialog that stays open.
        await dialog
          .getByRole('alert')
          .filter({ hasText: /^E_EXPERIMENT_STATE: experiment constructor was not promoted: latency_ms p95 is worse/ })
          .waitFor();
        await dialog.getByRole('button', { name: 'Cancel' }).click();
        await dialog.waitFor({ state: 'detached' });
        t.equal(
          (await admin.call<ExperimentStatusResult>('experiment.status', { id: EXP })).status,
          'running',
          'not promoted',
        );

        await actions.getByRole('button', { name: 'Stop and revert', exact: true }).click();
        await dialog.waitFor();
        t.match(
          await dialog.textContent(),
          new RegExp(`the ${created.arms.candidate} devices of the candidate arm are sent back to det 1`),
          'the confirmation says what happens, in numbers',
        );
        t.equal(
          (await admin.call<ExperimentStatusResult>('experiment.status', { id: EXP })).status,
          'running',
          'nothing sent before the confirmation',
        );
        await dialog.getByRole('button', { name: 'Stop and revert' }).click();
        await dialog.waitFor({ state: 'detached' });
        // The dialog closes on the coordinator's reply: the change is committed by then.
        const stopped = await admin.call<ExperimentStatusResult>('experiment.status', { id: EXP });
        t.equal(stopped.status, 'stopped', 'the coordinator: stopped');
        t.match(
          stopped.endReason,
          /^stopped by olga, candidate arm reverted to the control$/,
          'by the operator signed in',
        );
        await page.locator('h1 [data-status="stopped"]').waitFor();
        await page.locator('[data-field="end-reason"]').filter({ hasText: 'stopped by olga' }).waitFor();
        t.equal(await actions.count(), 0, 'an ended experiment offers no action');
      },
    );
  },
);
