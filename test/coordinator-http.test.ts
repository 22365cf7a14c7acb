import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import t, { type Test } from 'tap';
import { downloadArtifact } from '../agent/download/http-download.js';
import type { Principal } from '../coordinator/broker/principal.js';
import { ArtifactStore } from '../coordinator/http/artifact-store.js';
import {
  createHttpServer,
  type HealthReport,
  httpStatusFor,
  type PublishInput,
  parseRange,
  type ReleaseClaim,
} from '../coordinator/http/http-server.js';
import { createMetrics, RolloutStatusBook } from '../coordinator/http/metrics.js';
import { type Envelope, signManifest, verifyArtifact, verifyEnvelope } from '../shared/envelope.js';
import { OtaError } from '../shared/errors.js';
import { generateKey } from '../shared/keys.js';
import type { Manifest } from '../shared/manifest.js';
import { ROLLOUT_STATUSES, type RolloutStatus } from '../shared/messages.js';
import { signerFor } from '../shared/signatures.js';
import { manifestFor } from './helpers/releases.js';

// The coordinator's HTTP server, for real: fastify on 127.0.0.1 port 0, artifacts as files in
// t.testdir(), releases signed with the real signing code and verified by a publishRelease built
// from the real verifyEnvelope/verifyArtifact (standing in for the coordinator's store).

const publisherKey = generateKey();
const strangerKey = generateKey();
const DEVICE_ID = 'dev-secret-7';

const USERS: Record<string, { token: string; principal: Principal }> = {
  alice: { token: 'op-token', principal: { kind: 'operator', name: 'alice', role: 'operator' } },
  root: { token: 'admin-token', principal: { kind: 'operator', name: 'root', role: 'admin' } },
  val: { token: 'viewer-token', principal: { kind: 'operator', name: 'val', role: 'viewer' } },
  [DEVICE_ID]: { token: 'device-token', principal: { kind: 'device', deviceId: DEVICE_ID } },
};

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function sign(bytes: Uint8Array, overrides: Partial<Manifest> = {}, key = publisherKey): Envelope {
  return signManifest(manifestFor(bytes, overrides), [signerFor(key)]);
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64');

interface Fixture {
  port: number;
  dir: string;
  artifacts: ArtifactStore;
  metrics: ReturnType<typeof createMetrics>;
  releases: Map<string, { sha256: string; actor: string; channel: string | null }>;
  publishCalls: PublishInput[];
  checkCalls: ReleaseClaim[];
  authFailures: { username: string | null; reason: string }[];
  health: { report: HealthReport | (() => never) };
  /** Files in the artifact directory (content addresses and any temporaries). */
  files(): Promise<string[]>;
  /** Waits until no upload temporary is left (a reset connection can beat the server's cleanup). */
  noTmpFiles(): Promise<string[]>;
}

async function setup(
  t: Test,
  opts: {
    maxUploadBytes?: number;
    publishDelayMs?: number;
    uploadIdleTimeoutMs?: number;
    logger?: Logger;
    /** The audit hook fails (a broken store): the caller must still get its 401. */
    authFailureThrows?: boolean;
  } = {},
): Promise<Fixture> {
  const dir = path.join(t.testdir(), 'artifacts', 'sha256');
  const artifacts = new ArtifactStore(dir);
  await artifacts.init();
  const metrics = createMetrics();
  const releases: Fixture['releases'] = new Map();
  const publishCalls: PublishInput[] = [];
  const checkCalls: ReleaseClaim[] = [];
  const authFailures: Fixture['authFailures'] = [];
  const health: Fixture['health'] = { report: { ok: true } };
  const server = createHttpServer({
    artifacts,
    metrics,
    authenticate: (username, token) => {
      const user = USERS[username];
      return user && user.token === token ? user.principal : null;
    },
    onAuthFailure: (info) => {
      authFailures.push({ username: info.username, reason: info.reason });
      if (opts.authFailureThrows) throw new Error('audit store is down');
    },
    // What the coordinator decides before the body: signatures against the trusted keys, not yet published.
    checkRelease: (claim) => {
      checkCalls.push(claim);
      const { manifest } = verifyEnvelope(claim.envelope, { keys: [publisherKey], threshold: 1 }, { now: new Date() });
      const id = `${manifest.model}@${manifest.version}`;
      if (releases.has(id)) throw new OtaError('E_CONFLICT', `release ${id} already exists`);
    },
    publishRelease: async (input) => {
      publishCalls.push(input);
      // What the coordinator does: signatures against the trusted keys, then size and sha256.
      const { manifest } = verifyEnvelope(input.envelope, { keys: [publisherKey], threshold: 1 }, { now: new Date() });
      verifyArtifact(manifest, input);
      const stat = await fs.stat(input.tmpFile);
      if (stat.size !== input.size) throw new Error('tmp file does not hold the uploaded bytes');
      if (manifest.model === 'boom') throw new Error('secret detail at /var/lib/ota/private');
      if (opts.publishDelayMs) await new Promise((r) => setTimeout(r, opts.publishDelayMs));
      // Check and insert in one synchronous step, like a database transaction.
      const id = `${manifest.model}@${manifest.version}`;
      if (releases.has(id)) throw new OtaError('E_CONFLICT', `release ${id} already exists`);
      releases.set(id, { sha256: manifest.sha256, actor: input.actor, channel: input.channel });
      return { id, sha256: manifest.sha256, size: manifest.size };
    },
    health: () => {
      const r = health.report;
      return typeof r === 'function' ? r() : r;
    },
    ...(opts.maxUploadBytes !== undefined ? { maxUploadBytes: opts.maxUploadBytes } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.uploadIdleTimeoutMs !== undefined ? { uploadIdleTimeoutMs: opts.uploadIdleTimeoutMs } : {}),
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  const files = async () => (await fs.readdir(dir)).sort();
  return {
    port,
    dir,
    artifacts,
    metrics,
    releases,
    publishCalls,
    checkCalls,
    authFailures,
    health,
    files,
    /** The directory once no .tmp file is left (the caller asserts; 30 s only stops a hung test). */
    async noTmpFiles() {
      const until = Date.now() + 30_000;
      for (;;) {
        const list = await files();
        if (!list.some((f) => f.endsWith('.tmp')) || Date.now() > until) return list;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** Stores bytes the way an accepted upload does. */
async function store(f: Fixture, bytes: Buffer): Promise<string> {
  const ingested = await f.artifacts.ingest(Readable.from([bytes]), { maxBytes: bytes.length });
  await f.artifacts.commit(ingested.tmpFile, ingested.sha256);
  return ingested.sha256;
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json: () => { ok: boolean; error?: { code: string; message: string }; [k: string]: unknown };
}

interface RequestOptions {
  method?: string;
  path: string;
  headers?: Record<string, string | number>;
  /** A Buffer is sent with its Content-Length; an array is sent chunked (no Content-Length). */
  body?: Buffer | Buffer[];
  /** Keeps writing chunks until the response arrives or the connection dies. */
  endless?: boolean;
  /** Writes these chunks then neither ends nor writes more. */
  stallAfter?: Buffer;
}

function request(port: number, opts: RequestOptions): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...opts.headers };
    if (Buffer.isBuffer(opts.body)) headers['content-length'] = opts.body.length;
    const req = http.request(
      { host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: () => JSON.parse(body.toString('utf8')),
          });
        });
      },
    );
    req.on('error', reject);
    if (opts.endless) {
      const chunk = Buffer.alloc(64 * 1024, 7);
      let responded = false;
      req.on('response', () => {
        responded = true;
      });
      const pump = () => {
        while (!responded && !req.destroyed && req.write(chunk)) {
          /* until the socket buffer is full */
        }
        if (!responded && !req.destroyed) req.once('drain', pump);
      };
      pump();
      return;
    }
    if (opts.stallAfter) {
      req.write(opts.stallAfter);
      return;
    }
    if (Array.isArray(opts.body)) {
      for (const c of opts.body) req.write(c);
      req.end();
    } else {
      req.end(opts.body);
    }
  });
}

