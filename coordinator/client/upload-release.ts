import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Envelope } from '../../shared/envelope.js';
import { OtaError } from '../../shared/errors.js';

export interface UploadOptions {
  /** http(s):// base URL of the coordinator. */
  url: string;
  user: string;
  token: string;
  envelope: Envelope;
  file: string;
  channel?: string | null;
  /** Confirms a channel move that re-targets more than 5 devices (sent as `X-Ota-Yes: true`). */
  yes?: boolean;
  ca?: Buffer;
  onProgress?: (sent: number, total: number) => void;
}

/**
 * How long to wait for `100 Continue` before sending the body anyway (RFC 9110 section 10.1.1
 * allows it): only for an intermediary that drops the expectation; the coordinator always answers.
 */
const CONTINUE_WAIT_MS = 10_000;

/**
 * `POST /releases`: the signed envelope in `X-Ota-Envelope` (base64 JSON), the artifact streamed
 * as the body. With `Expect: 100-continue` the coordinator checks everything but the bytes first
 * (credentials, signatures against its trusted keys, release not yet published, channel move):
 * a refusal arrives before a byte of the model is sent. The bytes are then checked against the
 * manifest before the release exists. Resolves the created release.
 */
export async function uploadRelease(options: UploadOptions): Promise<unknown> {
  const size = (
    await fs.stat(options.file).catch((err: Error) => {
      throw new OtaError('E_IO', `cannot read ${options.file}: ${err.message}`);
    })
  ).size;
  const target = new URL('/releases', options.url);
  const transport = target.protocol === 'https:' ? https : http;
  const headers: http.OutgoingHttpHeaders = {
    'content-type': 'application/octet-stream',
    'content-length': size,
    authorization: `Bearer ${options.token}`,
    'x-ota-user': options.user,
    'x-ota-envelope': Buffer.from(JSON.stringify(options.envelope)).toString('base64'),
    expect: '100-continue',
  };
  if (options.channel) headers['x-ota-channel'] = options.channel;
  if (options.yes) headers['x-ota-yes'] = 'true';
  return new Promise((resolve, reject) => {
    let sending = false;
    let fallback: NodeJS.Timeout | undefined;
    const req = transport.request(
      target,
      { method: 'POST', headers, ...(options.ca ? { ca: options.ca } : {}) },
      (res) => {
        clearTimeout(fallback);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: { ok?: boolean; result?: unknown; error?: { code?: string; message?: string } } = {};
          try {
            body = JSON.parse(text);
          } catch {
            // handled below
          }
          // Refused before the body was asked for: the request is unfinished, so drop the connection.
          if (!sending) req.destroy();
          if (res.statusCode && res.statusCode < 300 && body.ok) resolve(body.result);
          else if (body.error?.code)
            reject(new OtaError(body.error.code as never, body.error.message ?? 'upload refused'));
          else
            reject(
              new OtaError(
                'E_CONNECT',
                `upload to ${target.href} failed: HTTP ${res.statusCode} ${text.slice(0, 200)}`,
              ),
            );
        });
      },
    );
    req.on('error', (err) => {
      clearTimeout(fallback);
      reject(
        new OtaError('E_CONNECT', `cannot upload to ${target.href}: ${err.message}; is the coordinator running?`, {
          cause: err,
        }),
      );
    });
    const send = () => {
      clearTimeout(fallback);
      if (sending || req.destroyed) return;
      sending = true;
      let sent = 0;
      const progress = new Transform({
        transform(chunk: Buffer, _enc, done) {
          sent += chunk.length;
          options.onProgress?.(sent, size);
          done(null, chunk);
        },
      });
      pipeline(createReadStream(options.file), progress, req).catch((err: Error) => {
        reject(new OtaError('E_IO', `upload of ${options.file} failed: ${err.message}`));
      });
    };
    // The headers go now; the body only once the coordinator has accepted them.
    req.once('continue', send);
    fallback = setTimeout(send, CONTINUE_WAIT_MS);
    req.flushHeaders();
  });
}
