import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import t, { type Test } from 'tap';
import { type DownloadRequest, downloadArtifact, parseContentRange } from '../agent/download/http-download.js';
import { youngGenerationGc } from '../agent/download/scavenge.js';

// The downloader against real HTTP servers on 127.0.0.1 and real files: resume, the size cap,
// deadlines and stalls, and bounded memory. Every server is closed in t.teardown.

interface Served {
  range: string | undefined;
  authorization: string | undefined;
  status: number;
  /** Bytes handed to the socket for this response (a superset of what the client received). */
  bytesSent: number;
  closed: boolean;
}

interface Server {
  url: string;
  requests: Served[];
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, served: Served) => void;

async function serve(t: Test, handler: Handler): Promise<Server> {
  const requests: Served[] = [];
  const server = http.createServer((req, res) => {
    const served: Served = {
      range: req.headers.range,
      authorization: req.headers.authorization,
      status: 0,
      bytesSent: 0,
      closed: false,
    };
    requests.push(served);
    res.on('close', () => {
      served.closed = true;
    });
    handler(req, res, served);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/artifacts/sha256/${'ab'.repeat(32)}`, requests };
}

interface BodyOptions {
  /** Bytes per write (default 64 KiB). */
  chunk?: number;
  /** Pause between writes in ms (default: none, the next write follows its callback). */
  everyMs?: number;
  /** Destroy the socket once this many bytes were written (a server or link dying mid-way). */
  destroyAfter?: number;
  /** Stop writing, without ending the response, once this many bytes were written. */
  hangAfter?: number;
}

/** Writes `body` chunk by chunk, each write after the previous one's callback (no buffering). */
function sendBody(res: http.ServerResponse, body: Buffer, served: Served, opts: BodyOptions = {}): void {
  const chunk = opts.chunk ?? 64 * 1024;
  let offset = 0;
  const next = (): void => {
    if (res.destroyed) return;
    if (opts.destroyAfter !== undefined && offset >= opts.destroyAfter) {
      // Give the client time to read what was sent, as when a server process dies: the kernel
      // then closes the connection after the bytes in flight.
      setTimeout(() => res.destroy(), 50);
      return;
    }
    if (opts.hangAfter !== undefined && offset >= opts.hangAfter) return;
    if (offset >= body.length) {
      res.end();
      return;
    }
    const piece = body.subarray(offset, offset + chunk);
    offset += piece.length;
    served.bytesSent += piece.length;
    res.write(piece, () => {
      if (opts.everyMs) setTimeout(next, opts.everyMs);
      else setImmediate(next);
    });
  };
  next();
}

/** A server with Range support (RFC 9110 section 14) like the coordinator's artifact store. */
function rangeHandler(body: Buffer, opts: BodyOptions & { ignoreRange?: boolean } = {}): Handler {
  return (req, res, served) => {
    const m = req.headers.range ? /^bytes=(\d+)-$/.exec(req.headers.range) : null;
    if (m && !opts.ignoreRange) {
      const start = Number(m[1]);
      if (start >= body.length) {
        served.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      served.status = 206;
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
      sendBody(res, body.subarray(start), served, opts);
      return;
    }
    served.status = 200;
    res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    sendBody(res, body, served, opts);
  };
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * A request with limits no test reaches on a busy machine (two minutes, 30 s without a byte):
 * the tests about the deadline or the stall timeout set their own.
 */
function request(url: string, partFile: string, body: Buffer, extra: Partial<DownloadRequest> = {}): DownloadRequest {
  return { url, partFile, expectedSize: body.length, deadlineMs: 120_000, stallTimeoutMs: 30_000, ...extra };
}

async function fileSize(file: string): Promise<number> {
  return (await fs.stat(file)).size;
}

t.test('full download: size, sha256, counters, file content, no stray files', async (t) => {
  const body = randomBytes(1024 * 1024 + 17);
  const srv = await serve(t, rangeHandler(body));
  const dir = t.testdir();
  const part = path.join(dir, 'x.part');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: 0, bytesFetched: body.length });
  t.ok((await fs.readFile(part)).equals(body), 'the part file holds exactly the body');
  t.same(await fs.readdir(dir), ['x.part'], 'no temporary files');
  t.equal(srv.requests.length, 1);
  t.equal(srv.requests[0]?.range, undefined, 'no Range header for an empty part file');
});

t.test('headers are sent; messages name neither the query string nor header values', async (t) => {
  const body = randomBytes(1000);
  const srv = await serve(t, (_req, res, served) => {
    served.status = 404;
    res.writeHead(404).end('nope');
  });
  const part = path.join(t.testdir(), 'x.part');
  const err = await downloadArtifact(
    request(`${srv.url}?token=s3cret`, part, body, { headers: { Authorization: 'Bearer hunter2' } }),
  ).catch((e: unknown) => e);
  t.match(err, { name: 'OtaError', code: 'E_DOWNLOAD', message: /HTTP 404 .*\/artifacts\/sha256\/abab/ });
  t.notMatch((err as Error).message, /s3cret|hunter2|token/);
  t.equal(srv.requests[0]?.authorization, 'Bearer hunter2');
});

t.test('HTTP 500 is E_DOWNLOAD and leaves the part file alone', async (t) => {
  const body = randomBytes(1000);
  const srv = await serve(t, (_req, res) => {
    res.writeHead(500).end('boom');
  });
  const part = path.join(t.testdir({ 'x.part': body.subarray(0, 100) }), 'x.part');
  await t.rejects(downloadArtifact(request(srv.url, part, body)), { code: 'E_DOWNLOAD', message: /HTTP 500/ });
  t.ok((await fs.readFile(part)).equals(body.subarray(0, 100)), 'valid prefix kept');
  t.equal(srv.requests[0]?.range, 'bytes=100-');
});

t.test('connection refused is E_UNREACHABLE naming the cause', async (t) => {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const part = path.join(t.testdir(), 'x.part');
  await t.rejects(downloadArtifact(request(`http://127.0.0.1:${port}/a`, part, randomBytes(10))), {
    code: 'E_UNREACHABLE',
    message: /ECONNREFUSED/,
  });
});

