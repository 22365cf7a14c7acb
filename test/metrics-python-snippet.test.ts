import { execFile, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { listenMetricsSocket } from '../agent/metrics/metrics-socket.js';
import { WindowAggregator } from '../agent/metrics/window-aggregator.js';
import { createLogger } from '../shared/logger.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const hasPython = spawnSync('python3', ['--version']).status === 0;

t.test(
  'the Python snippet of docs/metrics.md reports to a real socket',
  { skip: hasPython ? false : 'python3 is not on PATH' },
  async (t) => {
    const doc = await fs.readFile(path.join(root, 'docs', 'metrics.md'), 'utf8');
    const section = doc.slice(doc.indexOf('### Reporting from Python'));
    const code = /```python\n([\s\S]*?)```/.exec(section)?.[1];
    t.ok(code, 'the section has a python fence');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ota-metrics-py-'));
    t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
    const socketPath = path.join(dir, 'metrics.sock');
    const agg = new WindowAggregator();
    const server = await listenMetricsSocket({
      path: socketPath,
      context: {
        knownVersions: (m) => (m === 'detector' ? new Set(['1.4.0']) : undefined),
        declaredValues: new Set(['boxes']),
      },
      sink: agg,
      logger: createLogger('silent'),
    });
    t.teardown(() => server.close());
    const script = path.join(dir, 'snippet.py');
    await fs.writeFile(script, code as string);
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        'python3',
        [script],
        { env: { ...process.env, OTA_METRICS_SOCKET: socketPath } },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin?.end();
    });
    t.equal(result.code, 0, `python3 exits 0 ${result.stderr}`);
    // A round trip on a new connection: the snippet's connection, closed before, was read first.
    await new Promise<void>((resolve) => {
      const s = net.connect(socketPath, () => s.write('x\n'));
      s.once('data', () => {
        s.destroy();
        resolve();
      });
    });
    const m = agg.close(new Date('2025-01-01T00:00:00Z'), new Date('2025-01-01T00:01:00Z'), 60);
    t.equal(m?.series[0]?.count, 4, 'the batch of 3 and the single observation arrived');
    t.equal(m?.series[0]?.errors, 1);
    t.equal(m?.series[0]?.values?.boxes?.count, 1);
    t.equal(m?.dropped?.observations, 1, 'only the barrier line was refused');
  },
);