function uploadHeaders(
  envelope: Envelope | string | null,
  auth: Record<string, string> = { authorization: 'Bearer op-token', 'x-ota-user': 'alice' },
): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...auth };
  if (envelope !== null) headers['x-ota-envelope'] = typeof envelope === 'string' ? envelope : b64(envelope);
  return headers;
}

function upload(f: Fixture, bytes: Buffer, envelope: Envelope | string | null, auth?: Record<string, string>) {
  return request(f.port, { method: 'POST', path: '/releases', headers: uploadHeaders(envelope, auth), body: bytes });
}

t.test('parseRange: single ranges, suffixes, clamping, unsatisfiable, ignored forms', async (t) => {
  t.same(parseRange(undefined, 100), { kind: 'full' });
  t.same(parseRange('bytes=0-9', 100), { kind: 'partial', start: 0, end: 9 });
  t.same(parseRange('bytes=90-', 100), { kind: 'partial', start: 90, end: 99 });
  t.same(parseRange('bytes=90-1000', 100), { kind: 'partial', start: 90, end: 99 }, 'end clamped');
  t.same(parseRange('bytes=-10', 100), { kind: 'partial', start: 90, end: 99 });
  t.same(parseRange('bytes=-1000', 100), { kind: 'partial', start: 0, end: 99 }, 'suffix longer than the file');
  t.same(parseRange('BYTES = 5 - 6', 100), { kind: 'partial', start: 5, end: 6 }, 'case and whitespace');
  t.same(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=0-', 0), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=-5', 0), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=9-3', 100), { kind: 'full' }, 'inverted: ignored');
  t.same(parseRange('bytes=0-1,5-6', 100), { kind: 'full' }, 'several ranges: ignored');
  t.same(parseRange('items=0-1', 100), { kind: 'full' }, 'other unit: ignored');
  t.same(parseRange('bytes=-', 100), { kind: 'full' });
  t.same(parseRange('bytes=a-b', 100), { kind: 'full' });
});

t.test('error codes map to HTTP statuses', async (t) => {
  t.equal(httpStatusFor('E_USAGE'), 400);
  t.equal(httpStatusFor('E_MANIFEST'), 400);
  t.equal(httpStatusFor('E_AUTH'), 401);
  t.equal(httpStatusFor('E_FORBIDDEN'), 403);
  t.equal(httpStatusFor('E_NOT_FOUND'), 404);
  t.equal(httpStatusFor('E_CONFLICT'), 409);
  t.equal(httpStatusFor('E_SIZE'), 413);
  for (const code of ['E_SIGNATURE', 'E_SIGNATURE_MALLEATED', 'E_UNKNOWN_KEY', 'E_THRESHOLD', 'E_DIGEST'] as const) {
    t.equal(httpStatusFor(code), 422, code);
  }
  t.equal(httpStatusFor('E_IO'), 500);
  t.equal(httpStatusFor('E_INTERNAL'), 500);
});

