import { createHash } from 'node:crypto';
import { generateKey, type PrivateKey } from '../../shared/keys.js';
import { MANIFEST_TYPE, type Manifest } from '../../shared/manifest.js';

/** A valid manifest for `bytes`, with fields overridable per test. */
export function manifestFor(bytes: Uint8Array, overrides: Partial<Manifest> = {}): Manifest {
  return {
    type: MANIFEST_TYPE,
    model: 'detector',
    version: '1.0.0',
    counter: 10,
    floor: 0,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    size: bytes.length,
    framework: 'onnx',
    inputs: [{ name: 'x', type: 'float32', dims: [1, 4] }],
    outputs: [{ name: 'y', type: 'float32', dims: [1, 2] }],
    requires: {},
    probe: null,
    createdAt: '2026-01-01T00:00:00.000Z',
    ...overrides,
  };
}

export function keys(n: number): PrivateKey[] {
  return Array.from({ length: n }, () => generateKey());
}
