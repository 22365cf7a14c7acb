import { promises as fs } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import { renderComparison } from '../coordinator/cli/commands/experiment.js';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { armOf } from '../coordinator/experiments/assign.js';
import type { Comparison } from '../coordinator/experiments/compare.js';
import type { ExperimentView } from '../coordinator/experiments/experiment-service.js';
import { DEFAULT_DISTRIBUTION, simulatedSeries } from '../scripts/fleet-sim/metric-distributions.js';
import { mulberry32 } from '../scripts/mulberry32.js';
import { goodModel } from '../scripts/tiny-models.js';
import { publicKeyToJson } from '../shared/keys.js';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { renderIo } from './helpers/render-io.js';
import { TestSigners } from './helpers/signing.js';

// `otactl experiment` as an operator types it (the compiled CLI against a real coordinator in
// process), in text and --json, and the comparison table's every line.

const topics = createTopics();

t.test('create, ls, status, compare, promote --move-channel and stop --revert from the CLI', async (t) => {
  const { running, token, admin, dataDir } = await startInProcessCoordinator(t);
  const signers = new TestSigners();
  await admin.call('key.add', { key: publicKeyToJson(signers.releaseKey) });
  for (const v of [1, 2]) {
    const bytes = goodModel(v);
    const file = path.join(dataDir, '..', `m${v}.onnx`);
    await fs.writeFile(file, bytes);
    await uploadRelease({
      url: running.httpUrl,
      user: 'admin',
      token: token.token,
      envelope: signers.release('det', String(v), bytes, { counter: v }),
      file,
    });
  }
  const ids = Array.from({ length: 16 }, (_, i) => `cam-${i}`);
  const tokens = new Map<string, string>();
  for (const id of ids) tokens.set(id, (await admin.call<{ token: string }>('device.add', { id })).token);
  await admin.call('group.create', { name: 'cams', devices: ids });
  const base = ['--url', running.mqttUrl, '--token-file', running.adminTokenFile];
  const cli = (...args: string[]) => otactl([...args, ...base], { env: { OTA_URL: '', OTA_TOKEN: '', OTA_USER: '' } });

  const bad = await cli(
    'experiment',
    'create',
    '--model',
    'det',
    '--control',
    '1',
    '--candidate',
    '2',
    '--group',
    'cams',
    '--metric',
    'latency_ms <= 10%',
  );
  t.equal(bad.code, 2, 'a metric that does not parse is a usage error');
  t.match(bad.stderr, /latency_ms needs a statistic/);
  const common = [
    '--model',
    'det',
    '--control',
    '1',
    '--candidate',
    '2',
    '--group',
    'cams',
    '--metric',
    'error_rate <= +1pp',
  ];
  const badSplit = await cli('experiment', 'create', ...common, '--split', '100');
  t.equal(badSplit.code, 2);
  t.match(badSplit.stderr, /the candidate arm's percent of the group: a whole number from 1 to 99/);
  const badAlpha = await cli('experiment', 'create', ...common, '--alpha', '0.5');
  t.equal(badAlpha.code, 2);
  t.match(badAlpha.stderr, /a false-alarm rate in \(0, 0\.2\], e\.g\. 0\.05/);
  const badWaves = await cli('experiment', 'promote', 'exp-x', '--waves', '10,50');
  t.equal(badWaves.code, 2);
  t.match(badWaves.stderr, /the last wave must be 100/);
  t.strictSame(await admin.call('experiment.ls'), [], 'none of them created anything');

  // A rollout's analysis file: read by otactl, checked by the coordinator.
  const noFile = await cli(
    'rollout',
    'create',
    '--model',
    'det',
    '--version',
    '2',
    '--group',
    'cams',
    '--waves',
    '50:analysis,100',
    '--analysis',
    path.join(dataDir, 'none.json'),
  );
  t.equal(noFile.code, 2);
  t.match(noFile.stderr, /--analysis .*none\.json: cannot read it \(ENOENT\)/);
  const notJson = path.join(dataDir, '..', 'gate.txt');
  await fs.writeFile(notJson, 'bake for 30 minutes');
  const notParsed = await cli(
    'rollout',
    'create',
    '--model',
    'det',
    '--version',
    '2',
    '--group',
    'cams',
    '--waves',
    '50:analysis,100',
    '--analysis',
    notJson,
  );
  t.equal(notParsed.code, 2);
  t.match(notParsed.stderr, /--analysis .*gate\.txt is not JSON/);
  const gateFile = path.join(dataDir, '..', 'gate.json');
  await fs.writeFile(gateFile, JSON.stringify({ metrics: ['latency_ms p95 <= +10%'], bakeTime: '10s' }));
  const refusedGate = await cli(
    'rollout',
    'create',
    '--model',
    'det',
    '--version',
    '2',
    '--group',
    'cams',
    '--waves',
    '50:analysis,100',
    '--analysis',
    gateFile,
  );
  t.not(refusedGate.code, 0);
  t.match(refusedGate.stderr, /E_EXPERIMENT_SPEC: analysis: bakeTime must be from 1m to 7d/);
  t.strictSame(await admin.call('rollout.ls'), [], 'no rollout was created');

  const created = await cli(
    'experiment',
    'create',
    '--id',
    'exp-cli',
    '--model',
    'det',
    '--control',
    '1',
    '--candidate',
    '2',
    '--group',
    'cams',
    '--metric',
    'latency_ms p95 <= +10%',
    '--metric',
    'error_rate <= +1pp',
    '--min-duration',
    '5m',
    '--min-devices',
    '3',
  );
  t.equal(created.code, 0, created.stderr);
  const arms = { control: 0, candidate: 0 };
  for (const id of ids) arms[armOf('exp-cli', id, 50)]++;
  t.match(created.stdout, /^experiment exp-cli: det 1 \(control\) vs 2 \(candidate\) on group cams, status running$/m);
  t.match(
    created.stdout,
    new RegExp(`^split 50/50: control ${arms.control} device\\(s\\), candidate ${arms.candidate} device\\(s\\)$`, 'm'),
  );
  t.match(created.stdout, /^metrics: latency_ms p95 <= \+10%; error_rate <= \+1pp$/m);
  t.match(created.stdout, /^no automatic decision before 5m and 3 reporting devices per arm; false-alarm rate 0\.05$/m);
  t.match(created.stderr, /next: `otactl experiment compare exp-cli`/);

  const listed = await cli('experiment', 'ls');
  t.match(listed.stdout, /^ID\s+MODEL\s+CONTROL\s+CANDIDATE\s+GROUP\s+SPLIT\s+STATUS\s+LAST LOOK\s+STARTED/m);
  t.match(
    listed.stdout,
    new RegExp(`^exp-cli\\s+det\\s+1\\s+2\\s+cams\\s+${arms.control}/${arms.candidate}\\s+running\\s+-\\s+`, 'm'),
  );
  const json = JSON.parse((await cli('experiment', 'ls', '--json')).stdout) as ExperimentView[];
  t.equal(json[0]?.id, 'exp-cli');

  const status = await cli('experiment', 'status', 'exp-cli');
  t.match(status.stdout, /^DEVICE\s+ARM\s+STATE\s+RUNS\s+ONLINE$/m);
  t.match(status.stdout, new RegExp(`^cam-0\\s+${armOf('exp-cli', 'cam-0', 50)}\\s+-\\s+-\\s+offline$`, 'm'));

  // Devices report: equal arms.
  const view = json[0] as ExperimentView;
  let seed = 7;
  for (const id of ids) {
    const client = await mqtt.connectAsync(running.mqttUrl, {
      clientId: id,
      username: id,
      password: tokens.get(id),
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    const start = Date.parse(view.startedAt) + 1000;
    const version = armOf('exp-cli', id, 50) === 'candidate' ? '2' : '1';
    const summary = {
      ts: new Date(start + 60_000).toISOString(),
      windowStart: new Date(start).toISOString(),
      windowSeconds: 60,
      windowsMerged: 1,
      series: [simulatedSeries('det', version, 40, mulberry32(seed++), DEFAULT_DISTRIBUTION)],
    };
    await client.publishAsync(topics.metrics(id), encodePayload(summary), { qos: 1 });
    await client.endAsync();
  }
  const compared = await cli('experiment', 'compare', 'exp-cli');
  t.equal(compared.code, 0, compared.stderr);
  t.match(compared.stdout, /^experiment exp-cli \(det\) running for \d+s, look 0, intervals at \d+\.\d\d%$/m);
  t.match(compared.stdout, /^ARM\s+VERSION\s+DEVICES\s+REPORTING\s+SAMPLES\s+ERRORS$/m);
  t.match(
    compared.stdout,
    new RegExp(`^control\\s+1\\s+${arms.control}\\s+${arms.control}\\s+${arms.control * 40}\\s+\\d+$`, 'm'),
  );
  t.match(compared.stdout, /^METRIC\s+CONTROL\s+CANDIDATE\s+DIFFERENCE\s+INTERVAL\s+LIMIT\s+VERDICT$/m);
  t.match(
    compared.stdout,
    /^latency_ms p95\s+\d+\.\d+\s+\d+\.\d+\s+[+-]\d+\.\d%\s+\[[+-]\d+\.\d%, [+-]\d+\.\d%\]\s+<= \+10\.0%\s+(inconclusive|better|worse)$/m,
  );
  t.match(compared.stdout, /^error_rate\s+\d+\.\d\d%\s+\d+\.\d\d%\s+[+-]\d+\.\d\dpp\s+\[.*\]\s+<= \+1\.00pp\s+\w+$/m);
  t.match(compared.stdout, /^SRM: \d+\/\d+ reporting devices, p = [\d.e-]+ ok$/m);
  t.match(compared.stdout, /^no automatic decision now: running for \d+s of the minimum 5m$/m);
  const cJson = JSON.parse((await cli('experiment', 'compare', 'exp-cli', '--json')).stdout) as Comparison;
  t.equal(cJson.control.samples, arms.control * 40);

  // promote without a rollout or a channel: told what to give.
  const neither = await cli('experiment', 'promote', 'exp-cli');
  t.equal(neither.code, 2);
  t.match(neither.stderr, /give --waves for a rollout over the group .* or --move-channel/);
  // More than 5 devices move: confirm.
  const unconfirmed = await cli('experiment', 'promote', 'exp-cli', '--move-channel', '--force');
  t.not(unconfirmed.code, 0);
  t.match(unconfirmed.stderr, new RegExp(`re-targets ${arms.control} devices at once .* confirm with --yes`));
  t.equal(
    (await admin.call<ExperimentView>('experiment.status', { id: 'exp-cli' })).status,
    'running',
    'nothing changed',
  );
  const moved = await cli('experiment', 'promote', 'exp-cli', '--move-channel', '--yes', '--force');
  t.equal(moved.code, 0, moved.stderr);
  t.match(moved.stdout, /^promoted 2 to channel stable after 16 reporting devices/m);
  const ended = await admin.call<ExperimentView>('experiment.status', { id: 'exp-cli' });
  t.strictSame(ended.promotedTo, { channel: 'stable' });

  // A second experiment, stopped with --revert.
  const again = await cli(
    'experiment',
    'create',
    '--id',
    'exp-2',
    '--model',
    'det',
    '--control',
    '1',
    '--candidate',
    '2',
    '--group',
    'cams',
    '--metric',
    'latency_ms mean <= +10%',
    '--json',
  );
  t.equal(again.code, 0, again.stderr);
  const stopped = await cli('experiment', 'stop', 'exp-2', '--revert');
  t.equal(stopped.code, 0, stopped.stderr);
  t.match(stopped.stdout, /^ended .*: stopped by admin, candidate arm reverted to the control$/m);
  const missing = await cli('experiment', 'compare', 'nope');
  t.not(missing.code, 0);
  t.match(missing.stderr, /no experiment "nope": see `otactl experiment ls`/);
});

t.test('the comparison table: notes, a mismatch, a look reached', async (t) => {
  const arm = (name: 'control' | 'candidate', reporting: number) => ({
    arm: name,
    version: name === 'control' ? '1' : '2',
    devices: 10,
    reporting,
    samples: reporting * 100,
    errors: 1,
    latencyMs: null,
    confidence: null,
  });
  const c: Comparison = {
    experiment: 'e',
    model: 'det',
    status: 'running',
    at: '2026-12-06T12:00:00.000Z',
    elapsedMs: 3_600_000,
    look: { index: 2, level: 0.9876, nextAt: '2026-12-06T13:00:00.000Z' },
    control: arm('control', 10),
    candidate: arm('candidate', 2),
    srm: { observed: [10, 2], expected: [6, 6], chi2: 5.3, p: 0.0002, flagged: true },
    ready: false,
    notReady: ['sample ratio mismatch: ...'],
    metrics: [
      {
        spec: 'confidence mean >= -0.02',
        metric: 'confidence mean',
        direction: 'higher_is_better',
        threshold: { kind: 'absolute', value: -0.02 },
        control: 0.9,
        candidate: null,
        devices: { control: 10, candidate: 2 },
        difference: null,
        p: null,
        verdict: 'inconclusive',
        meetsThreshold: false,
        note: 'too few devices with a value (control 10, candidate 2; at least 3 each)',
      },
      {
        spec: 'latency_ms p99 <= +5',
        metric: 'latency_ms p99',
        direction: 'lower_is_better',
        threshold: { kind: 'absolute', value: 5 },
        control: 1234.5,
        candidate: 12.5,
        devices: { control: 10, candidate: 3 },
        difference: { kind: 'absolute', estimate: -3.2, low: null, high: null },
        p: 0.2,
        verdict: 'better',
        meetsThreshold: true,
        note: null,
      },
    ],
  };
  const text = renderComparison(renderIo, c);
  t.match(text, /^confidence mean\s+0\.900\s+-\s+-\s+-\s+>= -0\.0200\s+inconclusive$/m);
  t.match(text, /^latency_ms p99\s+1234\.5\s+12\.5\s+-3\.20\s+\[\?, \?\]\s+<= \+5\.00\s+better$/m);
  t.match(text, /^note: confidence mean: too few devices with a value/m);
  t.match(text, /^SRM: 10\/2 reporting devices, p = 0\.00020 MISMATCH$/m);
  t.match(text, /^no automatic decision now: sample ratio mismatch/m);
  const ready = renderComparison(renderIo, { ...c, ready: true, notReady: [] });
  t.match(ready, /^next planned look at 2026-12-06T13:00:00\.000Z$/m);
  t.notMatch(renderComparison(renderIo, { ...c, ready: true, notReady: [], status: 'halted' }), /next planned look/);
});