t.test('artifact store: content address, validation, idempotent commit, size cap, stale temporaries', async (t) => {
  const dir = path.join(t.testdir(), 'sha256');
  await fs.mkdir(dir, { recursive: true });
  const stale = path.join(dir, '.upload-0123456789abcdef.tmp');
  await fs.writeFile(stale, 'half an upload from a crash');
  const artifacts = new ArtifactStore(dir);
  await artifacts.init();
  t.same(await fs.readdir(dir), [], 'a stale temporary is removed at start');

  const bytes = randomBytes(5000);
  const hex = sha256(bytes);
  t.equal(artifacts.path(hex), path.join(dir, hex));
  for (const bad of ['ABC', hex.toUpperCase(), `${hex}0`, '../../etc/passwd', `${hex.slice(0, 63)}g`]) {
    t.throws(() => artifacts.path(bad), { code: 'E_USAGE' }, `refuses ${bad.slice(0, 20)}`);
  }
  t.equal(await artifacts.has(hex), false);

  const a = await artifacts.ingest(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]), {
    maxBytes: bytes.length,
  });
  t.equal(a.sha256, hex);
  t.equal(a.size, bytes.length);
  t.equal(path.dirname(a.tmpFile), dir, 'the temporary is in the same directory');
  t.equal(await artifacts.has(hex), false, 'not visible before commit');
  await artifacts.commit(a.tmpFile, a.sha256);
  t.equal(await artifacts.has(hex), true);
  t.same(await fs.readFile(artifacts.path(hex)), bytes);

  const b = await artifacts.ingest(Readable.from([bytes]), { maxBytes: bytes.length });
  await artifacts.commit(b.tmpFile, b.sha256);
  t.same(await fs.readdir(dir), [hex], 'committing the same bytes again is a no-op');

  await t.rejects(artifacts.ingest(Readable.from([bytes]), { maxBytes: bytes.length - 1 }), { code: 'E_SIZE' });
  t.same(await fs.readdir(dir), [hex], 'a cut upload leaves no temporary');

  const failing = new Readable({
    read() {
      this.push(Buffer.alloc(100));
      this.destroy(new Error('connection reset'));
    },
  });
  await t.rejects(artifacts.ingest(failing, { maxBytes: 1000 }), { code: 'E_IO' });
  t.same(await fs.readdir(dir), [hex], 'a failed stream leaves no temporary');

  const stalled = new Readable({ read() {} });
  stalled.push(Buffer.alloc(10));
  await t.rejects(artifacts.ingest(stalled, { maxBytes: 1000, idleTimeoutMs: 50 }), { code: 'E_TIMEOUT' });
  t.same(await fs.readdir(dir), [hex], 'a stalled stream leaves no temporary');

  const c = await artifacts.ingest(Readable.from([bytes]), { maxBytes: bytes.length });
  await artifacts.discard(c.tmpFile);
  t.same(await fs.readdir(dir), [hex], 'discard removes the temporary');
  await t.rejects(artifacts.commit(path.join(dir, hex), hex), { code: 'E_INTERNAL' }, 'only its own temporaries');
  await t.rejects(artifacts.discard('/etc/passwd'), { code: 'E_INTERNAL' });
});

