import { isOtaError } from '../../shared/errors.js';
import { checkExternalData } from './external-data.js';

/**
 * Child process of inspectModel (inspect-model.ts): decodes the staged model and checks its
 * external-data references, in its own heap so that decoding a large protobuf never inflates the
 * agent's. argv: <model file> <the version directory it will be installed in>.
 */
const [modelFile, modelDir] = process.argv.slice(2);
try {
  await checkExternalData(modelFile as string, modelDir);
  process.send?.({ ok: true });
} catch (err) {
  process.send?.(
    isOtaError(err)
      ? { ok: false, code: err.code, message: err.message }
      : { ok: false, code: 'E_MODEL_INVALID', message: (err as Error).message },
  );
}
process.disconnect?.();
