import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyHttpsOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { type Envelope, MAX_MANIFEST_TEXT, parseEnvelope } from '../../shared/envelope.js';
import { ERROR_CODES, type ErrorCode, isOtaError, OtaError } from '../../shared/errors.js';
import { type Manifest, parseManifest } from '../../shared/manifest.js';
import { isSafeId } from '../../shared/names.js';
import type { Principal } from '../broker/principal.js';
import { OPS, roleAllows } from '../commands/ops.js';
import { type ArtifactStore, isSha256 } from './artifact-store.js';
import type { DashboardAssets } from './dashboard-assets.js';
import type { CoordinatorMetrics } from './metrics.js';

/**
 * The coordinator's HTTP side (design section 6): content-addressed artifact downloads with Range
 * support, release upload for `otactl release publish`, `/healthz` and `/metrics`. The MQTT
 * WebSocket endpoint is attached elsewhere to `server` ('upgrade' events never reach fastify).
 *
 * An upload is decided before its body is read: credentials, role, the envelope in its header
 * (signatures, threshold, not yet published, channel move) and the declared size. Only then is
 * the body read, never past the signed size; a client that sent `Expect: 100-continue` gets the
 * `100 Continue` only at that point (RFC 9110 section 10.1.1), so a refused upload sends nothing.
 *
 * Every error is `{ ok: false, error: { code, message } }` with a status from `httpStatusFor`;
 * stack traces never leave the process, and 5xx replies carry only the code's generic meaning
 * (the details, which may name server paths, go to the log).
 */

export const DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024 ** 3;
/** The decoded envelope JSON: the manifest text cap plus room for up to 16 signatures. */
export const MAX_ENVELOPE_BYTES = MAX_MANIFEST_TEXT;
const MAX_ENVELOPE_HEADER = Math.ceil(MAX_ENVELOPE_BYTES / 3) * 4;
/**
 * Node's default of 16 KiB for all request headers would refuse a large envelope header; this
 * leaves room for a full-size one plus ordinary headers. It bounds memory per connection.
 */
const MAX_HEADER_BYTES = 128 * 1024;
/** JSON bodies: no route takes one today; small on purpose. Uploads are streamed, not parsed. */
const JSON_BODY_LIMIT = 64 * 1024;
/**
 * After refusing an upload part-way, up to this much of the rest of the body is read and dropped
 * so the client can read the answer (closing a socket with unread data makes the kernel reset it,
 * and the client may lose the reply); beyond it, or after DRAIN_MS, the connection is cut.
 */
const DRAIN_BYTES = 1024 * 1024;
const DRAIN_MS = 5000;
const DEFAULT_UPLOAD_IDLE_MS = 60_000;
const IMMUTABLE = 'public, max-age=31536000, immutable';

/** What an upload claims before its body: checked by `checkRelease` before a byte is read. */
export interface ReleaseClaim {
  envelope: Envelope;
  /** Name of the authenticated operator. */
  actor: string;
  channel: string | null;
  /** `X-Ota-Yes: true`. */
  yes: boolean;
}

export interface PublishInput {
  envelope: Envelope;
  /** The uploaded bytes, complete and fsynced, not yet at their content address. */
  tmpFile: string;
  /** sha256 and size of the uploaded bytes, computed while receiving them. */
  sha256: string;
  size: number;
  /** Name of the authenticated operator. */
  actor: string;
  channel: string | null;
  /** `X-Ota-Yes: true`: confirms a channel move above the limit (fleet-service confirmChannelMove). */
  yes: boolean;
}

/**
 * What `/healthz` answers: 200 `{ ok: true }` when the coordinator serves everything a client
 * needs, else 503 `{ ok: false, reason }`. Counts (devices, rollouts) are in `/metrics`, not here:
 * a health check is polled often and must stay cheap.
 */
export type HealthReport = { ok: true } | { ok: false; reason: string };