t.test('artifact downloads: full, ranges, HEAD, conditional requests, headers, errors', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(300_000);
  const size = bytes.length;
  const hex = await store(f, bytes);
  const url = `/artifacts/sha256/${hex}`;

  const full = await request(f.port, { path: url });
  t.equal(full.status, 200);
  t.equal(full.headers['content-length'], String(size));
  t.equal(full.headers['accept-ranges'], 'bytes');
  t.equal(full.headers.etag, `"${hex}"`);
  t.equal(full.headers['cache-control'], 'public, max-age=31536000, immutable');
  t.equal(full.headers['content-type'], 'application/octet-stream');
  t.equal(sha256(full.body), hex, 'the bytes served are the bytes stored');

  const cases: [string, number, number][] = [
    ['bytes=0-99', 0, 99],
    ['bytes=1000-', 1000, size - 1],
    ['bytes=-500', size - 500, size - 1],
    [`bytes=${size - 10}-${size + 1000}`, size - 10, size - 1],
    [`bytes=-${size + 5}`, 0, size - 1],
    [`bytes=${size - 1}-${size - 1}`, size - 1, size - 1],
  ];
  for (const [range, start, end] of cases) {
    const r = await request(f.port, { path: url, headers: { range } });
    t.equal(r.status, 206, range);
    t.equal(r.headers['content-range'], `bytes ${start}-${end}/${size}`, `${range}: content-range`);
    t.equal(r.headers['content-length'], String(end - start + 1), `${range}: content-length`);
    t.ok(r.body.equals(bytes.subarray(start, end + 1)), `${range}: the exact bytes`);
    t.equal(r.headers.etag, `"${hex}"`);
  }

  // Resuming in pieces gives the same file.
  const pieces: Buffer[] = [];
  for (let start = 0; start < size; start += 70_000) {
    const r = await request(f.port, { path: url, headers: { range: `bytes=${start}-${start + 69_999}` } });
    pieces.push(r.body);
  }
  t.equal(sha256(Buffer.concat(pieces)), hex, 'ranges reassemble to the artifact');

  for (const range of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`, 'bytes=-0']) {
    const r = await request(f.port, { path: url, headers: { range } });
    t.equal(r.status, 416, `${range}: 416`);
    t.equal(r.headers['content-range'], `bytes */${size}`);
    t.equal(r.body.length, 0);
  }

  for (const range of ['bytes=9-3', 'bytes=0-1,5-6', 'lines=1-2']) {
    const r = await request(f.port, { path: url, headers: { range } });
    t.equal(r.status, 200, `${range}: ignored, whole file`);
    t.equal(r.body.length, size);
  }

  const ifRangeOk = await request(f.port, { path: url, headers: { range: 'bytes=0-9', 'if-range': `"${hex}"` } });
  t.equal(ifRangeOk.status, 206, 'If-Range with our ETag: the range');
  const ifRangeOther = await request(f.port, { path: url, headers: { range: 'bytes=0-9', 'if-range': '"other"' } });
  t.equal(ifRangeOther.status, 200, 'If-Range with another validator: the whole file');
  t.equal(ifRangeOther.body.length, size);

  const notModified = await request(f.port, { path: url, headers: { 'if-none-match': `"${hex}"` } });
  t.equal(notModified.status, 304);
  t.equal(notModified.body.length, 0);

  const head = await request(f.port, { method: 'HEAD', path: url });
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(size));
  t.equal(head.headers.etag, `"${hex}"`);
  t.equal(head.headers['accept-ranges'], 'bytes');
  t.equal(head.body.length, 0, 'HEAD has no body');
  const headRange = await request(f.port, { method: 'HEAD', path: url, headers: { range: 'bytes=10-19' } });
  t.equal(headRange.status, 206);
  t.equal(headRange.headers['content-range'], `bytes 10-19/${size}`);
  t.equal(headRange.headers['content-length'], '10');

  const unknown = await request(f.port, { path: `/artifacts/sha256/${'0'.repeat(64)}` });
  t.equal(unknown.status, 404);
  t.equal(unknown.json().error?.code, 'E_NOT_FOUND');
  t.equal(unknown.json().ok, false);
  t.equal(unknown.headers['cache-control'], 'no-store', 'a 404 is not cached as immutable');
  t.notOk(unknown.headers.etag);
  const unknownHead = await request(f.port, { method: 'HEAD', path: `/artifacts/sha256/${'0'.repeat(64)}` });
  t.equal(unknownHead.status, 404);

  for (const bad of [hex.toUpperCase(), hex.slice(0, 10), `${hex.slice(0, 63)}z`, '..%2F..%2Fetc%2Fpasswd']) {
    const r = await request(f.port, { path: `/artifacts/sha256/${bad}` });
    t.equal(r.status, 400, `${bad.slice(0, 20)}: 400`);
    t.equal(r.json().error?.code, 'E_USAGE');
  }

  const empty = await store(f, Buffer.alloc(0));
  const emptyFull = await request(f.port, { path: `/artifacts/sha256/${empty}` });
  t.equal(emptyFull.status, 200);
  t.equal(emptyFull.headers['content-length'], '0');
  const emptyRange = await request(f.port, { path: `/artifacts/sha256/${empty}`, headers: { range: 'bytes=0-' } });
  t.equal(emptyRange.status, 416);
  t.equal(emptyRange.headers['content-range'], 'bytes */0');

  // Bytes served are counted (when each file stream closes, just after the response).
  const served = async () => (await f.metrics.artifactBytesServed.get()).values[0]?.value ?? 0;
  const until = Date.now() + 30_000; // stops a hung test only; the count is what is checked
  while ((await served()) < size * 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.ok((await served()) >= size * 2, 'artifact_bytes_served_total counts the bytes');
});

t.test("the agent's downloader resumes from this server", async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(200_000);
  const hex = await store(f, bytes);
  const partFile = path.join(f.dir, '..', '..', 'a.part');
  await fs.writeFile(partFile, bytes.subarray(0, 123_456));
  const result = await downloadArtifact({
    url: `http://127.0.0.1:${f.port}/artifacts/sha256/${hex}`,
    partFile,
    expectedSize: bytes.length,
    deadlineMs: 10_000,
    stallTimeoutMs: 5_000,
  });
  t.equal(result.sha256, hex);
  t.equal(result.resumedFrom, 123_456);
  t.equal(result.bytesFetched, bytes.length - 123_456, 'only the rest was fetched');
});

