import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import onnxProto, { type onnx as Onnx } from 'onnx-proto';
import { OtaError } from '../../shared/errors.js';

/**
 * ONNX lets a tensor keep its bytes in another file ("external data"), named by a `location`
 * relative to the model's directory. A signed model only vouches for the bytes of model.onnx, so a
 * location such as `../../etc/passwd` or `/dev/zero` would make onnxruntime read files the
 * release never signed (a leak into the outputs, or a hang on an endless device). The agent
 * refuses such a model before onnxruntime opens anything (design section 4); recent onnxruntime
 * versions refuse some of these paths themselves, but the device must not depend on that.
 */

const { onnx } = onnxProto;
type Tensor = Onnx.ITensorProto;
type SparseTensor = Onnx.ISparseTensorProto;
type Graph = Onnx.IGraphProto;
type Node = Onnx.INodeProto;

/** One external-data reference found in a model: the tensor it belongs to and where it points. */
export interface ExternalDataRef {
  tensor: string;
  location: string | undefined;
}

/**
 * Every tensor that declares external data, wherever ONNX allows a tensor: graph initializers and
 * sparse initializers, tensors in node attributes (Constant values and the like), and the graphs
 * nested in attributes (If / Loop / Scan bodies), in local functions and in training info, at any
 * depth. Pure: takes the decoded model.
 */
export function externalDataRefs(model: Onnx.IModelProto): ExternalDataRef[] {
  const refs: ExternalDataRef[] = [];
  const tensor = (t: Tensor | null | undefined) => {
    if (!t) return;
    const entries = t.externalData ?? [];
    const locations = entries.filter((e) => e.key === 'location').map((e) => e.value ?? '');
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || entries.length > 0) {
      // No location at all is malformed; report it so it fails closed rather than slip through.
      if (locations.length === 0) refs.push({ tensor: t.name ?? '', location: undefined });
      for (const location of locations) refs.push({ tensor: t.name ?? '', location });
    }
  };
  const sparse = (s: SparseTensor | null | undefined) => {
    tensor(s?.values);
    tensor(s?.indices);
  };
  const nodes = (list: Node[] | null | undefined) => {
    for (const node of list ?? []) {
      for (const a of node.attribute ?? []) {
        tensor(a.t);
        for (const t of a.tensors ?? []) tensor(t);
        sparse(a.sparseTensor);
        for (const s of a.sparseTensors ?? []) sparse(s);
        graph(a.g);
        for (const g of a.graphs ?? []) graph(g);
      }
    }
  };
  const graph = (g: Graph | null | undefined) => {
    if (!g) return;
    for (const t of g.initializer ?? []) tensor(t);
    for (const s of g.sparseInitializer ?? []) sparse(s);
    nodes(g.node);
  };
  graph(model.graph);
  for (const f of model.functions ?? []) nodes(f.node);
  for (const info of model.trainingInfo ?? []) {
    graph(info.initialization);
    graph(info.algorithm);
  }
  return refs;
}

/** True when `target` is strictly inside `dir` (both absolute). */
function isInside(dir: string, target: string): boolean {
  const relative = path.relative(dir, target);
  return relative !== '' && relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative);
}

/**
 * Why a location is refused, or undefined when it names a file inside `modelDir`. Lexical only
 * (pure); symlinks are checkExternalData's part.
 */
export function externalLocationProblem(location: string | undefined, modelDir: string): string | undefined {
  if (location === undefined || location === '') return 'has no location';
  if (location.includes('\0')) return 'has a location with a NUL byte';
  if (path.isAbsolute(location)) return `has an absolute location (${location})`;
  // Backslashes are separators for onnxruntime on Windows; refuse them rather than guess.
  if (location.includes('\\')) return `has a location with a backslash (${location})`;
  if (!isInside(modelDir, path.resolve(modelDir, location))) return `points outside the model directory (${location})`;
  return undefined;
}

/** Decodes model bytes, or throws E_MODEL_INVALID: what cannot be decoded cannot be checked. */
export function decodeModel(bytes: Uint8Array, name: string): Onnx.ModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new OtaError('E_MODEL_INVALID', `${name} is not an ONNX model (${(err as Error).message})`, { cause: err });
  }
}

/**
 * Reads `modelFile` and throws E_EXTERNAL_DATA when a tensor's external data is not a file inside
 * `modelDir` (default: the file's own directory; the agent passes the version directory the staged
 * file is about to be installed in), also after resolving symlinks (a link next to the model must not lead out
 * either), or E_MODEL_INVALID when the file cannot be read or decoded as ONNX.
 */
export async function checkExternalData(
  modelFile: string,
  modelDir = path.dirname(path.resolve(modelFile)),
): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(modelFile);
  } catch (err) {
    // ONNX protobufs are capped at 2 GiB, so a file too large to read is not a valid model either.
    throw new OtaError('E_MODEL_INVALID', `cannot read the model ${modelFile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // Only the references outlive this line, not the decoded model nor the file's bytes.
  const refs = externalDataRefs(decodeModel(bytes, modelFile));
  for (const ref of refs) {
    const tensor = JSON.stringify(ref.tensor);
    const problem = externalLocationProblem(ref.location, modelDir);
    if (problem)
      throw new OtaError('E_EXTERNAL_DATA', `tensor ${tensor} of the model has external data that ${problem}`);
    const target = path.resolve(modelDir, ref.location as string);
    // A missing file is left to onnxruntime, which refuses to load the model with its own message.
    const real = await realpath(target).catch(() => undefined);
    if (real !== undefined && !isInside(await realpath(modelDir).catch(() => modelDir), real)) {
      throw new OtaError(
        'E_EXTERNAL_DATA',
        `tensor ${tensor} of the model has external data ${ref.location} that resolves outside the model directory (${real})`,
      );
    }
  }
}
