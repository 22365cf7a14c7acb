import type { z } from 'zod';
import { OtaError } from './errors.js';
import { describeZodError } from './zod-errors.js';

/**
 * Aedes has no packet-size limit of its own (design section 3), so every payload is capped here,
 * before it is parsed.
 */
export const MAX_PAYLOAD_BYTES = 256 * 1024;

/** Decodes a payload at the boundary: size cap, UTF-8 JSON, then the schema. Throws OtaError. */
export function decodePayload<T extends z.ZodType>(
  schema: T,
  payload: Uint8Array | string,
  what: string,
  maxBytes = MAX_PAYLOAD_BYTES,
): z.infer<T> {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (size > maxBytes) {
    throw new OtaError('E_PAYLOAD_TOO_LARGE', `${what}: payload is ${size} bytes, the limit is ${maxBytes}`);
  }
  let value: unknown;
  try {
    const text = typeof payload === 'string' ? payload : new TextDecoder('utf-8', { fatal: true }).decode(payload);
    value = JSON.parse(text);
  } catch {
    throw new OtaError('E_PAYLOAD_JSON', `${what}: payload is not valid UTF-8 JSON`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new OtaError('E_PAYLOAD_SCHEMA', `${what}: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

export function encodePayload(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}