t.test('upload: publish then download it back', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(100_000);
  const envelope = sign(bytes, { version: '1.0.0' });
  const r = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(envelope), 'x-ota-channel': 'canary' },
    body: bytes,
  });
  t.equal(r.status, 201, r.body.toString());
  t.same(r.json(), { ok: true, result: { id: 'detector@1.0.0', sha256: sha256(bytes), size: bytes.length } });
  t.same(f.releases.get('detector@1.0.0'), { sha256: sha256(bytes), actor: 'alice', channel: 'canary' });
  t.same(f.publishCalls[0]?.envelope, envelope, 'publishRelease gets the envelope as sent');
  t.same(await f.files(), [sha256(bytes)], 'the artifact at its content address, no temporary');

  const back = await request(f.port, { path: `/artifacts/sha256/${sha256(bytes)}` });
  t.equal(back.status, 200);
  t.ok(back.body.equals(bytes), 'the same bytes come back');

  // HTTP Basic, as an admin, sent chunked (no Content-Length), no channel.
  const bytes2 = randomBytes(50_000);
  const r2 = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: uploadHeaders(sign(bytes2, { version: '2.0.0', counter: 11 }), {
      authorization: `Basic ${Buffer.from('root:admin-token').toString('base64')}`,
    }),
    body: [bytes2.subarray(0, 20_000), bytes2.subarray(20_000)],
  });
  t.equal(r2.status, 201, r2.body.toString());
  t.same(f.releases.get('detector@2.0.0'), { sha256: sha256(bytes2), actor: 'root', channel: null });
  t.same(await f.files(), [sha256(bytes), sha256(bytes2)].sort());

  // A large envelope (a manifest with many inputs) travels in the header: above Node's 16 KiB default.
  const io = Array.from({ length: 64 }, (_, i) => ({
    name: `${'x'.repeat(100)}${i}`,
    type: 'float32',
    dims: [1, 2, 3],
  }));
  const large = sign(bytes2, { version: '2.1.0', inputs: io, outputs: io });
  t.ok(b64(large).length > 20_000, `envelope header of ${b64(large).length} bytes`);
  const r4 = await upload(f, bytes2, large);
  t.equal(r4.status, 201, r4.body.toString());

  // An empty artifact is a valid (if useless) upload.
  const r3 = await upload(f, Buffer.alloc(0), sign(Buffer.alloc(0), { version: '0.0.1' }));
  t.equal(r3.status, 201, r3.body.toString());
});

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('over TLS', { skip: hasOpenssl ? false : 'no openssl to make a test certificate' }, async (t) => {
  const dir = t.testdir();
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'];
  args.push('-keyout', keyFile, '-out', certFile, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1');
  execFileSync('openssl', args, { stdio: 'ignore' });
  const cert = await fs.readFile(certFile);
  const artifacts = new ArtifactStore(path.join(dir, 'artifacts', 'sha256'));
  const bytes = randomBytes(70_000);
  const ingested = await artifacts.ingest(Readable.from([bytes]), { maxBytes: bytes.length });
  await artifacts.commit(ingested.tmpFile, ingested.sha256);
  const server = createHttpServer({
    artifacts,
    metrics: createMetrics({ defaultMetrics: false }),
    authenticate: () => null,
    onAuthFailure: () => {},
    checkRelease: () => {},
    publishRelease: async () => null,
    health: () => ({ ok: true, details: {} }),
    tls: { cert, key: await fs.readFile(keyFile) },
  });
  t.ok(server.server instanceof https.Server, 'an https server, for the WebSocket upgrade too');
  const { port } = await server.listen(0, '127.0.0.1');
  t.teardown(() => server.close());
  const res = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    https
      .get(
        {
          host: '127.0.0.1',
          port,
          path: `/artifacts/sha256/${ingested.sha256}`,
          ca: cert,
          headers: { range: 'bytes=-1000' },
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body: Buffer.concat(chunks) }));
        },
      )
      .on('error', reject);
  });
  t.equal(res.status, 206);
  t.ok(res.body.equals(bytes.subarray(-1000)));
  // The raised header limit applies over TLS too: a 30 KB header reaches the handler (401), not 431.
  const status = await new Promise<number>((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/releases',
        ca: cert,
        headers: { 'content-type': 'application/octet-stream', 'x-ota-envelope': 'A'.repeat(30_000) },
      },
      (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 401);
});

t.test('upload: authentication and roles', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(10_000);
  const envelope = sign(bytes);
  const basic = (s: string) => ({ authorization: `Basic ${Buffer.from(s).toString('base64')}` });
  const cases: [string, Record<string, string>, number, string][] = [
    ['no credentials', {}, 401, 'E_AUTH'],
    ['wrong token', { authorization: 'Bearer nope', 'x-ota-user': 'alice' }, 401, 'E_AUTH'],
    ['unknown user', { authorization: 'Bearer op-token', 'x-ota-user': 'mallory' }, 401, 'E_AUTH'],
    ['Bearer without X-Ota-User', { authorization: 'Bearer op-token' }, 401, 'E_AUTH'],
    ['Basic with a wrong token', basic('alice:admin-token'), 401, 'E_AUTH'],
    ['Basic without a colon', basic('alice'), 401, 'E_AUTH'],
    ['another scheme', { authorization: 'Digest abc' }, 401, 'E_AUTH'],
    ['viewer', { authorization: 'Bearer viewer-token', 'x-ota-user': 'val' }, 403, 'E_FORBIDDEN'],
    ['viewer (Basic)', basic('val:viewer-token'), 403, 'E_FORBIDDEN'],
    ['device credentials', { authorization: 'Bearer device-token', 'x-ota-user': DEVICE_ID }, 403, 'E_FORBIDDEN'],
  ];
  for (const [name, auth, status, code] of cases) {
    const r = await upload(f, bytes, envelope, auth);
    t.equal(r.status, status, `${name}: ${status}`);
    t.equal(r.json().error?.code, code, `${name}: ${code}`);
    if (status === 401) t.match(r.headers['www-authenticate'], /Bearer/, `${name}: challenge`);
  }
  t.equal(f.publishCalls.length, 0, 'publishRelease never called');
  t.same(await f.files(), [], 'nothing stored');
  t.same(
    f.authFailures.map((a) => [a.username, a.reason]),
    [
      [null, 'no credentials'],
      ['alice', 'unknown user or wrong token'],
      ['mallory', 'unknown user or wrong token'],
      [null, 'Bearer token without X-Ota-User'],
      ['alice', 'unknown user or wrong token'],
      [null, 'malformed Basic credentials'],
      [null, 'unsupported Authorization scheme'],
    ],
    'every 401 is reported for the metric and the audit log (a 403 is not an authentication failure)',
  );
  t.equal(f.checkCalls.length, 0, 'nothing about the release is checked for a refused caller');

  const broken = await setup(t, { authFailureThrows: true });
  const r = await upload(broken, bytes, envelope, { authorization: 'Bearer nope', 'x-ota-user': 'alice' });
  t.equal(r.status, 401, 'a failing audit hook still answers 401, not 500');
  t.equal(broken.authFailures.length, 1);
});

