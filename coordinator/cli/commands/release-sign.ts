import type { Command } from 'commander';
import { signManifest } from '../../../shared/envelope.js';
import { OtaError } from '../../../shared/errors.js';
import { digestFile } from '../../../shared/file-digest.js';
import { readFileOrThrow, writeFileAtomic } from '../../../shared/fs-atomic.js';
import { readPrivateKeyFile } from '../../../shared/keys.js';
import { MANIFEST_TYPE, type Manifest, type ModelIo, parseManifest } from '../../../shared/manifest.js';
import { assertSafeName } from '../../../shared/names.js';
import { type ProbeSpec, ProbeSpecSchema, probeModelMismatches } from '../../../shared/probe-spec.js';
import { signerFor } from '../../../shared/signatures.js';
import { describeZodError } from '../../../shared/zod-errors.js';
import { inspectModel } from '../inspect-model.js';
import { type CliIo, keyValueLines } from '../io.js';
import { collect, duration, expiryOf, isoDate, nonNegativeInt } from '../options.js';

export interface SignOptions {
  model: string;
  version: string;
  file: string;
  key: string[];
  probe?: string;
  counter?: number;
  floor?: number;
  expiresAt?: string;
  expiresIn?: number;
  arch?: string[];
  minMemoryMb?: number;
  inspect: boolean;
}

export async function readProbeFile(file: string): Promise<ProbeSpec> {
  let value: unknown;
  try {
    value = JSON.parse((await readFileOrThrow(file)).toString('utf8'));
  } catch (err) {
    if (err instanceof OtaError) throw err;
    throw new OtaError('E_PROBE_SPEC', `${file} is not JSON; see docs/probe-spec.md`);
  }
  const parsed = ProbeSpecSchema.safeParse(value);
  if (!parsed.success) {
    throw new OtaError('E_PROBE_SPEC', `${file}: ${describeZodError(parsed.error)} (see docs/probe-spec.md)`);
  }
  return parsed.data;
}

/**
 * Builds the manifest for a model file and signs it with every --key. The file is hashed with
 * sha256 as a stream (never loaded whole); only the manifest text is signed (design section 4).
 */
export async function buildSignedRelease(opts: SignOptions, now: Date) {
  assertSafeName('model name', opts.model);
  assertSafeName('version', opts.version);
  const keys = await Promise.all(opts.key.map(readPrivateKeyFile));
  const probe = opts.probe ? await readProbeFile(opts.probe) : null;
  const { size, sha256 } = await digestFile(opts.file);
  let io: { inputs: ModelIo[]; outputs: ModelIo[] } = { inputs: [], outputs: [] };
  if (opts.inspect) {
    io = await inspectModel(opts.file);
    const problems = probe ? probeModelMismatches(probe, io.inputs, io.outputs) : [];
    if (problems.length > 0) {
      throw new OtaError('E_PROBE_SPEC', `${opts.probe}: ${problems.join('; ')}`);
    }
  }
  // Without --counter the release counter is the signing time in seconds: it increases by itself
  // from one release to the next, which is all the rollback floor needs.
  const counter = opts.counter ?? Math.floor(now.getTime() / 1000);
  const floor = opts.floor ?? 0;
  if (floor > counter) {
    throw new OtaError(
      'E_USAGE',
      `--floor ${floor} is above the release counter ${counter}; a release must satisfy its own floor`,
    );
  }
  const expiresAt = expiryOf(opts, now);
  const manifest: Manifest = parseManifest({
    type: MANIFEST_TYPE,
    model: opts.model,
    version: opts.version,
    counter,
    floor,
    sha256,
    size,
    framework: 'onnx',
    inputs: io.inputs,
    outputs: io.outputs,
    requires: {
      ...(opts.arch ? { arch: opts.arch } : {}),
      ...(opts.minMemoryMb !== undefined ? { minMemoryMB: opts.minMemoryMb } : {}),
    },
    probe,
    createdAt: now.toISOString(),
    ...(expiresAt !== undefined ? { expiresAt } : {}),
  });
  return {
    manifest,
    envelope: signManifest(
      manifest,
      keys.map((k) => signerFor(k)),
    ),
  };
}

/** The signing flags of `release sign`, shared with `release publish` (which signs the same way). */
export function addSigningOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <name>', 'model name (letters, digits, ".", "_", "-")')
    .requiredOption('--version <version>', 'model version')
    .requiredOption('--file <model.onnx>', 'the model file')
    .requiredOption('--key <file>', 'private release key; repeat for several signatures', collect)
    .option('--probe <probe.json>', 'inference health probe spec (docs/probe-spec.md)')
    .option('--counter <n>', 'release counter (default: the signing time in seconds)', nonNegativeInt)
    .option('--floor <n>', 'lowest counter devices may still accept for this model (default 0)', nonNegativeInt)
    .option('--expires-at <date>', 'ISO date after which devices refuse the release', isoDate)
    .option('--expires-in <duration>', 'expiry relative to now, e.g. 90d', duration)
    .option('--arch <arch>', 'require a CPU architecture (x64, arm64, ...); repeatable', collect)
    .option('--min-memory-mb <n>', 'require at least this much device memory', nonNegativeInt)
    .option('--no-inspect', 'do not load the model with onnxruntime to read its inputs and outputs');
}

export function checkSigningOptions(opts: SignOptions): void {
  if (opts.expiresAt && opts.expiresIn) {
    throw new OtaError('E_USAGE', 'give --expires-at or --expires-in, not both');
  }
}

/** Human lines describing a signed release. */
export function releaseLines(manifest: Manifest, keyIds: string[]): [string, string][] {
  return [
    ['release', `${manifest.model}@${manifest.version}`],
    ['counter', `${manifest.counter} (floor ${manifest.floor})`],
    ['size', `${manifest.size} bytes`],
    ['sha256', manifest.sha256],
    [
      'probe',
      manifest.probe
        ? manifest.probe.golden
          ? 'golden outputs'
          : 'shape-derived inputs'
        : 'default (shape-derived inputs)',
    ],
    ['expires', manifest.expiresAt ?? 'never'],
    ['signed by', keyIds.join(', ')],
  ];
}

export function registerReleaseSign(release: Command, io: CliIo): void {
  addSigningOptions(
    release
      .command('sign')
      .description('sign a model release offline: writes the signed envelope (no coordinator needed)'),
  )
    .requiredOption('--out <envelope.json>', 'where to write the envelope')
    .option('--json', 'print the result as JSON')
    .action(async (opts: SignOptions & { out: string; json?: boolean }) => {
      checkSigningOptions(opts);
      const { manifest, envelope } = await buildSignedRelease(opts, new Date());
      await writeFileAtomic(opts.out, `${JSON.stringify(envelope, null, 2)}\n`);
      const keyIds = envelope.signatures.map((s) => s.keyId);
      if (opts.json) {
        io.out(JSON.stringify({ envelope: opts.out, manifest, keyIds }));
        return;
      }
      for (const line of keyValueLines([...releaseLines(manifest, keyIds), ['envelope', opts.out]])) {
        io.out(line);
      }
    });
}