t.test('a URL that is not http(s) is refused before anything happens', async (t) => {
  const part = path.join(t.testdir(), 'x.part');
  await t.rejects(downloadArtifact(request('ftp://127.0.0.1/a', part, randomBytes(10))), { code: 'E_CONFIG' });
  await t.rejects(downloadArtifact(request('not a url?token=s3cret', part, randomBytes(10))), {
    code: 'E_CONFIG',
    message: /^(?!.*s3cret)/,
  });
  await t.rejects(fs.stat(part), 'no part file created');
});

t.test('an encoded body (content-encoding: gzip) is refused: its bytes are not the artifact', async (t) => {
  const body = randomBytes(1000);
  const srv = await serve(t, (req, res) => {
    t.equal(req.headers['accept-encoding'], 'identity', 'asked for the stored bytes');
    res.writeHead(200, { 'content-encoding': 'gzip' }).end(body);
  });
  const part = path.join(t.testdir(), 'x.part');
  await t.rejects(downloadArtifact(request(srv.url, part, body, { headers: { 'Accept-Encoding': 'gzip' } })), {
    code: 'E_DOWNLOAD',
    message: /content-encoding gzip/,
  });
  t.equal(await fileSize(part), 0);
});

t.test('progress: throttled, increasing, and the last call reports the total', async (t) => {
  const body = randomBytes(160 * 1024);
  const srv = await serve(t, rangeHandler(body, { chunk: 8 * 1024, everyMs: 50 })); // about 1 s
  const part = path.join(t.testdir(), 'x.part');
  const calls: { bytes: number; total: number; at: number }[] = [];
  const started = Date.now();
  await downloadArtifact(
    request(srv.url, part, body, { onProgress: (bytes, total) => calls.push({ bytes, total, at: Date.now() }) }),
  );
  const elapsed = Date.now() - started;
  t.ok(calls.length >= 3, `several progress calls (${calls.length})`);
  t.ok(
    calls.length <= Math.ceil(elapsed / 250) + 2,
    `throttled to about one per 250 ms (${calls.length} in ${elapsed} ms)`,
  );
  for (let i = 1; i < calls.length; i++) {
    t.ok((calls[i]?.bytes ?? 0) > (calls[i - 1]?.bytes ?? 0), `call ${i} reports more bytes`);
  }
  for (let i = 1; i < calls.length - 1; i++) {
    t.ok((calls[i]?.at ?? 0) - (calls[i - 1]?.at ?? 0) >= 240, `call ${i} comes at least ~250 ms after the previous`);
  }
  t.ok(calls.every((c) => c.total === body.length));
  t.same(calls.at(-1)?.bytes, body.length, 'the final call reports completion');
});