t.test('upload: missing or garbled envelope is 400', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(1000);
  const good = sign(bytes);
  const cases: [string, string | null, string][] = [
    ['missing', null, 'E_USAGE'],
    ['not base64', '{not base64!}', 'E_USAGE'],
    ['base64 of garbage', Buffer.from('not json').toString('base64'), 'E_USAGE'],
    ['base64 of invalid UTF-8', Buffer.from([0xff, 0xfe, 0x7b]).toString('base64'), 'E_USAGE'],
    ['JSON that is not an envelope', b64({ hello: 'world' }), 'E_MANIFEST'],
    ['no signatures', b64({ manifest: good.manifest, signatures: [] }), 'E_MANIFEST'],
    ['manifest text not JSON', b64({ manifest: 'nope', signatures: good.signatures }), 'E_MANIFEST'],
    ['manifest with a bad field', b64({ manifest: '{"type":"x"}', signatures: good.signatures }), 'E_MANIFEST'],
  ];
  for (const [name, header, code] of cases) {
    const r = await upload(f, bytes, header);
    t.equal(r.status, 400, `${name}: 400`);
    t.equal(r.json().error?.code, code, `${name}: ${code}`);
  }
  const huge = await upload(f, bytes, 'A'.repeat(100_000));
  t.equal(huge.status, 413, 'an envelope header above 64 KiB is refused');
  const badChannel = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(good), 'x-ota-channel': '../stable' },
    body: bytes,
  });
  t.equal(badChannel.status, 400);
  t.equal(badChannel.json().error?.code, 'E_NAME');
  const wrongType = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(good), 'content-type': 'text/plain' },
    body: bytes,
  });
  t.equal(wrongType.status, 415, 'only application/octet-stream bodies');
  t.equal(wrongType.json().ok, false);
  const noType = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(good), 'content-type': '' },
    body: bytes,
  });
  t.equal(noType.status, 415, 'no content type: 415');
  t.equal(f.publishCalls.length, 0);
  t.same(await f.files(), [], 'nothing stored');
});

t.test('upload: signature and digest failures are 422 and store nothing', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(20_000);
  const untrusted = sign(bytes, {}, strangerKey);
  const r1 = await upload(f, bytes, untrusted);
  t.equal(r1.status, 422);
  t.equal(r1.json().error?.code, 'E_UNKNOWN_KEY');

  const good = sign(bytes);
  const sig = Buffer.from(good.signatures[0]?.sig ?? '', 'base64');
  sig[5] = (sig[5] ?? 0) ^ 1;
  const tampered = { ...good, signatures: [{ keyId: publisherKey.keyId, sig: sig.toString('base64') }] };
  const r2 = await upload(f, bytes, tampered);
  t.equal(r2.status, 422);
  t.equal(r2.json().error?.code, 'E_SIGNATURE');

  const other = Buffer.from(bytes);
  other[100] = (other[100] ?? 0) ^ 1;
  const r3 = await upload(f, other, good);
  t.equal(r3.status, 422, 'same size, other bytes');
  t.equal(r3.json().error?.code, 'E_DIGEST');

  t.equal(f.checkCalls.length, 3, 'each was checked before its body');
  t.equal(f.publishCalls.length, 1, 'only the one whose signature verifies reached publishRelease');
  t.equal(f.releases.size, 0, 'no release');
  t.same(await f.noTmpFiles(), [], 'no artifact, no temporary');
});

