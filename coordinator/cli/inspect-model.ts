import { OtaError } from '../../shared/errors.js';
import type { ModelIo } from '../../shared/manifest.js';

/**
 * Reads a model's declared inputs and outputs with onnxruntime, the runtime the devices use, so a
 * file that onnxruntime cannot load is caught on the publisher's machine rather than on the fleet.
 */
export async function inspectModel(file: string): Promise<{ inputs: ModelIo[]; outputs: ModelIo[] }> {
  const ort = await import('onnxruntime-node');
  let session: Awaited<ReturnType<typeof ort.InferenceSession.create>>;
  try {
    session = await ort.InferenceSession.create(file);
  } catch (err) {
    throw new OtaError(
      'E_MODEL_INVALID',
      `${file} is not a model onnxruntime can load (${(err as Error).message.split('\n')[0]}); pass --no-inspect to sign it anyway`,
      { cause: err },
    );
  }
  try {
    const describe = (m: (typeof session.inputMetadata)[number]): ModelIo =>
      m.isTensor ? { name: m.name, type: m.type, dims: [...m.shape] } : { name: m.name, type: 'non-tensor', dims: [] };
    return { inputs: session.inputMetadata.map(describe), outputs: session.outputMetadata.map(describe) };
  } finally {
    await session.release();
  }
}
