import t from 'tap';
import {
  confidenceBars,
  confidenceMean,
  type MetricsQueryView,
  type MetricsRowView,
  ms,
  renderMetrics,
} from '../coordinator/cli/commands/metrics.js';
import { renderIo } from './helpers/render-io.js';

// What `otactl metrics` prints: versions (or devices) side by side, quantiles in ms with three
// significant digits, the confidence distribution as one character per 0.1, custom values.

const io = renderIo;

function row(patch: Partial<MetricsRowView> = {}): MetricsRowView {
  return {
    version: '1.0.0',
    devices: 40,
    windows: 2400,
    samples: 120_345,
    errors: 120,
    errorRate: 120 / 120_345,
    latencyMs: { p50: 12.345, p95: 20.44, p99: 1234.5, mean: 13, relativeAccuracy: 0.01 },
    confidence: { counts: [0, 0, 0, 0, 0, 1, 2, 4, 8, 16], samples: 31 },
    values: Object.assign(Object.create(null), { boxes: { p50: 3, p95: 7, p99: 9, mean: 3.4, samples: 100 } }),
    ...patch,
  };
}

const view = (rows: MetricsRowView[]): MetricsQueryView => ({
  model: 'detector',
  source: 'app',
  from: '2026-12-06T10:00:00.000Z',
  to: '2026-12-06T11:00:00.000Z',
  grain: 'minute',
  rows,
});

t.test('numbers: three significant digits, thousands grouped, a dash for none', async (t) => {
  t.equal(ms(12.345), '12.3');
  t.equal(ms(0.041234), '0.0412');
  t.equal(ms(1234.5), '1,235');
  t.equal(ms(null), '-');
  t.equal(ms(undefined), '-');
});

t.test('confidence: one character per bin relative to the fullest, then the mean', async (t) => {
  t.equal(confidenceBars([0, 0, 0, 0, 0, 1, 2, 4, 8, 16]), '     ▁▁▂▄█');
  t.equal(confidenceBars(new Array(10).fill(0)), '-', 'no confidence reported');
  t.equal(confidenceMean([0, 0, 0, 0, 0, 0, 0, 0, 0, 4]), 0.95);
  t.equal(confidenceMean(new Array(10).fill(0)), null);
});

t.test('versions side by side, with the range, grain and accuracy', async (t) => {
  const text = renderMetrics(
    io,
    view([row(), row({ version: '2.0.0', devices: 4, samples: 9_000, errors: 0, errorRate: 0 })]),
  );
  t.match(text, /model detector, application metrics, 2026-12-06 10:00Z to 2026-12-06 11:00Z \(minute grain\)/);
  t.match(text, /VERSION.*DEVICES.*SAMPLES.*ERRORS.*P50 MS.*P95 MS.*P99 MS.*CONFIDENCE.*BOXES P50\/P95/);
  t.match(text, /1\.0\.0.*40.*120,345.*0\.1%.*12\.3.*20\.4.*1,235/);
  t.match(text, /2\.0\.0.*4.*9,000.*0%/);
  t.match(text, /3\/7/);
  // Parsed JSON is a plain object: a value named `constructor` in one row is not found in another.
  const parsed = JSON.parse(
    JSON.stringify(
      view([
        row({ values: { constructor: { p50: 1, p95: 2, p99: 3, mean: 1, samples: 5 } } }),
        row({ version: '2.0.0', values: {} }),
      ]),
    ),
  ) as MetricsQueryView;
  const lines = renderMetrics(io, parsed).split('\n');
  t.match(
    lines.find((l) => l.includes('1.0.0')),
    /1\/2/,
  );
  t.match(
    lines.find((l) => l.includes('2.0.0')),
    /│ - *│?\s*$|\s-\s*$/,
    'the other version shows none',
  );
  t.match(text, /within 1% \(DDSketch\)/);
});

t.test('by device, the probe source, and an empty answer that says why', async (t) => {
  const text = renderMetrics(io, {
    ...view([
      row({ device: 'cam-1', values: Object.create(null), confidence: null, latencyMs: null, errorRate: null }),
    ]),
    source: 'probe',
    grain: 'hour',
  });
  t.match(text, /health probe metrics/);
  t.match(text, /DEVICE.*VERSION.*SAMPLES/);
  t.notMatch(text, /DEVICES/);
  t.match(text, /cam-1.*1\.0\.0/);
  const empty = renderMetrics(io, view([]));
  t.match(empty, /no summaries in this range/);
});