export interface HttpServerOptions {
  artifacts: ArtifactStore;
  metrics: CoordinatorMetrics;
  /** pino (or any fastify-compatible) logger; nothing is logged without one. */
  logger?: FastifyBaseLogger;
  authenticate: (username: string, token: string) => Principal | null;
  /**
   * Verifies the envelope's signatures against the trusted keys and the uploaded size and sha256
   * against the manifest, then creates the release (and moves the channel when asked). Throws an
   * OtaError; on success the artifact is committed, on failure discarded.
   */
  publishRelease: (input: PublishInput) => Promise<unknown>;
  /**
   * Everything publishRelease checks that does not need the bytes (signatures against the trusted
   * keys, threshold, release not yet published, channel move confirmed); throws an OtaError.
   * Called before the body is read, so a refused upload writes nothing.
   */
  checkRelease: (claim: ReleaseClaim) => unknown;
  health: () => HealthReport;
  /**
   * Called for each refused credential (401): the `http` authentication-failure metric and the
   * audit log, which rate limits. Required: a server that does not report them is a blind spot.
   */
  onAuthFailure: (info: { username: string | null; ip: string; reason: string }) => void;
  maxUploadBytes?: number;
  /** An upload with no data for this long is abandoned (default 60 s). */
  uploadIdleTimeoutMs?: number;
  tls?: { cert: Buffer; key: Buffer };
  /**
   * The dashboard's files (dashboard-assets.ts), served at `/` and `/ui/*`; `null` when the app is
   * not built, and `/` then says how to build it.
   */
  dashboard?: DashboardAssets | null;
}

export interface CoordinatorHttpServer {
  app: FastifyInstance;
  /** The Node server (an https.Server with `tls`): attach the MQTT-over-WebSocket upgrade handler to it. */
  server: http.Server;
  listen(port: number, host: string): Promise<{ port: number }>;
  close(): Promise<void>;
}

/** An OtaError whose HTTP status differs from its code's usual one. */
class StatusError extends OtaError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  E_USAGE: 400,
  E_MANIFEST: 400,
  E_NAME: 400,
  E_PAYLOAD_JSON: 400,
  E_PAYLOAD_SCHEMA: 400,
  E_TOPIC: 400,
  E_STRATEGY: 400,
  E_PROBE_SPEC: 400,
  E_KEY_FILE: 400,
  E_COMMAND: 400,
  E_AUTH: 401,
  E_FORBIDDEN: 403,
  E_NOT_ALLOWED: 403,
  E_NOT_FOUND: 404,
  E_TIMEOUT: 408,
  E_CONFLICT: 409,
  E_EXISTS: 409,
  E_ROLLOUT_STATE: 409,
  E_ROLLOUT_HALTED: 409,
  E_SIZE: 413,
  E_PAYLOAD_TOO_LARGE: 413,
  // The request is well formed but what it carries does not verify.
  E_SIGNATURE: 422,
  E_SIGNATURE_MALLEATED: 422,
  E_UNKNOWN_KEY: 422,
  E_THRESHOLD: 422,
  E_DIGEST: 422,
  E_EXPIRED: 422,
  E_FLOOR: 422,
  E_MODEL_MISMATCH: 422,
  E_MODEL_INVALID: 422,
  E_EXTERNAL_DATA: 422,
  E_REQUIREMENTS: 422,
};

/** The HTTP status for an error code; codes not listed (E_IO, E_CONFIG, E_INTERNAL, ...) are 500. */
export function httpStatusFor(code: ErrorCode): number {
  return STATUS_BY_CODE[code] ?? 500;
}

export type ByteRange = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * Interprets a Range header for a representation of `size` bytes (RFC 9110 section 14). Only a
 * single byte range is honoured: `N-`, `N-M` (M clamped to the end) and suffix `-N`. Anything
 * else (another unit, several ranges, a malformed or inverted range) is ignored, as the RFC allows,
 * and the whole file is sent.
 */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'full' };
  const [, first = '', last = ''] = m;
  if (first === '' && last === '') return { kind: 'full' };
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  return { kind: 'partial', start, end };
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header
    .split(',')
    .map((v) => v.trim())
    .some((v) => v === '*' || v === etag || v === `W/${etag}`);
}

function singleHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

type Credentials =
  | { ok: true; username: string; token: string }
  /** `reason` is short and fixed (the audit log groups by it); `message` tells the client the fix. */
  | { ok: false; username: string | null; reason: string; message: string };