t.test('an exception from onProgress is rethrown unchanged', async (t) => {
  const body = randomBytes(1000);
  const srv = await serve(t, rangeHandler(body));
  const part = path.join(t.testdir(), 'x.part');
  const boom = new Error('caller bug');
  const err = await downloadArtifact(
    request(srv.url, part, body, {
      onProgress: () => {
        throw boom;
      },
    }),
  ).catch((e: unknown) => e);
  t.equal(err, boom);
});

t.test('resume: hashes the existing prefix and asks for the rest with Range', async (t) => {
  const body = randomBytes(300_000);
  const k = 123_457;
  const srv = await serve(t, rangeHandler(body));
  const part = path.join(t.testdir({ 'x.part': body.subarray(0, k) }), 'x.part');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: k, bytesFetched: body.length - k });
  t.equal(srv.requests.length, 1);
  t.equal(srv.requests[0]?.range, `bytes=${k}-`);
  t.equal(srv.requests[0]?.status, 206);
  t.ok((await fs.readFile(part)).equals(body));
});

t.test('a server that ignores Range (200): the file starts over from byte 0', async (t) => {
  const body = randomBytes(200_000);
  const srv = await serve(t, rangeHandler(body, { ignoreRange: true }));
  // A wrong prefix proves the restart really truncates instead of appending after it.
  const part = path.join(t.testdir({ 'x.part': randomBytes(50_000) }), 'x.part');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: 50_000, bytesFetched: body.length });
  t.equal(srv.requests[0]?.range, 'bytes=50000-', 'it did ask for a range');
  t.ok((await fs.readFile(part)).equals(body));
});

t.test('a 206 that starts at another offset: restart with a plain GET', async (t) => {
  const body = randomBytes(100_000);
  const srv = await serve(t, (req, res, served) => {
    if (req.headers.range) {
      // Claims to resume from 10 instead of the requested offset.
      served.status = 206;
      res.writeHead(206, { 'content-range': `bytes 10-${body.length - 1}/${body.length}` });
      sendBody(res, body.subarray(10), served);
      return;
    }
    rangeHandler(body)(req, res, served);
  });
  const part = path.join(t.testdir({ 'x.part': body.subarray(0, 40_000) }), 'x.part');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.equal(result.sha256, sha256(body));
  t.ok((await fs.readFile(part)).equals(body));
  t.same(
    srv.requests.map((r) => r.range),
    ['bytes=40000-', undefined],
  );
});

t.test('already complete: no request at all', async (t) => {
  const body = randomBytes(50_000);
  const srv = await serve(t, rangeHandler(body));
  const part = path.join(t.testdir({ 'x.part': body }), 'x.part');
  const progress: number[] = [];
  const result = await downloadArtifact(request(srv.url, part, body, { onProgress: (b) => progress.push(b) }));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: body.length, bytesFetched: 0 });
  t.equal(srv.requests.length, 0);
  t.same(progress, [body.length], 'completion is still reported');
});

t.test('an empty artifact is complete without a request', async (t) => {
  const srv = await serve(t, rangeHandler(Buffer.alloc(0)));
  const part = path.join(t.testdir(), 'x.part');
  const result = await downloadArtifact(request(srv.url, part, Buffer.alloc(0)));
  t.same(result, { size: 0, sha256: sha256(Buffer.alloc(0)), resumedFrom: 0, bytesFetched: 0 });
  t.equal(srv.requests.length, 0);
  t.equal(await fileSize(part), 0);
});

t.test('a part file longer than the signed size is discarded and fetched again', async (t) => {
  const body = randomBytes(10_000);
  const srv = await serve(t, rangeHandler(body));
  const part = path.join(t.testdir({ 'x.part': randomBytes(20_000) }), 'x.part');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: 0, bytesFetched: body.length });
  t.equal(srv.requests[0]?.range, undefined);
});

