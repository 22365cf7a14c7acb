import type { Command } from 'commander';
import { type Envelope, verifyArtifact, verifyEnvelope } from '../../../shared/envelope.js';
import { OtaError } from '../../../shared/errors.js';
import { digestFile } from '../../../shared/file-digest.js';
import { readFileOrThrow } from '../../../shared/fs-atomic.js';
import { readPublicKeyFile } from '../../../shared/keys.js';
import { type CliIo, keyValueLines } from '../io.js';
import { collect, nonNegativeInt, positiveInt } from '../options.js';

interface VerifyOptions {
  envelope: string;
  file: string;
  pubkey: string[];
  threshold: number;
  floor: number;
  model?: string;
  version?: string;
  json?: boolean;
}

export async function readEnvelopeFile(file: string): Promise<unknown> {
  try {
    return JSON.parse((await readFileOrThrow(file)).toString('utf8')) as Envelope;
  } catch (err) {
    if (err instanceof OtaError) throw err;
    throw new OtaError('E_MANIFEST', `${file} is not JSON; pass the envelope written by \`otactl release sign\``);
  }
}

export function registerReleaseVerify(release: Command, io: CliIo): void {
  release
    .command('verify')
    .description('verify an envelope and a model file exactly as a device would (exit 0 when valid)')
    .requiredOption('--envelope <envelope.json>', 'the signed envelope')
    .requiredOption('--file <model.onnx>', 'the model file')
    .requiredOption('--pubkey <file.pub>', 'trusted public key; repeat for several', collect)
    .option('--threshold <n>', 'signatures from distinct trusted keys required', positiveInt, 1)
    .option('--floor <n>', 'rollback floor the verifier has already seen', nonNegativeInt, 0)
    .option('--model <name>', 'expected model name')
    .option('--version <version>', 'expected version')
    .option('--json', 'print the result as JSON')
    .action(async (opts: VerifyOptions) => {
      const keys = await Promise.all(opts.pubkey.map(readPublicKeyFile));
      const envelope = await readEnvelopeFile(opts.envelope);
      const { manifest, keyIds } = verifyEnvelope(
        envelope,
        { keys, threshold: opts.threshold },
        {
          now: new Date(),
          persistedFloor: opts.floor,
          expect: {
            ...(opts.model !== undefined ? { model: opts.model } : {}),
            ...(opts.version !== undefined ? { version: opts.version } : {}),
          },
        },
      );
      // Stop reading at the signed size + 1: an endless file cannot keep the verifier busy.
      const observed = await digestFile(opts.file, manifest.size + 1).catch((err: unknown) => {
        if (err instanceof OtaError && err.code === 'E_SIZE') {
          throw new OtaError('E_SIZE', `${opts.file} is larger than the signed size of ${manifest.size} bytes`);
        }
        throw err;
      });
      verifyArtifact(manifest, observed);
      if (opts.json) {
        io.out(JSON.stringify({ valid: true, manifest, keyIds }));
        return;
      }
      for (const line of keyValueLines([
        ['valid', `${manifest.model}@${manifest.version}`],
        ['counter', `${manifest.counter} (floor ${manifest.floor})`],
        ['sha256', `${manifest.sha256} (${manifest.size} bytes)`],
        ['signed by', `${keyIds.join(', ')} (threshold ${opts.threshold})`],
      ])) {
        io.out(line);
      }
    });
}