/** Reads `Authorization` (Bearer + X-Ota-User, or Basic name:token). */
function readCredentials(request: FastifyRequest): Credentials {
  const auth = singleHeader(request.headers.authorization);
  if (!auth) {
    return {
      ok: false,
      username: null,
      reason: 'no credentials',
      message:
        'authentication required: send "Authorization: Bearer <token>" with "X-Ota-User: <name>", or HTTP Basic name:token',
    };
  }
  const m = /^([A-Za-z]+) +(\S+)\s*$/.exec(auth);
  const scheme = m?.[1]?.toLowerCase();
  const value = m?.[2] ?? '';
  if (scheme === 'bearer') {
    const username = singleHeader(request.headers['x-ota-user'])?.trim();
    if (!username) {
      return {
        ok: false,
        username: null,
        reason: 'Bearer token without X-Ota-User',
        message: 'a Bearer token needs the operator name in the X-Ota-User header',
      };
    }
    return { ok: true, username, token: value };
  }
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) {
      return {
        ok: false,
        username: null,
        reason: 'malformed Basic credentials',
        message: 'malformed Basic credentials: expected base64 of name:token',
      };
    }
    return { ok: true, username: decoded.slice(0, colon), token: decoded.slice(colon + 1) };
  }
  return {
    ok: false,
    username: null,
    reason: 'unsupported Authorization scheme',
    message: 'unsupported Authorization scheme: use Bearer (with X-Ota-User) or Basic',
  };
}

/** `Expect: 100-continue` on HTTP/1.1 (Node's own test, RFC 9110 section 10.1.1). */
function expectsContinue(raw: http.IncomingMessage): boolean {
  const expect = singleHeader(raw.headers.expect);
  return (
    raw.httpVersionMajor === 1 &&
    raw.httpVersionMinor === 1 &&
    expect !== undefined &&
    /(?:^|\W)100-continue(?:$|\W)/i.test(expect)
  );
}

/** Decodes the X-Ota-Envelope header: base64 of the envelope JSON. */
function readEnvelopeHeader(value: string | undefined): Envelope {
  if (value === undefined || value.trim() === '') {
    throw new OtaError('E_USAGE', 'missing X-Ota-Envelope header (base64 of the signed release envelope JSON)');
  }
  const text = value.trim();
  if (text.length > MAX_ENVELOPE_HEADER) {
    throw new StatusError(413, 'E_PAYLOAD_TOO_LARGE', `X-Ota-Envelope is larger than ${MAX_ENVELOPE_BYTES} bytes`);
  }
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    throw new OtaError('E_USAGE', 'X-Ota-Envelope is not base64');
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(text, 'base64')));
  } catch {
    throw new OtaError('E_USAGE', 'X-Ota-Envelope does not decode to UTF-8 JSON');
  }
  return parseEnvelope(json);
}

/**
 * The manifest as the envelope claims it, before any signature check: only used to refuse an
 * upload early (size) without reading the body. publishRelease verifies everything.
 */
function claimedManifest(envelope: Envelope): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(envelope.manifest);
  } catch {
    throw new OtaError('E_MANIFEST', 'release manifest text is not JSON');
  }
  return parseManifest(json);
}

function readChannel(value: string | undefined): string | null {
  if (value === undefined) return null;
  if (!isSafeId(value)) {
    throw new OtaError(
      'E_NAME',
      `invalid channel ${JSON.stringify(value.slice(0, 80))}: use 1-64 letters, digits, ".", "_" or "-"`,
    );
  }
  return value;
}

/** Reads and drops the rest of a refused upload, within limits, so the reply can reach the client. */
function drainOrCut(raw: http.IncomingMessage): void {
  if (raw.readableEnded || raw.destroyed) return;
  let seen = 0;
  const timer = setTimeout(() => raw.destroy(), DRAIN_MS);
  timer.unref();
  raw.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > DRAIN_BYTES) raw.destroy();
  });
  raw.once('close', () => clearTimeout(timer));
  raw.on('error', () => {});
  raw.resume();
}

function errorReply(code: ErrorCode, message: string) {
  return { ok: false as const, error: { code, message } };
}