t.test('416: a server with fewer bytes than the part file', async (t) => {
  t.test('declares another size: E_SIZE, part untouched', async (t) => {
    const body = randomBytes(10_000);
    const srv = await serve(t, (_req, res) => {
      res.writeHead(416, { 'content-range': 'bytes */4000' }).end();
    });
    const part = path.join(t.testdir({ 'x.part': body.subarray(0, 5000) }), 'x.part');
    await t.rejects(downloadArtifact(request(srv.url, part, body)), { code: 'E_SIZE', message: /4000.*10000/ });
    t.equal(await fileSize(part), 5000);
  });
  t.test('declares the signed size (inconsistent): restart with a plain GET', async (t) => {
    const body = randomBytes(10_000);
    const srv = await serve(t, (req, res, served) => {
      if (req.headers.range) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      rangeHandler(body)(req, res, served);
    });
    const part = path.join(t.testdir({ 'x.part': body.subarray(0, 5000) }), 'x.part');
    const result = await downloadArtifact(request(srv.url, part, body));
    t.equal(result.sha256, sha256(body));
    t.same(
      srv.requests.map((r) => r.range),
      ['bytes=5000-', undefined],
    );
  });
});

t.test('endless body: E_SIZE, and the file is exactly the signed size', async (t) => {
  const expectedSize = 100_000;
  let streamed = Buffer.alloc(0);
  const srv = await serve(t, (_req, res, served) => {
    res.writeHead(200); // chunked, no length: the only limit is the client's
    const next = (): void => {
      if (res.destroyed) return;
      const piece = randomBytes(16 * 1024);
      if (streamed.length < 1024 * 1024) streamed = Buffer.concat([streamed, piece]);
      served.bytesSent += piece.length;
      res.write(piece, () => setImmediate(next));
    };
    next();
  });
  const part = path.join(t.testdir(), 'x.part');
  const err = await downloadArtifact({
    url: srv.url,
    partFile: part,
    expectedSize,
    deadlineMs: 120_000,
    stallTimeoutMs: 30_000,
  }).catch((e: unknown) => e);
  // E_SIZE, not E_DOWNLOAD_TIMEOUT: stopped by the size cap, not at the deadline.
  t.match(err, { code: 'E_SIZE' });
  t.equal(await fileSize(part), expectedSize, 'never written past the signed size');
  t.ok((await fs.readFile(part)).equals(streamed.subarray(0, expectedSize)), 'the first bytes of the stream');
  await t.resolves(
    waitFor(() => srv.requests[0]?.closed === true),
    'the connection was closed',
  );
  // The server writes only while its response is open (`next` returns once res.destroyed), so
  // the closed response above is the proof that it stopped sending.
});

t.test('a declared length above the signed size: E_SIZE before writing anything', async (t) => {
  const body = randomBytes(20_000);
  const srv = await serve(t, rangeHandler(body));
  const part = path.join(t.testdir(), 'x.part');
  await t.rejects(downloadArtifact({ ...request(srv.url, part, body), expectedSize: 10_000 }), {
    code: 'E_SIZE',
    message: /20000.*10000/,
  });
  t.equal(await fileSize(part), 0);
});

t.test('short body: E_DOWNLOAD, the prefix is kept and the next call resumes', async (t) => {
  const body = randomBytes(100_000);
  let short = true;
  const srv = await serve(t, (req, res, served) => {
    if (short) {
      short = false;
      res.writeHead(200); // chunked: ends cleanly, just too early
      sendBody(res, body.subarray(0, 30_000), served);
      return;
    }
    rangeHandler(body)(req, res, served);
  });
  const part = path.join(t.testdir(), 'x.part');
  await t.rejects(downloadArtifact(request(srv.url, part, body)), {
    code: 'E_DOWNLOAD',
    message: /30000 of 100000/,
  });
  t.ok((await fs.readFile(part)).equals(body.subarray(0, 30_000)), 'prefix kept');
  const result = await downloadArtifact(request(srv.url, part, body));
  t.same(result, { size: body.length, sha256: sha256(body), resumedFrom: 30_000, bytesFetched: 70_000 });
});

