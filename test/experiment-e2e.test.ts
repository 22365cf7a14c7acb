import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { armOf } from '../coordinator/experiments/assign.js';
import type { Comparison } from '../coordinator/experiments/compare.js';
import type { ExperimentStatusResult, ExperimentView } from '../coordinator/experiments/experiment-service.js';
import { goodModel, heavyModel } from '../scripts/tiny-models.js';
import { otactl } from './helpers/cli.js';
import { FleetFixture } from './helpers/fleet-fixture.js';

// An experiment end to end, all real: a coordinator process, agent processes that install each
// arm's release through the signed path (verification, probe), and an application on each device
// that runs real inferences with onnxruntime on the model its agent installed and reports each
// one on the agent's metrics socket. The candidate is a much larger model with the same outputs
// (scripts/tiny-models.ts heavyModel): the comparison must find it slower, and the judge's first
// planned look must halt the experiment and put the candidate arm back on the control, on the
// devices themselves.

t.setTimeout(420_000);

const APP = fileURLToPath(new URL('../dist/scripts/metrics-app.js', import.meta.url));
const EXPERIMENT = 'exp-e2e';
const PER_ARM = 5;

function runApp(stateDir: string, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        APP,
        '--state-dir',
        stateDir,
        '--model',
        'det',
        '--socket',
        path.join(stateDir, 'metrics.sock'),
        '--count',
        String(count),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`metrics-app exited ${code}: ${err}`))));
  });
}

t.test('a much larger candidate is judged slower and the guardrail reverts its arm on the devices', async (t) => {
  const f = await FleetFixture.create(t);
  await f.publish('det', '1.0.0', goodModel(1), { channel: 'stable', counter: 1 });
  await f.publish('det', '2.0.0', heavyModel(), { counter: 2 });
  // Five devices per arm: names picked by the experiment's own hash, so the arms are even.
  const arms = { control: [] as string[], candidate: [] as string[] };
  for (let i = 0; arms.control.length < PER_ARM || arms.candidate.length < PER_ARM; i++) {
    const id = `cam-${i}`;
    const list = arms[armOf(EXPERIMENT, id, 50)];
    if (list.length < PER_ARM) list.push(id);
  }
  const ids = [...arms.control, ...arms.candidate];
  for (const id of ids) await f.enrol(id, { config: { metrics: { windowSeconds: 2 } } });
  for (const id of ids) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
  await f.admin.call('group.create', { name: 'cams', devices: ids });

  const env = { OTA_URL: f.coordinator.mqttUrl, OTA_USER: 'admin', OTA_TOKEN: f.coordinator.admin().token };
  const cli = async <T>(...args: string[]): Promise<T> => {
    const r = await otactl(['experiment', ...args, '--json'], { env });
    if (r.code !== 0) throw new Error(`otactl experiment ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };
  const created = await cli<ExperimentView>(
    'create',
    '--id',
    EXPERIMENT,
    '--model',
    'det',
    '--control',
    '1.0.0',
    '--candidate',
    '2.0.0',
    '--group',
    'cams',
    '--metric',
    'latency_ms p95 <= +50%',
    '--min-duration',
    '1m',
    '--min-devices',
    String(PER_ARM),
  );
  t.strictSame(created.arms, { control: PER_ARM, candidate: PER_ARM });
  // The candidate arm installs 2.0.0 through the normal path (download, signature, probe).
  for (const id of arms.candidate) await f.waitForDevice(id, 'det', 'healthy', '2.0.0');

  // Each device's application runs real inferences on what its agent installed.
  for (const id of ids) await runApp(path.join(f.dir, `${id}-state`), 300);
  const deadline = Date.now() + 60_000;
  let c: Comparison;
  for (;;) {
    c = await cli<Comparison>('compare', EXPERIMENT);
    if (c.control.samples === PER_ARM * 300 && c.candidate.samples === PER_ARM * 300) break;
    if (Date.now() > deadline)
      throw new Error(`samples did not all arrive: ${JSON.stringify([c.control, c.candidate])}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  t.strictSame([c.control.reporting, c.candidate.reporting], [PER_ARM, PER_ARM], 'every device reports its arm');
  const p95 = c.metrics[0];
  t.equal(p95?.verdict, 'worse', `p95 judged worse: ${JSON.stringify(p95?.difference)}`);
  t.ok((p95?.candidate ?? 0) > (p95?.control ?? Number.POSITIVE_INFINITY), 'the merged p95 of the candidate is higher');
  t.ok((p95?.difference?.low ?? 0) > 0.5, 'the whole interval is above +50%');

  // The first planned look, one minute after the start, halts it.
  const haltDeadline = Date.now() + 120_000;
  let status: ExperimentStatusResult;
  for (;;) {
    status = await cli<ExperimentStatusResult>('status', EXPERIMENT);
    if (status.status !== 'running') break;
    if (Date.now() > haltDeadline) throw new Error('the judge did not decide');
    await new Promise((r) => setTimeout(r, 1000));
  }
  t.equal(status.status, 'halted');
  t.equal(status.lastLook?.look, 1);
  t.match(
    status.endReason,
    /^guardrail breached: latency_ms p95 \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\], limit \+50\.0%: worse$/,
  );
  // On the devices: the candidate arm back on the control release, healthy.
  for (const id of arms.candidate) await f.waitForDevice(id, 'det', 'healthy', '1.0.0');
  for (const id of arms.control) t.equal(f.lastReport(id)?.models.det?.current, '1.0.0', `${id} stayed on 1.0.0`);
  const audit = JSON.parse((await otactl(['audit', 'ls', '--json', '--limit', '1000'], { env })).stdout) as {
    action: string;
    details: Record<string, unknown>;
  }[];
  t.match(audit.find((e) => e.action === 'experiment.halted')?.details, {
    experimentId: EXPERIMENT,
    revertedDevices: PER_ARM,
    evidence: /^after 10 reporting devices/,
  });
});
