import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { OtaError } from './errors.js';
import { assertSafeName } from './names.js';
import { ProbeSpecSchema } from './probe-spec.js';
import { describeZodError } from './zod-errors.js';

/** The release manifest (design section 4); its canonical JSON text is what release keys sign. */

export const MANIFEST_TYPE = 'ota.model/v1';

const counter = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const isoDate = z.iso.datetime({ offset: true });

export const ModelIoSchema = z.strictObject({
  name: z.string().min(1).max(128),
  type: z.string().max(32),
  /** Numbers for fixed sizes, strings for symbolic dimensions (e.g. "batch"). */
  dims: z.array(z.union([z.number().int(), z.string().max(64)])).max(8),
});
export type ModelIo = z.infer<typeof ModelIoSchema>;

export const RequirementsSchema = z.strictObject({
  /** Node's `process.arch` names: x64, arm64, arm, ... */
  arch: z.array(z.string().min(1).max(32)).min(1).max(16).optional(),
  minMemoryMB: z.number().int().min(0).optional(),
  minFreeDiskMB: z.number().int().min(0).optional(),
  accelerators: z.array(z.string().min(1).max(64)).max(16).optional(),
});
export type Requirements = z.infer<typeof RequirementsSchema>;

export const ManifestSchema = z.strictObject({
  type: z.literal(MANIFEST_TYPE),
  model: z.string().max(128),
  version: z.string().max(128),
  counter,
  floor: counter,
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  framework: z.literal('onnx'),
  inputs: z.array(ModelIoSchema).max(64),
  outputs: z.array(ModelIoSchema).max(64),
  requires: RequirementsSchema,
  probe: ProbeSpecSchema.nullable(),
  createdAt: isoDate,
  expiresAt: isoDate.optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestInput = z.input<typeof ManifestSchema>;

/**
 * Validates a manifest: schema, then the rules a schema cannot say with a useful code. Names are
 * checked with E_NAME because they become directories on the device (path traversal).
 */
export function parseManifest(value: unknown): Manifest {
  const parsed = ManifestSchema.safeParse(value);
  if (!parsed.success) throw new OtaError('E_MANIFEST', `invalid manifest: ${describeZodError(parsed.error)}`);
  const m = parsed.data;
  assertSafeName('model name', m.model);
  assertSafeName('version', m.version);
  if (m.floor > m.counter) {
    throw new OtaError('E_MANIFEST', `invalid manifest: floor ${m.floor} is above its own counter ${m.counter}`);
  }
  if (m.expiresAt !== undefined && Date.parse(m.expiresAt) <= Date.parse(m.createdAt)) {
    throw new OtaError(
      'E_MANIFEST',
      `invalid manifest: expiresAt ${m.expiresAt} is not after createdAt ${m.createdAt}`,
    );
  }
  return m;
}

/** The exact text that is signed. */
export function manifestText(manifest: Manifest): string {
  return canonicalJson(manifest);
}
