import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { generateSeed, type KeyPair, keyPairFromSeed, PUBLIC_KEY_BYTES, SEED_BYTES } from './ed25519.js';
import { OtaError } from './errors.js';
import { PRIVATE_KEY_RULE, secretFileError } from './file-permissions.js';
import { ioError, readFileOrThrow, writeFileAtomic } from './fs-atomic.js';

/**
 * Key files. Both are small JSON documents so that an operator can read them and a fleet script
 * can parse them without our code:
 *   private: { type: "ota.ed25519.private/v1", keyId, publicKey, seed }   (mode 0600)
 *   public:  { type: "ota.ed25519.public/v1",  keyId, publicKey }
 * Bytes are base64. The key id is the first 16 bytes of sha256(public key), in hex: derived, so a
 * file cannot claim another key's id (it is checked on load).
 */

const PRIVATE_TYPE = 'ota.ed25519.private/v1';
const PUBLIC_TYPE = 'ota.ed25519.public/v1';

export interface PublicKey {
  keyId: string;
  publicKey: Uint8Array;
}

export interface PrivateKey extends PublicKey {
  seed: Uint8Array;
  secretKey: Uint8Array;
}

export function keyIdOf(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex').slice(0, 32);
}

const base64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64');

/** The JSON form of a public key, also used inline in agent configs and command payloads. */
export const PublicKeyJsonSchema = z.strictObject({
  type: z.literal(PUBLIC_TYPE).optional(),
  keyId: z.string().regex(/^[0-9a-f]{32}$/, 'must be 32 lowercase hex characters'),
  publicKey: base64,
});
export type PublicKeyJson = z.infer<typeof PublicKeyJsonSchema>;

const PrivateKeyJsonSchema = z.strictObject({
  type: z.literal(PRIVATE_TYPE),
  keyId: z.string(),
  publicKey: base64,
  seed: base64,
});

export function generateKey(): PrivateKey {
  return privateKeyFromSeed(generateSeed());
}

export function privateKeyFromSeed(seed: Uint8Array): PrivateKey {
  const pair: KeyPair = keyPairFromSeed(seed);
  return { keyId: keyIdOf(pair.publicKey), publicKey: pair.publicKey, seed, secretKey: pair.secretKey };
}

export function publicKeyToJson(key: PublicKey): Required<PublicKeyJson> {
  return { type: PUBLIC_TYPE, keyId: key.keyId, publicKey: Buffer.from(key.publicKey).toString('base64') };
}

function decodeKeyBytes(b64: string, expected: number, what: string, source: string): Uint8Array {
  const bytes = new Uint8Array(Buffer.from(b64, 'base64'));
  if (bytes.length !== expected) {
    throw new OtaError('E_KEY_FILE', `${source}: ${what} must be ${expected} bytes, found ${bytes.length}`);
  }
  return bytes;
}

/** Parses and checks a public key in its JSON form; `source` names where it came from in errors. */
export function publicKeyFromJson(value: unknown, source: string): PublicKey {
  const parsed = PublicKeyJsonSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new OtaError(
      'E_KEY_FILE',
      `${source} is not an ota public key (${issue?.path.join('.') || 'value'}: ${issue?.message}); pass the .pub file written by \`otactl keygen\``,
    );
  }
  const publicKey = decodeKeyBytes(parsed.data.publicKey, PUBLIC_KEY_BYTES, 'publicKey', source);
  const keyId = keyIdOf(publicKey);
  if (keyId !== parsed.data.keyId) {
    throw new OtaError('E_KEY_FILE', `${source}: keyId ${parsed.data.keyId} does not match the public key (${keyId})`);
  }
  return { keyId, publicKey };
}

function parseJsonFile(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new OtaError('E_KEY_FILE', `${source} is not JSON; pass a key file written by \`otactl keygen\``);
  }
}

export async function readPublicKeyFile(file: string): Promise<PublicKey> {
  const value = parseJsonFile((await readFileOrThrow(file)).toString('utf8'), file);
  if (typeof value === 'object' && value !== null && (value as { type?: unknown }).type === PRIVATE_TYPE) {
    throw new OtaError('E_KEY_FILE', `${file} is a private key; pass the public key (${file}.pub)`);
  }
  return publicKeyFromJson(value, file);
}

export async function readPrivateKeyFile(file: string): Promise<PrivateKey> {
  const value = parseJsonFile((await readFileOrThrow(file)).toString('utf8'), file);
  const parsed = PrivateKeyJsonSchema.safeParse(value);
  if (!parsed.success) {
    const isPublic = typeof value === 'object' && value !== null && (value as { type?: unknown }).type === PUBLIC_TYPE;
    throw new OtaError(
      'E_KEY_FILE',
      isPublic
        ? `${file} is a public key; signing needs the private key file written by \`otactl keygen\``
        : `${file} is not an ota private key file; create one with \`otactl keygen --out FILE\``,
    );
  }
  // Like ssh: a private key others can read is refused rather than used.
  let mode: number;
  try {
    mode = (await fs.stat(file)).mode;
  } catch (err) {
    throw ioError(err, file);
  }
  const open = secretFileError(file, mode, PRIVATE_KEY_RULE, 'private key');
  if (open) throw open;
  const seed = decodeKeyBytes(parsed.data.seed, SEED_BYTES, 'seed', file);
  const key = privateKeyFromSeed(seed);
  if (key.keyId !== parsed.data.keyId || Buffer.from(key.publicKey).toString('base64') !== parsed.data.publicKey) {
    throw new OtaError('E_KEY_FILE', `${file}: keyId or publicKey does not match the seed; the file is damaged`);
  }
  return key;
}

/**
 * Writes `file` (private, 0600) and `file.pub` (public, 0644). Refuses to overwrite either: losing
 * a release key by a typo is not recoverable.
 */
export async function writeKeyPair(
  file: string,
  key: PrivateKey,
): Promise<{ privateFile: string; publicFile: string }> {
  const publicFile = `${file}.pub`;
  for (const f of [file, publicFile]) {
    const exists = await fs.stat(f).then(
      () => true,
      () => false,
    );
    if (exists)
      throw new OtaError('E_EXISTS', `${f} already exists; refusing to overwrite a key (choose another --out)`);
  }
  const privateJson = {
    type: PRIVATE_TYPE,
    keyId: key.keyId,
    publicKey: Buffer.from(key.publicKey).toString('base64'),
    seed: Buffer.from(key.seed).toString('base64'),
  };
  await writeFileAtomic(file, `${JSON.stringify(privateJson, null, 2)}\n`, { mode: 0o600, exclusive: true });
  await writeFileAtomic(publicFile, `${JSON.stringify(publicKeyToJson(key), null, 2)}\n`, {
    mode: 0o644,
    exclusive: true,
  });
  return { privateFile: file, publicFile };
}
