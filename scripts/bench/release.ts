import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CommandClient } from '../../coordinator/client/command-client.js';
import { uploadRelease } from '../../coordinator/client/upload-release.js';
import { type Envelope, signManifest } from '../../shared/envelope.js';
import { generateKey, type PrivateKey, publicKeyToJson } from '../../shared/keys.js';
import { MANIFEST_TYPE, type Manifest } from '../../shared/manifest.js';
import { ProbeSpecSchema } from '../../shared/probe-spec.js';
import { signerFor } from '../../shared/signatures.js';
import { goodModel, goodProbe, TINY_INPUT, TINY_OUTPUT } from '../tiny-models.js';

/** A manifest for `bytes` as `otactl release sign` would write it (tiny-model I/O and probe). */
export function benchManifest(
  bytes: Uint8Array | { sha256: string; size: number },
  fields: { model: string; version: string; counter: number },
): Manifest {
  const digest =
    bytes instanceof Uint8Array
      ? { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length }
      : bytes;
  return {
    type: MANIFEST_TYPE,
    model: fields.model,
    version: fields.version,
    counter: fields.counter,
    floor: 0,
    sha256: digest.sha256,
    size: digest.size,
    framework: 'onnx',
    inputs: [{ name: TINY_INPUT, type: 'float32', dims: [1, 4] }],
    outputs: [{ name: TINY_OUTPUT, type: 'float32', dims: [1, 2] }],
    requires: {},
    probe: ProbeSpecSchema.parse(goodProbe()),
    createdAt: new Date().toISOString(),
  };
}

/**
 * The publisher's side: a fresh release key (trusted on the coordinator with `key.add`), and
 * releases of tiny real models signed with it and uploaded over HTTP (`POST /releases`).
 */
export class BenchPublisher {
  private counter = 0;

  /** `key`: the release key, fresh unless given (a publisher for a restarted coordinator keeps the trusted one). */
  constructor(
    private readonly admin: CommandClient,
    private readonly http: { url: string; user: string; token: string },
    private readonly dir: string,
    readonly key: PrivateKey = generateKey(),
  ) {}

  async trustKey(): Promise<void> {
    await this.admin.call('key.add', { key: publicKeyToJson(this.key), name: 'bench release key' });
  }

  async publish(model: string, version: string): Promise<Envelope> {
    this.counter += 1;
    const bytes = goodModel(this.counter);
    const envelope = signManifest(benchManifest(bytes, { model, version, counter: this.counter }), [
      signerFor(this.key),
    ]);
    const file = path.join(this.dir, `${model}-${version}.onnx`);
    await fs.writeFile(file, bytes);
    await uploadRelease({ ...this.http, envelope, file, channel: null });
    return envelope;
  }
}