const hasDevFull = await fs.stat('/dev/full').then(
  (s) => s.isCharacterDevice(),
  () => false,
);

t.test(
  'a disk that refuses the bytes (ENOSPC via /dev/full): E_IO naming the cause, no crash',
  { skip: hasDevFull ? false : 'no /dev/full on this system' },
  async (t) => {
    // Smaller than one write buffer (fails at the final flush) and several buffers (fails while
    // the next buffer fills, with a write in flight).
    for (const size of [200_000, 5 * 1024 * 1024 + 123]) {
      const body = randomBytes(size);
      const srv = await serve(t, rangeHandler(body));
      await t.rejects(downloadArtifact(request(srv.url, '/dev/full', body)), {
        code: 'E_IO',
        message: /\/dev\/full: no space left on the device/,
      });
      await t.resolves(
        waitFor(() => srv.requests[0]?.closed === true),
        `${size} bytes: the connection was closed`,
      );
    }
  },
);

t.test('stalled after some bytes: E_DOWNLOAD_STALLED within the stall timeout', async (t) => {
  const body = randomBytes(200_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 10_000, hangAfter: 50_000 }));
  const part = path.join(t.testdir(), 'x.part');
  // The code says which limit fired: the stall timeout (300 ms), not the deadline (10 s).
  await t.rejects(downloadArtifact(request(srv.url, part, body, { stallTimeoutMs: 300 })), {
    code: 'E_DOWNLOAD_STALLED',
    message: /300 ms/,
  });
  t.ok((await fs.readFile(part)).equals(body.subarray(0, 50_000)), 'received bytes kept');
  await t.resolves(
    waitFor(() => srv.requests[0]?.closed === true),
    'the connection was closed',
  );
});

t.test('stalled before the response head: E_DOWNLOAD_STALLED', async (t) => {
  const srv = await serve(t, () => {}); // accepts and never answers
  const part = path.join(t.testdir(), 'x.part');
  // E_DOWNLOAD_STALLED, not E_DOWNLOAD_TIMEOUT: the stall timer also covers the wait for the head.
  await t.rejects(downloadArtifact(request(srv.url, part, randomBytes(10), { stallTimeoutMs: 300 })), {
    code: 'E_DOWNLOAD_STALLED',
    message: /300 ms/,
  });
});

t.test('a slow trickle past the deadline: E_DOWNLOAD_TIMEOUT, bytes kept', async (t) => {
  const body = randomBytes(100_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 1000, everyMs: 50 })); // 5 s for everything
  const part = path.join(t.testdir(), 'x.part');
  // The code and message say which limit fired: the 500 ms deadline (the stall timeout is far
  // beyond it, so a busy machine's pauses between chunks cannot fire it first).
  await t.rejects(downloadArtifact(request(srv.url, part, body, { deadlineMs: 500 })), {
    code: 'E_DOWNLOAD_TIMEOUT',
    message: /500 ms/,
  });
  const kept = await fs.readFile(part);
  t.ok(kept.length > 0 && kept.length < body.length, `${kept.length} bytes kept`);
  t.ok(kept.equals(body.subarray(0, kept.length)), 'they are a prefix of the body');
});

t.test('connection cut mid-way, then resumed: bounded re-download', async (t) => {
  const body = randomBytes(1024 * 1024);
  const chunk = 64 * 1024;
  let first = true;
  const srv = await serve(t, (req, res, served) => {
    const opts: BodyOptions = first ? { chunk, destroyAfter: 400 * 1024 } : { chunk };
    first = false;
    rangeHandler(body, opts)(req, res, served);
  });
  const part = path.join(t.testdir(), 'x.part');
  const err = await downloadArtifact(request(srv.url, part, body)).catch((e: unknown) => e);
  t.match(err, {
    code: 'E_DOWNLOAD',
    message: /^download of http:\/\/127\.0\.0\.1:\d+\/artifacts\/sha256\/\w+ failed: /,
  });
  const kept = await fileSize(part);
  const sentFirst = srv.requests[0]?.bytesSent ?? 0;
  t.ok(kept > 0 && kept <= sentFirst && sentFirst < body.length, `${kept} of ${sentFirst} bytes sent kept`);
  const result = await downloadArtifact(request(srv.url, part, body));
  t.equal(result.sha256, sha256(body));
  t.equal(result.resumedFrom, kept);
  t.equal(result.bytesFetched, body.length - kept);
  const total = srv.requests.reduce((n, r) => n + r.bytesSent, 0);
  t.ok(total <= body.length + chunk, `${total} bytes sent over both calls for ${body.length}`);
  t.same(
    srv.requests.map((r) => r.range),
    [undefined, `bytes=${kept}-`],
  );
});

