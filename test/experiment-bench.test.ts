import t from 'tap';
import { runExperimentsBench, table } from '../scripts/bench/experiments.js';

// bench:experiments at a small size: the numbers it prints come from the real ingest path and
// the real comparison, and they say what the simulated fleet was made to do (the candidate arm
// 10% slower).

t.test('bench:experiments measures compare over the cohort rows the ingest built', async (t) => {
  const result = await runExperimentsBench({
    devices: 400,
    hours: 3,
    gateHours: 1,
    observations: 60,
    runs: 2,
    seed: 3,
  });
  t.equal(result.summaries, 1200, 'one summary per device and hour');
  t.equal(result.compare.cohortRows, 400, 'one cohort row per device, however many hours');
  t.equal(result.compare.arms.control + result.compare.arms.candidate, 400);
  t.equal(result.compare.samples, 400 * 3 * 60);
  const p50 = result.compare.metrics.find((m) => m.metric === 'latency_ms p50');
  const d = p50?.difference;
  t.ok(d && d.low !== null && d.high !== null && d.low < 0.1 && 0.1 < d.high, `+10% inside ${JSON.stringify(d)}`);
  t.ok(result.compare.ms >= 0 && result.compare.maxMs >= result.compare.ms);
  t.ok(result.cohortIngestOverhead.cpuMsPerSummaryWith > 0);
  t.match(result.gate, { waveDevices: 360, controlDevices: 40 });
  t.match(
    result.gate.detail,
    /^measurement 1 of 1: wave 1 on 1\.1\.0 \(360 devices\) vs 40 devices on 1\.0\.0 over 1h/,
  );
  t.equal(result.gate.outcome, 'fail', 'the wave is 10% slower than a +5% limit');
  const text = table(result);
  t.match(text, /^compare ms, median \(max\)\s+[\d.]+ \([\d.]+\)$/m);
  t.match(text, /^analysis gate decision ms over a 360-device wave, median \(max\)\s+[\d.]+ \([\d.]+\): fail$/m);
  t.match(text, /^ingest CPU ms per summary: no cohort \/ one cohort\s+[\d.]+ \/ [\d.]+$/m);
  t.match(text, /^ {2}latency_ms p50\s+\w+ [\d.-]+ \[[\d.-]+, [\d.-]+\]$/m);
});
