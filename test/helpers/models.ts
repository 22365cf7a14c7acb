import onnxProto from 'onnx-proto';
import { goodModel } from '../../scripts/tiny-models.js';

const { onnx } = onnxProto;

/**
 * The good tiny model plus an unused initializer of about `bytes` bytes: a real, loadable model
 * big enough to be killed mid-download.
 */
export function paddedGoodModel(bytes: number, variant = 0): Uint8Array {
  const model = onnx.ModelProto.decode(goodModel(variant));
  const floats = Math.ceil(bytes / 4);
  const raw = new Uint8Array(floats * 4);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 31 + variant) & 0xff;
  model.graph?.initializer?.push(
    onnx.TensorProto.create({ name: 'padding', dims: [floats], dataType: 1, rawData: raw }),
  );
  return onnx.ModelProto.encode(model).finish();
}