t.test('abort signal: E_DOWNLOAD aborted, bytes kept, connection closed', async (t) => {
  const body = randomBytes(100_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 1000, everyMs: 20 }));
  const part = path.join(t.testdir(), 'x.part');
  const controller = new AbortController();
  let received = 0;
  const download = downloadArtifact(
    request(srv.url, part, body, {
      signal: controller.signal,
      onProgress: (bytes) => {
        received = bytes;
      },
    }),
  );
  // Aborted once the downloader reported bytes received (the body takes 2 s or more to send: an
  // abort that did not stop the download would let it complete, and the rejection below fail).
  await waitFor(() => received > 0);
  controller.abort();
  await t.rejects(download, {
    code: 'E_DOWNLOAD',
    message: /aborted/,
  });
  const kept = await fs.readFile(part);
  t.ok(kept.length > 0 && kept.equals(body.subarray(0, kept.length)), `${kept.length} prefix bytes kept`);
  await t.resolves(
    waitFor(() => srv.requests[0]?.closed === true),
    'the connection was closed',
  );

  const srv2 = await serve(t, rangeHandler(body));
  await t.rejects(downloadArtifact(request(srv2.url, part, body, { signal: AbortSignal.abort() })), {
    code: 'E_DOWNLOAD',
    message: /aborted/,
  });
  t.equal(srv2.requests.length, 0, 'an already aborted signal sends nothing');
  const fresh = path.join(path.dirname(part), 'fresh.part');
  await t.rejects(downloadArtifact(request(srv2.url, fresh, body, { signal: AbortSignal.abort() })), {
    code: 'E_DOWNLOAD',
  });
  await t.rejects(fs.stat(fresh), 'and creates no part file');
});

t.test('two calls on the same part file run one after the other', async (t) => {
  const body = randomBytes(300_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 30_000, everyMs: 10 }));
  const part = path.join(t.testdir(), 'x.part');
  const [a, b] = await Promise.all([
    downloadArtifact(request(srv.url, part, body)),
    downloadArtifact(request(srv.url, part, body)),
  ]);
  t.same(a, { size: body.length, sha256: sha256(body), resumedFrom: 0, bytesFetched: body.length });
  t.same(b, { size: body.length, sha256: sha256(body), resumedFrom: body.length, bytesFetched: 0 });
  t.equal(srv.requests.length, 1);
  t.ok((await fs.readFile(part)).equals(body));
});

t.test('an aborted call releases the part file to the next one once it stopped writing', async (t) => {
  const body = randomBytes(300_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 10_000, everyMs: 10 }));
  const part = path.join(t.testdir(), 'x.part');
  const controller = new AbortController();
  const first = downloadArtifact(request(srv.url, part, body, { signal: controller.signal }));
  await waitFor(() => (srv.requests[0]?.bytesSent ?? 0) >= 50_000);
  controller.abort();
  const second = downloadArtifact(request(srv.url, part, body));
  await t.rejects(first, { code: 'E_DOWNLOAD', message: /aborted/ });
  const result = await second;
  t.equal(result.sha256, sha256(body));
  t.ok(result.resumedFrom > 0, `resumed from ${result.resumedFrom}`);
  t.ok((await fs.readFile(part)).equals(body));
});

t.test('the deadline also covers waiting for another call on the same part file', async (t) => {
  const body = randomBytes(100_000);
  const srv = await serve(t, rangeHandler(body, { chunk: 1000, everyMs: 20 }));
  const part = path.join(t.testdir(), 'x.part');
  const controller = new AbortController();
  let firstSettled = false;
  const first = downloadArtifact(request(srv.url, part, body, { signal: controller.signal })).finally(() => {
    firstSettled = true;
  });
  await t.rejects(downloadArtifact(request(srv.url, part, body, { deadlineMs: 200 })), { code: 'E_DOWNLOAD_TIMEOUT' });
  // The first call runs until it is aborted below: the second gave up at its own deadline, while
  // still waiting for the part file, not after the first finished.
  t.notOk(firstSettled, 'gave up waiting at its own deadline, with the first call still running');
  t.equal(srv.requests.length, 1, 'the waiting call sent nothing');
  controller.abort();
  await t.rejects(first, { code: 'E_DOWNLOAD', message: /aborted/ });
});