export function createHttpServer(options: HttpServerOptions): CoordinatorHttpServer {
  const { artifacts, metrics, authenticate, publishRelease, checkRelease, health, onAuthFailure } = options;
  const maxUploadBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const uploadIdleTimeoutMs = options.uploadIdleTimeoutMs ?? DEFAULT_UPLOAD_IDLE_MS;

  const common = {
    // Request/response lines at info level would log every artifact download of the fleet;
    // errors are logged by the error handler below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: JSON_BODY_LIMIT,
    // No deadline for receiving a whole request: a multi-GiB upload on a slow link takes long.
    // Stalled uploads are cut by the idle timeout instead.
    requestTimeout: 0,
    // Shutdown does not wait for long downloads: agents resume them with Range.
    forceCloseConnections: true as const,
    exposeHeadRoutes: false,
  };
  const withLogger = options.logger ? { ...common, loggerInstance: options.logger } : { ...common, logger: false };
  // fastify passes `http` to http.createServer and `https` to https.createServer.
  let app: FastifyInstance;
  if (options.tls) {
    const httpsOptions: FastifyHttpsOptions<https.Server> = {
      ...withLogger,
      https: { cert: options.tls.cert, key: options.tls.key, maxHeaderSize: MAX_HEADER_BYTES },
    };
    app = Fastify(httpsOptions) as unknown as FastifyInstance;
  } else {
    app = Fastify({ ...withLogger, http: { maxHeaderSize: MAX_HEADER_BYTES } }) as FastifyInstance;
  }

  // With a 'checkContinue' listener Node no longer answers `Expect: 100-continue` by itself: the
  // request goes to fastify as any other, and the upload route sends `100 Continue` once it has
  // accepted everything but the bytes. Another route never sends it (the client then sends no body).
  app.server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    app.server.emit('request', req, res);
  });

  app.setErrorHandler((err: FastifyError | OtaError | Error, request: FastifyRequest, reply: FastifyReply) => {
    let status: number;
    let code: ErrorCode;
    let message: string;
    if (isOtaError(err)) {
      code = err.code;
      status = err instanceof StatusError ? err.status : httpStatusFor(code);
      message = err.message;
    } else {
      const fastifyStatus = (err as FastifyError).statusCode;
      if (typeof fastifyStatus === 'number' && fastifyStatus >= 400 && fastifyStatus < 500) {
        status = fastifyStatus;
        code = status === 413 ? 'E_PAYLOAD_TOO_LARGE' : status === 404 ? 'E_NOT_FOUND' : 'E_USAGE';
        message = err.message;
      } else {
        status = 500;
        code = 'E_INTERNAL';
        message = err.message;
      }
    }
    if (status >= 500) {
      request.log.error({ err, code }, 'request failed');
      message = `${ERROR_CODES[code].meaning} See the coordinator log.`;
    } else {
      request.log.info({ code, status, message, url: request.url }, 'request refused');
    }
    // An upload refused part-way: let the client finish sending (within limits) and read this.
    drainOrCut(request.raw);
    for (const h of ['etag', 'accept-ranges', 'content-range', 'content-length', 'content-disposition']) {
      reply.removeHeader(h);
    }
    reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8');
    if (code === 'E_AUTH') reply.header('www-authenticate', 'Bearer realm="ota", Basic realm="ota"');
    return reply.send(errorReply(code, message));
  });

  app.setNotFoundHandler((request, reply) => {
    drainOrCut(request.raw);
    reply
      .code(404)
      .header('cache-control', 'no-store')
      .send(errorReply('E_NOT_FOUND', `no such endpoint: ${request.method} ${request.url.split('?')[0]}`));
  });

  // Artifacts. No authentication, deliberately: the bytes are public in the sense that matters —
  // a device trusts them only when their sha256 and size match a manifest signed offline by a
  // trusted release key (design section 4), so serving them to anyone cannot make a device
  // accept anything. The content address also makes every response immutable.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/artifacts/sha256/:hex',
    handler: async (request, reply) => {
      const { hex } = request.params as { hex: string };
      if (!isSha256(hex)) throw new OtaError('E_USAGE', 'artifact names are 64 lowercase hex characters (sha256)');
      const opened = await artifacts.open(hex);
      if (!opened) throw new OtaError('E_NOT_FOUND', `no artifact with sha256 ${hex}`);
      const { handle, size } = opened;
      let streaming = false;
      try {
        const etag = `"${hex}"`;
        reply
          .header('accept-ranges', 'bytes')
          .header('etag', etag)
          .header('cache-control', IMMUTABLE)
          .header('x-content-type-options', 'nosniff')
          .type('application/octet-stream');
        if (etagMatches(singleHeader(request.headers['if-none-match']), etag)) {
          return reply.code(304).send();
        }
        // If-Range: honour Range only for our own (strong) validator; otherwise send it all.
        const ifRange = singleHeader(request.headers['if-range']);
        const rangeHeader = ifRange === undefined || ifRange.trim() === etag ? request.headers.range : undefined;
        const range = parseRange(rangeHeader, size);
        if (range.kind === 'unsatisfiable') {
          return reply.code(416).header('content-range', `bytes */${size}`).header('content-length', '0').send();
        }
        const start = range.kind === 'partial' ? range.start : 0;
        const end = range.kind === 'partial' ? range.end : size - 1;
        if (range.kind === 'partial') reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`);
        reply.header('content-length', String(end - start + 1));
        if (request.method === 'HEAD' || end < start) return reply.send();
        const stream = handle.createReadStream({ start, end, highWaterMark: 1024 * 1024 });
        streaming = true;
        // Counted when the stream closes (finished or cut by a client that went away).
        stream.once('close', () => metrics.artifactBytesServed.inc(stream.bytesRead));
        return reply.send(stream);
      } finally {
        if (!streaming) await handle.close();
      }
    },
  });

  // Release upload (`otactl release publish`). Registered in its own scope so the pass-through
  // octet-stream parser applies here only.
  app.register(async (scope) => {
    // The body is not read by fastify: the handler streams it to disk while hashing it. Any other
    // content type (including fastify's default JSON and text parsers) is refused with 415
    // before a byte of the body is read.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));
    scope.post('/releases', async (request, reply) => {
      const credentials = readCredentials(request);
      const principal = credentials.ok ? authenticate(credentials.username, credentials.token) : null;
      if (!principal) {
        const refused = credentials.ok
          ? {
              username: credentials.username,
              reason: 'unknown user or wrong token',
              message: 'unknown user or wrong token',
            }
          : credentials;
        // Counted and audited like a refused MQTT CONNECT (docs/security.md); a failing hook must
        // not turn the 401 into a 500.
        try {
          onAuthFailure({ username: refused.username, ip: request.ip, reason: refused.reason });
        } catch (err) {
          request.log.error({ err }, 'onAuthFailure threw');
        }
        throw new OtaError('E_AUTH', refused.message);
      }
      if (principal.kind !== 'operator') {
        throw new OtaError('E_FORBIDDEN', 'devices cannot publish releases; use an operator account');
      }
      // The upload is `release.publish` over HTTP: the same role table as the command API.
      if (!roleAllows(principal.role, 'release.publish')) {
        throw new OtaError(
          'E_FORBIDDEN',
          `operator ${principal.name} has role ${principal.role}; publishing a release needs role ${OPS['release.publish']} or above`,
        );
      }
      const envelope = readEnvelopeHeader(singleHeader(request.headers['x-ota-envelope']));
      const manifest = claimedManifest(envelope);
      const channel = readChannel(singleHeader(request.headers['x-ota-channel']));
      const yes = singleHeader(request.headers['x-ota-yes']) === 'true';
      if (manifest.size > maxUploadBytes) {
        throw new OtaError(
          'E_SIZE',
          `the manifest declares ${manifest.size} bytes, above the ${maxUploadBytes} byte limit`,
        );
      }
      const lengthHeader = singleHeader(request.headers['content-length']);
      if (lengthHeader !== undefined) {
        const length = Number(lengthHeader);
        if (length > manifest.size) {
          throw new OtaError('E_SIZE', `the body is ${length} bytes, the manifest says ${manifest.size}`);
        }
        if (length < manifest.size) {
          throw new StatusError(400, 'E_SIZE', `the body is ${length} bytes, the manifest says ${manifest.size}`);
        }
      }
      // Everything that does not need the bytes is decided before reading them: an envelope no
      // trusted key signed, a release already published or an unconfirmed channel move costs no
      // disk and (with Expect: 100-continue) no upload.
      await checkRelease({ envelope, actor: principal.name, channel, yes });
      if (expectsContinue(request.raw)) reply.raw.writeContinue();
      // Without a body and a content type fastify skips parsing; the raw request is then empty.
      const body = request.body instanceof Readable ? request.body : request.raw;
      // Never more than the manifest's size is written: one byte more and the upload is cut.
      const ingested = await artifacts.ingest(body, {
        maxBytes: manifest.size,
        idleTimeoutMs: uploadIdleTimeoutMs,
        onWrite: (n) => metrics.uploadBytesWritten.inc(n),
      });
      let result: unknown;
      try {
        if (ingested.size !== manifest.size) {
          throw new StatusError(
            400,
            'E_SIZE',
            `the body is ${ingested.size} bytes, the manifest says ${manifest.size}`,
          );
        }
        // The credentials are checked again now that the body is in: an upload that took long
        // must not publish for an operator removed or demoted meanwhile (docs/security.md).
        const still = credentials.ok ? authenticate(credentials.username, credentials.token) : null;
        if (!still || still.kind !== 'operator' || !roleAllows(still.role, 'release.publish')) {
          throw new StatusError(
            403,
            'E_AUTH',
            `the credentials of ${principal.name} no longer allow publishing a release (removed or given another role while uploading); nothing was published`,
          );
        }
        result = await publishRelease({
          envelope,
          tmpFile: ingested.tmpFile,
          sha256: ingested.sha256,
          size: ingested.size,
          actor: principal.name,
          channel,
          yes,
        });
      } catch (err) {
        await artifacts.discard(ingested.tmpFile);
        throw err;
      }
      // The release is recorded; the artifact takes its content address (idempotent when an
      // identical artifact is already there). Devices that ask in between get a 404 and retry.
      try {
        await artifacts.commit(ingested.tmpFile, ingested.sha256);
      } catch (err) {
        request.log.error(
          { err, sha256: ingested.sha256 },
          'release recorded but its artifact could not be stored; publish it again',
        );
        throw err;
      }
      request.log.info(
        { actor: principal.name, model: manifest.model, version: manifest.version, sha256: ingested.sha256 },
        'release published',
      );
      return reply.code(201).send({ ok: true, result });
    });
  });

  registerDashboard(app, options.dashboard ?? null);

  // HEAD answers with the same status and headers as GET (RFC 9110 section 9.3.2), no body.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/healthz',
    handler: async (request, reply) => {
      let report: HealthReport;
      try {
        report = health();
      } catch (err) {
        request.log.error({ err }, 'health check failed');
        report = { ok: false, reason: 'health check failed' };
      }
      const body = report.ok ? { ok: true } : { ok: false, reason: report.reason };
      return reply
        .code(report.ok ? 200 : 503)
        .header('cache-control', 'no-store')
        .type('application/json; charset=utf-8')
        .send(JSON.stringify(body));
    },
  });

  app.route({
    method: ['GET', 'HEAD'],
    url: '/metrics',
    handler: async (_request, reply) => {
      const text = await metrics.registry.metrics();
      return reply.header('cache-control', 'no-store').type(metrics.registry.contentType).send(text);
    },
  });

  return {
    app,
    server: app.server,
    async listen(port: number, host: string) {
      await app.listen({ port, host });
      return { port: (app.server.address() as AddressInfo).port };
    },
    async close() {
      await app.close();
    },
  };
}

/**
 * The dashboard (design section 10): a static page and its modules, all public (they hold no
 * data: everything the page shows comes over MQTT with the operator's own credentials). Every
 * response carries the strict CSP and is revalidated by its ETag, so a coordinator upgrade is
 * picked up at the next load.
 */
function registerDashboard(app: FastifyInstance, dashboard: DashboardAssets | null): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const url = request.url.split('?')[0] as string;
    if (dashboard === null) {
      if (url !== '/') throw new OtaError('E_NOT_FOUND', `no such endpoint: ${request.method} ${url}`);
      return reply
        .code(503)
        .header('cache-control', 'no-store')
        .type('text/plain; charset=utf-8')
        .send('The dashboard is not built: run `npm run build` in the package, then restart the coordinator.\n');
    }
    const file = dashboard.files.get(url);
    if (!file) throw new OtaError('E_NOT_FOUND', `no such endpoint: ${request.method} ${url}`);
    reply
      .header('content-security-policy', dashboard.csp)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('cache-control', 'no-cache')
      .header('etag', file.etag)
      .type(file.contentType);
    if (etagMatches(singleHeader(request.headers['if-none-match']), file.etag)) return reply.code(304).send();
    return reply.send(file.body);
  };
  app.route({ method: ['GET', 'HEAD'], url: '/', handler });
  app.route({ method: ['GET', 'HEAD'], url: '/ui/*', handler });
}
