import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { goodModel, goodProbe, invalidModel, wrongOutputsModel } from '../scripts/tiny-models.js';
import { signManifest } from '../shared/envelope.js';
import { readPrivateKeyFile } from '../shared/keys.js';
import { signerFor } from '../shared/signatures.js';
import { otactl } from './helpers/cli.js';
import { manifestFor } from './helpers/releases.js';

/** keygen -> sign -> verify from the shell, then every failure reported by its code. */
t.test('otactl keygen, release sign, release verify', async (t) => {
  const dir = t.testdir({
    'model.onnx': Buffer.from(goodModel()),
    'wrong.onnx': Buffer.from(wrongOutputsModel()),
    'invalid.onnx': Buffer.from(invalidModel()),
    'probe.json': JSON.stringify(goodProbe()),
  });
  const at = (f: string) => path.join(dir, f);

  const keygen = await otactl(['keygen', '--out', at('release.key'), '--json']);
  t.equal(keygen.code, 0, keygen.stderr);
  const { id: keyId } = JSON.parse(keygen.stdout) as { id: string };
  t.match(keyId, /^[0-9a-f]{32}$/);
  t.equal((await fs.stat(at('release.key'))).mode & 0o777, 0o600);
  const again = await otactl(['keygen', '--out', at('release.key')]);
  t.equal(again.code, 1);
  t.match(again.stderr, /E_EXISTS/);
  t.equal((await otactl(['keygen', '--out', at('second.key')])).code, 0);

  const sign = (extra: string[], out = 'envelope.json') =>
    otactl([
      'release',
      'sign',
      '--model',
      'detector',
      '--version',
      '1.0.0',
      '--file',
      at('model.onnx'),
      '--key',
      at('release.key'),
      '--probe',
      at('probe.json'),
      '--out',
      at(out),
      ...extra,
    ]);
  const verify = (extra: string[], envelope = 'envelope.json', file = 'model.onnx') =>
    otactl([
      'release',
      'verify',
      '--envelope',
      at(envelope),
      '--file',
      at(file),
      '--pubkey',
      at('release.key.pub'),
      ...extra,
    ]);

  const signed = await sign(['--counter', '7', '--floor', '3']);
  t.equal(signed.code, 0, signed.stderr);
  t.match(signed.stdout, /release\s+detector@1\.0\.0/);
  t.match(signed.stdout, /counter\s+7 \(floor 3\)/);
  t.match(signed.stdout, /probe\s+golden outputs/);
  const envelope = JSON.parse(await fs.readFile(at('envelope.json'), 'utf8'));
  const manifest = JSON.parse(envelope.manifest);
  t.same(manifest.inputs, [{ name: 'x', type: 'float32', dims: [1, 4] }], 'inputs read from the model by onnxruntime');
  t.equal(manifest.size, goodModel().length);

  const ok = await verify([]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /valid\s+detector@1\.0\.0/);
  t.match(ok.stdout, new RegExp(`signed by\\s+${keyId}`));
  const okJson = await verify(['--json', '--model', 'detector', '--version', '1.0.0']);
  t.equal(okJson.code, 0);
  t.equal(JSON.parse(okJson.stdout).valid, true);

  t.test('failures, each by its code with exit 1', async (t) => {
    const expectFail = async (p: Promise<{ code: number | null; stderr: string }>, code: string) => {
      const r = await p;
      t.equal(r.code, 1, `${code}: exit 1`);
      t.match(r.stderr, new RegExp(`^error ${code}: `, 'm'), `${code}: ${r.stderr.trim()}`);
    };
    // A flipped bit in the file.
    const bytes = Buffer.from(goodModel());
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 1;
    await fs.writeFile(at('flipped.onnx'), bytes);
    await expectFail(verify([], 'envelope.json', 'flipped.onnx'), 'E_DIGEST');
    // A longer file (and an endless one would stop at the signed size + 1).
    await fs.writeFile(at('longer.onnx'), Buffer.concat([Buffer.from(goodModel()), Buffer.from('x')]));
    await expectFail(verify([], 'envelope.json', 'longer.onnx'), 'E_SIZE');
    // A flipped bit in the manifest text.
    await fs.writeFile(
      at('text.json'),
      JSON.stringify({ ...envelope, manifest: envelope.manifest.replace('"counter":7', '"counter":8') }),
    );
    await expectFail(verify([], 'text.json'), 'E_SIGNATURE');
    // A flipped bit in the signature.
    const sig = Buffer.from(envelope.signatures[0].sig, 'base64');
    sig[3] = (sig[3] as number) ^ 0x80;
    await fs.writeFile(
      at('sig.json'),
      JSON.stringify({ ...envelope, signatures: [{ keyId, sig: sig.toString('base64') }] }),
    );
    await expectFail(verify([], 'sig.json'), 'E_SIGNATURE');
    // Signed by a key the verifier does not trust.
    await expectFail(
      otactl([
        'release',
        'verify',
        '--envelope',
        at('envelope.json'),
        '--file',
        at('model.onnx'),
        '--pubkey',
        at('second.key.pub'),
      ]),
      'E_UNKNOWN_KEY',
    );
    // Threshold 2, one signature.
    await expectFail(verify(['--pubkey', at('second.key.pub'), '--threshold', '2']), 'E_THRESHOLD');
    // The verifier has already seen floor 8: counter 7 is a rollback.
    await expectFail(verify(['--floor', '8']), 'E_FLOOR');
    // Assigned as another model.
    await expectFail(verify(['--model', 'other']), 'E_MODEL_MISMATCH');
    // Expired: a manifest created and expired in the past, signed with the same key.
    const key = await readPrivateKeyFile(at('release.key'));
    const expired = signManifest(
      manifestFor(goodModel(), { createdAt: '2025-01-01T00:00:00.000Z', expiresAt: '2025-02-01T00:00:00.000Z' }),
      [signerFor(key)],
    );
    await fs.writeFile(at('expired.json'), JSON.stringify(expired));
    await expectFail(verify([], 'expired.json'), 'E_EXPIRED');
    // Malleated signature: S + L.
    const s = Buffer.from(envelope.signatures[0].sig, 'base64');
    let v = (1n << 252n) + 27742317777372353535851937790883648493n;
    for (let i = 32, carry = 0n; i < 64; i++) {
      const sum = BigInt(s[i] as number) + (v & 0xffn) + carry;
      s[i] = Number(sum & 0xffn);
      carry = sum >> 8n;
      v >>= 8n;
    }
    await fs.writeFile(
      at('malleated.json'),
      JSON.stringify({ ...envelope, signatures: [{ keyId, sig: s.toString('base64') }] }),
    );
    await expectFail(verify([], 'malleated.json'), 'E_SIGNATURE_MALLEATED');
    // Not an envelope at all; a missing file; a private key where a public key belongs.
    await expectFail(verify([], 'probe.json'), 'E_MANIFEST');
    await expectFail(verify([], 'missing.json'), 'E_IO');
    await expectFail(
      otactl([
        'release',
        'verify',
        '--envelope',
        at('envelope.json'),
        '--file',
        at('model.onnx'),
        '--pubkey',
        at('release.key'),
      ]),
      'E_KEY_FILE',
    );
    // Signing refuses path traversal, a model onnxruntime cannot load, and a probe that does not fit the model.
    await expectFail(
      otactl([
        'release',
        'sign',
        '--model',
        '../etc',
        '--version',
        '1',
        '--file',
        at('model.onnx'),
        '--key',
        at('release.key'),
        '--out',
        at('x.json'),
      ]),
      'E_NAME',
    );
    await expectFail(
      otactl([
        'release',
        'sign',
        '--model',
        'm',
        '--version',
        '1/../2',
        '--file',
        at('model.onnx'),
        '--key',
        at('release.key'),
        '--out',
        at('x.json'),
      ]),
      'E_NAME',
    );
    await expectFail(
      otactl([
        'release',
        'sign',
        '--model',
        'm',
        '--version',
        '1',
        '--file',
        at('invalid.onnx'),
        '--key',
        at('release.key'),
        '--out',
        at('x.json'),
      ]),
      'E_MODEL_INVALID',
    );
    await fs.writeFile(at('bad-probe.json'), JSON.stringify({ inputs: { nope: { dims: [1], data: [1] } } }));
    await expectFail(
      otactl([
        'release',
        'sign',
        '--model',
        'm',
        '--version',
        '1',
        '--file',
        at('model.onnx'),
        '--key',
        at('release.key'),
        '--probe',
        at('bad-probe.json'),
        '--out',
        at('x.json'),
      ]),
      'E_PROBE_SPEC',
    );
    await t.rejects(fs.stat(at('x.json')), 'no envelope written by a failed sign');
    await fs.chmod(at('release.key'), 0o640);
    await expectFail(sign([], 'y.json'), 'E_KEY_PERMISSIONS');
    await fs.chmod(at('release.key'), 0o600);
  });

  t.test('--no-inspect signs a file onnxruntime cannot load (for probe-failure tests)', async (t) => {
    const r = await otactl([
      'release',
      'sign',
      '--model',
      'm',
      '--version',
      '1',
      '--file',
      at('invalid.onnx'),
      '--key',
      at('release.key'),
      '--out',
      at('invalid.json'),
      '--no-inspect',
      '--json',
    ]);
    t.equal(r.code, 0, r.stderr);
    t.same(JSON.parse(r.stdout).manifest.inputs, []);
    t.equal((await verify([], 'invalid.json', 'invalid.onnx')).code, 0);
  });

  t.test('several keys sign one release; a threshold of 2 then passes', async (t) => {
    const r = await sign(['--key', at('second.key')], 'two.json');
    t.equal(r.code, 0, r.stderr);
    const v = await verify(['--pubkey', at('second.key.pub'), '--threshold', '2'], 'two.json');
    t.equal(v.code, 0, v.stderr);
  });

  t.test('usage errors exit 2 and point at --help', async (t) => {
    for (const args of [
      ['release', 'sign', '--model', 'm'],
      ['release', 'verify'],
      ['keygen'],
      ['nonsense'],
      [
        'release',
        'sign',
        '--model',
        'm',
        '--version',
        '1',
        '--file',
        'f',
        '--key',
        'k',
        '--out',
        'o',
        '--counter',
        '-1',
      ],
      [
        'release',
        'sign',
        '--model',
        'm',
        '--version',
        '1',
        '--file',
        'f',
        '--key',
        'k',
        '--out',
        'o',
        '--expires-in',
        'soon',
      ],
      ['release', 'verify', '--envelope', 'e', '--file', 'f', '--pubkey', 'p', '--threshold', '0'],
    ]) {
      const r = await otactl(args);
      t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
      t.match(r.stderr, /--help/, `${args.join(' ')}: hints at --help`);
    }
    const floorAboveCounter = await sign(['--counter', '1', '--floor', '2'], 'z.json');
    t.equal(floorAboveCounter.code, 2);
    t.match(floorAboveCounter.stderr, /E_USAGE: --floor 2 is above the release counter 1/);
    const help = await otactl(['release', 'sign', '--help']);
    t.equal(help.code, 0);
    t.match(help.stdout, /--probe <probe\.json>/);
    const version = await otactl(['--version']);
    t.equal(version.code, 0);
    t.match(version.stdout, /^\d+\.\d+\.\d+/);
  });
});