t.test('upload: bodies of the wrong size', async (t) => {
  const f = await setup(t, { maxUploadBytes: 1_000_000 });
  const bytes = randomBytes(50_000);
  const envelope = sign(bytes);
  const longer = Buffer.concat([bytes, randomBytes(1000)]);

  const declaredLonger = await upload(f, longer, envelope);
  t.equal(declaredLonger.status, 413, 'Content-Length above the manifest size: refused before reading');
  t.equal(declaredLonger.json().error?.code, 'E_SIZE');
  const declaredShorter = await upload(f, bytes.subarray(0, 40_000), envelope);
  t.equal(declaredShorter.status, 400, 'Content-Length below the manifest size');
  t.equal(declaredShorter.json().error?.code, 'E_SIZE');
  t.equal(f.publishCalls.length, 0, 'both refused before publishRelease');

  const chunkedLonger = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: uploadHeaders(envelope),
    body: [longer.subarray(0, 30_000), longer.subarray(30_000)],
  });
  t.equal(chunkedLonger.status, 413, 'a chunked body longer than the manifest is cut');
  t.equal(chunkedLonger.json().error?.code, 'E_SIZE');

  const chunkedShorter = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: uploadHeaders(envelope),
    body: [bytes.subarray(0, 20_000), bytes.subarray(20_000, 49_999)],
  });
  t.equal(chunkedShorter.status, 400, 'a chunked body shorter than the manifest');
  t.equal(chunkedShorter.json().error?.code, 'E_SIZE');

  // An endless body is cut at manifest size + 1: the client gets the answer or a reset.
  const endless = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: uploadHeaders(envelope),
    endless: true,
  }).then(
    (r) => r.status,
    (err: NodeJS.ErrnoException) => err.code ?? 'error',
  );
  t.ok(endless === 413 || endless === 'ECONNRESET' || endless === 'EPIPE', `endless body cut (${endless})`);

  const tooBig = sign(Buffer.alloc(0), { size: 2_000_000, version: '9.0.0' });
  const r = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(tooBig), 'content-length': 2_000_000 },
    stallAfter: Buffer.alloc(10),
  });
  t.equal(r.status, 413, 'a manifest above the upload limit is refused before reading the body');

  t.equal(f.publishCalls.length, 0);
  t.equal(f.releases.size, 0);
  t.same(await f.noTmpFiles(), [], 'nothing stored');

  // The server is still fine.
  const ok = await upload(f, bytes, envelope);
  t.equal(ok.status, 201);
});

t.test('upload: a stalled upload is abandoned and leaves nothing', async (t) => {
  const f = await setup(t, { uploadIdleTimeoutMs: 200 });
  const bytes = randomBytes(10_000);
  const outcome = await request(f.port, {
    method: 'POST',
    path: '/releases',
    headers: { ...uploadHeaders(sign(bytes)), 'content-length': bytes.length },
    stallAfter: bytes.subarray(0, 3000),
  }).then(
    (r) => r.status,
    (err: NodeJS.ErrnoException) => err.code ?? 'error',
  );
  t.ok(outcome === 408 || outcome === 'ECONNRESET' || outcome === 'error', `cut (${outcome})`);
  t.same(await f.noTmpFiles(), [], 'no temporary left');
  t.equal(f.publishCalls.length, 0);
});

t.test('upload: duplicate publish is 409 and keeps the artifact', async (t) => {
  const f = await setup(t);
  const bytes = randomBytes(30_000);
  const envelope = sign(bytes);
  t.equal((await upload(f, bytes, envelope)).status, 201);
  const again = await upload(f, bytes, envelope);
  t.equal(again.status, 409);
  t.same(again.json(), {
    ok: false,
    error: { code: 'E_CONFLICT', message: 'release detector@1.0.0 already exists' },
  });
  t.same(await f.noTmpFiles(), [sha256(bytes)], 'the published artifact stays, the duplicate upload is gone');
  const back = await request(f.port, { path: `/artifacts/sha256/${sha256(bytes)}` });
  t.ok(back.body.equals(bytes));
});

t.test('upload: concurrent uploads of the same artifact end consistent', async (t) => {
  const f = await setup(t, { publishDelayMs: 50 });
  const bytes = randomBytes(400_000);
  const hex = sha256(bytes);
  const envelope = sign(bytes);
  const same = await Promise.all([upload(f, bytes, envelope), upload(f, bytes, envelope)]);
  t.same(same.map((r) => r.status).sort(), [201, 409], 'one release, one conflict');
  t.equal(f.releases.size, 1);

  // Two releases with identical bytes, at once: both published, one file.
  const [a, b] = await Promise.all([
    upload(f, bytes, sign(bytes, { version: '2.0.0' })),
    upload(f, bytes, sign(bytes, { version: '3.0.0' })),
  ]);
  t.equal(a?.status, 201);
  t.equal(b?.status, 201);
  t.same(await f.noTmpFiles(), [hex], 'one artifact file, no temporaries');
  const back = await request(f.port, { path: `/artifacts/sha256/${hex}` });
  t.equal(sha256(back.body), hex);
});

t.test('errors never leak internals; the log has the details', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const f = await setup(t, { logger: pino({ level: 'info' }, sink) });
  const bytes = randomBytes(100);
  const r = await upload(f, bytes, sign(bytes, { model: 'boom' }));
  t.equal(r.status, 500);
  t.equal(r.json().error?.code, 'E_INTERNAL');
  t.notMatch(r.body.toString(), /secret|\/var\/lib|at .*\.ts/, 'no message or stack of the bug');
  t.same(await f.noTmpFiles(), []);

  t.ok(
    lines.some((l) => l.includes('secret detail') && l.includes('"level":50')),
    'the bug is logged at error level',
  );
  t.notOk(
    lines.some((l) => l.includes('op-token')),
    'tokens are not logged',
  );

  const notFound = await request(f.port, { path: '/nope' });
  t.equal(notFound.status, 404);
  t.equal(notFound.json().error?.code, 'E_NOT_FOUND');
  const wrongMethod = await request(f.port, { method: 'DELETE', path: `/artifacts/sha256/${'a'.repeat(64)}` });
  t.equal(wrongMethod.status, 404);
  t.equal(wrongMethod.json().ok, false);
});