const hasOpenssl = ((): boolean => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('https with an extra CA', { skip: hasOpenssl ? false : 'no openssl to make a test certificate' }, async (t) => {
  const dir = t.testdir();
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'];
  args.push('-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1');
  execFileSync('openssl', args, { stdio: 'ignore' });
  const body = randomBytes(100_000);
  const server = https.createServer({ key: await fs.readFile(key), cert: await fs.readFile(cert) }, (req, res) =>
    rangeHandler(body)(req, res, {
      range: undefined,
      authorization: undefined,
      status: 0,
      bytesSent: 0,
      closed: false,
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/a`;
  const part = path.join(dir, 'x.part');
  await t.rejects(downloadArtifact(request(url, part, body)), { code: 'E_DOWNLOAD', message: /certificate/ });
  const result = await downloadArtifact(request(url, part, body, { ca: await fs.readFile(cert) }));
  t.equal(result.sha256, sha256(body));
});

t.test('scavenge: called every 4 MiB received, and a real young-generation GC is available', async (t) => {
  const body = randomBytes(10 * 1024 * 1024 + 7);
  const srv = await serve(t, rangeHandler(body));
  let calls = 0;
  const result = await downloadArtifact(
    request(srv.url, path.join(t.testdir(), 'x.part'), body, { scavenge: () => calls++ }),
  );
  t.equal(result.sha256, sha256(body));
  t.equal(calls, 2, 'twice for 10 MiB');
  const gc = youngGenerationGc();
  t.type(gc, 'function', 'node offers a minor GC at run time');
  t.doesNotThrow(() => gc?.());
});

t.test('memory stays bounded for a 20 MB body', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const body = randomBytes(20 * 1024 * 1024);
  // 256 KiB every 10 ms: about a second, long enough for many samples while bytes flow. The pace
  // also keeps Node's own socket buffers (freed lazily after a collection) from blurring the
  // measure: a consumer that discards every chunk shows up to ~10 MB here at full localhost speed.
  const srv = await serve(t, rangeHandler(body, { chunk: 256 * 1024, everyMs: 10 }));
  const part = path.join(t.testdir(), 'x.part');
  gc();
  const baseline = process.memoryUsage().arrayBuffers;
  let peak = baseline;
  let samples = 0;
  // Sample live memory (after a collection), so garbage chunks awaiting GC do not count but
  // anything the downloader keeps hold of does: buffering the body would add 20 MB here.
  const timer = setInterval(() => {
    gc();
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    samples++;
  }, 50);
  try {
    const result = await downloadArtifact(request(srv.url, part, body));
    t.equal(result.sha256, sha256(body));
  } finally {
    clearInterval(timer);
  }
  const growth = peak - baseline;
  t.ok(samples >= 5, `${samples} samples taken while downloading`);
  t.ok(growth < 8 * 1024 * 1024, `live buffer memory grew by ${(growth / 1024 / 1024).toFixed(1)} MB (body 20 MB)`);
});

t.test('parseContentRange (RFC 9110 section 14.4)', async (t) => {
  t.same(parseContentRange('bytes 10-99/100'), { first: 10, last: 99, complete: 100 });
  t.same(parseContentRange('bytes 0-9/*'), { first: 0, last: 9, complete: null });
  t.equal(parseContentRange(undefined), null);
  t.equal(parseContentRange('bytes 10-5/100'), null, 'last before first');
  t.equal(parseContentRange('bytes 0-100/100'), null, 'last past the end');
  t.equal(parseContentRange('bytes */100'), null, 'unsatisfied form');
  t.equal(parseContentRange('items 0-1/2'), null);
});

/** Polls `cond`; the limit only stops a hung test (it is no assertion of how long things take). */
async function waitFor(cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
