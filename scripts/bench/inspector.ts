import { promises as fs } from 'node:fs';
import WebSocket from 'ws';

/**
 * A client of the V8 inspector of another process (started with `--inspect=127.0.0.1:0`), to
 * profile the coordinator phase by phase while the benchmark drives it: CPU profiles per phase
 * (Profiler.start/stop) and the sampling heap profiler (what allocated the memory still live).
 */
export class InspectorClient {
  private id = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message));
      else p.resolve(msg.result);
    });
    ws.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('inspector connection closed'));
      this.pending.clear();
    });
  }

  static async connect(url: string): Promise<InspectorClient> {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1024 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new InspectorClient(ws);
  }

  post<T = unknown>(method: string, params: Record<string, unknown> = {}, timeoutMs = 300_000): Promise<T> {
    const id = ++this.id;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`inspector ${method}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  async startCpuProfile(samplingIntervalUs = 1000): Promise<void> {
    await this.post('Profiler.enable');
    await this.post('Profiler.setSamplingInterval', { interval: samplingIntervalUs });
    await this.post('Profiler.start');
  }

  /** Stops the CPU profile and writes it as a .cpuprofile file (Chrome DevTools, speedscope). */
  async stopCpuProfile(file: string): Promise<void> {
    const { profile } = await this.post<{ profile: unknown }>('Profiler.stop');
    await fs.writeFile(file, JSON.stringify(profile));
  }

  async startHeapSampling(samplingIntervalBytes = 64 * 1024): Promise<void> {
    await this.post('HeapProfiler.enable');
    await this.post('HeapProfiler.startSampling', { samplingInterval: samplingIntervalBytes });
  }

  /**
   * The live allocations sampled since startHeapSampling, by allocating function (self size,
   * MiB, largest first). Also writes the raw profile (.heapprofile) when `file` is given.
   */
  async heapSamplingTop(top = 20, file?: string): Promise<{ fn: string; mb: number }[]> {
    const { profile } = await this.post<{ profile: { head: HeapNode } }>('HeapProfiler.getSamplingProfile');
    if (file) await fs.writeFile(file, JSON.stringify(profile));
    const bySite = new Map<string, number>();
    const walk = (n: HeapNode) => {
      const f = n.callFrame;
      const url = f.url.replace(/^file:\/\//, '');
      const short = url.includes('/node_modules/')
        ? url.slice(url.lastIndexOf('/node_modules/') + 14)
        : url.includes('/dist/')
          ? url.slice(url.indexOf('/dist/') + 6)
          : url;
      const key = `${f.functionName || '(anonymous)'}${short ? ` ${short}:${f.lineNumber + 1}` : ''}`;
      bySite.set(key, (bySite.get(key) ?? 0) + n.selfSize);
      for (const c of n.children) walk(c);
    };
    walk(profile.head);
    return [...bySite.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, bytes]) => ({ fn, mb: Math.round((bytes / 1024 / 1024) * 10) / 10 }));
  }

  /** process.memoryUsage() of the inspected process, in MiB. */
  async memoryUsage(): Promise<Record<string, number>> {
    const r = await this.post<{ result: { value?: string } }>('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    });
    const usage = JSON.parse(r.result.value ?? '{}') as Record<string, number>;
    return Object.fromEntries(Object.entries(usage).map(([k, v]) => [k, Math.round((v / 1024 / 1024) * 10) / 10]));
  }

  close(): void {
    this.ws.close();
  }
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}