t.test('healthz: 200 {ok: true} when ready, 503 {ok: false, reason} otherwise; HEAD alike', async (t) => {
  const f = await setup(t);
  const ok = await request(f.port, { path: '/healthz' });
  t.equal(ok.status, 200);
  t.same(ok.json(), { ok: true }, 'exactly what docs/coordinator.md says');
  t.match(ok.headers['content-type'], /^application\/json/);
  const head = await request(f.port, { method: 'HEAD', path: '/healthz' });
  t.equal(head.status, 200, 'HEAD /healthz answers like GET');
  t.match(head.headers['content-type'], /^application\/json/);
  t.equal(head.body.length, 0, 'without a body');
  f.health.report = { ok: false, reason: 'starting' };
  const down = await request(f.port, { path: '/healthz' });
  t.equal(down.status, 503);
  t.same(down.json(), { ok: false, reason: 'starting' });
  t.equal((await request(f.port, { method: 'HEAD', path: '/healthz' })).status, 503);
  f.health.report = () => {
    throw new Error('database is locked');
  };
  const broken = await request(f.port, { path: '/healthz' });
  t.equal(broken.status, 503);
  t.same(broken.json(), { ok: false, reason: 'health check failed' });
  t.notMatch(broken.body.toString(), /locked/);
});

t.test('metrics: Prometheus text with every coordinator metric (ota_*), no device ids', async (t) => {
  const f = await setup(t);
  f.metrics.connectedDevices.set(2);
  f.metrics.reports.inc(5);
  f.metrics.resetRollouts([
    { id: 'r-1', status: 'running' },
    { id: 'r-2', status: 'halted' },
    { id: 'r-3', status: 'halted' },
  ]);
  f.metrics.observeRollout('r-1', 'halted');
  f.metrics.auditRows.set(42);
  f.metrics.authFailures.inc({ transport: 'mqtt' });
  f.metrics.authFailures.inc({ transport: 'http' }, 2);
  // Traffic that involves a device id.
  await upload(f, Buffer.alloc(1), sign(Buffer.alloc(1)), { authorization: 'Bearer x', 'x-ota-user': DEVICE_ID });
  const r = await request(f.port, { path: '/metrics' });
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const text = r.body.toString();
  for (const line of [
    'ota_connected_devices 2',
    'ota_reports_total 5',
    'ota_rollouts{status="running"} 0',
    'ota_rollouts{status="halted"} 3',
    'ota_rollouts{status="completed"} 0',
    'ota_rollout_halts_total 1',
    'ota_audit_rows 42',
    'ota_auth_failures_total{transport="mqtt"} 1',
    'ota_auth_failures_total{transport="http"} 2',
    'ota_upload_bytes_written_total 0',
    'ota_artifact_bytes_served_total 0',
    'process_cpu_user_seconds_total',
    'nodejs_heap_size_used_bytes',
    'nodejs_active_handles{',
  ]) {
    t.ok(text.includes(line), line);
  }
  t.notOk(text.includes(DEVICE_ID), 'no device id anywhere');
  t.notMatch(text, /^# TYPE \S+_total gauge/m, 'no gauge named *_total (promtool refuses them)');
  const ours = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1] as string);
  t.same(
    ours.filter((name) => !/^(ota|process|nodejs)_/.test(name)),
    [],
    'every metric is ota_*, or a standard process_/nodejs_ one',
  );

  // HEAD: the same status and Prometheus content type as GET, no body.
  const head = await request(f.port, { method: 'HEAD', path: '/metrics' });
  t.equal(head.status, 200);
  t.equal(head.headers['content-type'], r.headers['content-type'], 'HEAD carries the text/plain content type');
  t.equal(head.body.length, 0);

  // Each call builds its own registry: two coordinators in one process do not collide.
  const other = createMetrics();
  other.reports.inc();
  t.match(await other.registry.metrics(), /ota_reports_total 1/);
  t.match(await f.metrics.registry.metrics(), /ota_reports_total 5/);
});

t.test('RolloutStatusBook: counts per status, and a halt only when a rollout enters halted', async (t) => {
  const book = new RolloutStatusBook();
  book.reset([
    { id: 'a', status: 'running' },
    { id: 'constructor', status: 'halted' },
  ]);
  t.equal(book.count('running'), 1);
  t.equal(book.count('halted'), 1, 'an id like "constructor" is just an id');
  // [status observed, is it a halt]: summaries repeat a status whenever a device moves.
  const steps: [string, RolloutStatus, boolean][] = [
    ['a', 'running', false],
    ['a', 'halted', true],
    ['a', 'halted', false],
    ['a', 'halted', false],
    ['a', 'running', false],
    ['a', 'halted', true],
    ['constructor', 'halted', false],
    ['constructor', 'aborted', false],
    ['b', 'halted', true],
    ['a', 'completed', false],
  ];
  for (const [id, status, halt] of steps) t.equal(book.observe(id, status), halt, `${id} -> ${status}`);
  t.same(
    ROLLOUT_STATUSES.map((s) => [s, book.count(s)]),
    [
      ['running', 0],
      ['waiting_approval', 0],
      ['halted', 1],
      ['completed', 1],
      ['aborted', 1],
    ],
  );
  book.reset([]);
  t.equal(book.count('halted'), 0, 'reset starts over');
});
