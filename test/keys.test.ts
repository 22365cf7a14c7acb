import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { generateKey, keyIdOf, readPrivateKeyFile, readPublicKeyFile, writeKeyPair } from '../shared/keys.js';

t.test('writeKeyPair: private 0600, public 0644, both readable back, key id derived', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'release.key');
  const key = generateKey();
  await writeKeyPair(file, key);
  t.equal((await fs.stat(file)).mode & 0o777, 0o600);
  t.equal((await fs.stat(`${file}.pub`)).mode & 0o777, 0o644);
  const priv = await readPrivateKeyFile(file);
  const pub = await readPublicKeyFile(`${file}.pub`);
  t.equal(priv.keyId, key.keyId);
  t.equal(pub.keyId, key.keyId);
  t.equal(key.keyId, keyIdOf(key.publicKey));
  t.match(key.keyId, /^[0-9a-f]{32}$/);
  t.same(pub.publicKey, key.publicKey);
  t.same(priv.secretKey, key.secretKey);
  // No temporary files are left behind.
  t.same((await fs.readdir(dir)).sort(), ['release.key', 'release.key.pub']);
});

t.test('never overwrites an existing key', async (t) => {
  const dir = t.testdir({ 'release.key.pub': 'precious' });
  const file = path.join(dir, 'release.key');
  await t.rejects(writeKeyPair(file, generateKey()), { code: 'E_EXISTS' });
  t.equal(await fs.readFile(`${file}.pub`, 'utf8'), 'precious');
  await t.rejects(fs.stat(file), 'no private key half-written');
});

t.test('a private key readable by others is refused with the chmod to run', async (t) => {
  const file = path.join(t.testdir(), 'k');
  await writeKeyPair(file, generateKey());
  await fs.chmod(file, 0o644);
  await t.rejects(readPrivateKeyFile(file), { code: 'E_KEY_PERMISSIONS', message: /chmod 600/ });
});

t.test('wrong or damaged key files are E_KEY_FILE with a hint', async (t) => {
  const file = path.join(t.testdir(), 'k');
  const key = generateKey();
  await writeKeyPair(file, key);
  await t.rejects(readPublicKeyFile(file), { code: 'E_KEY_FILE', message: /is a private key/ });
  await t.rejects(readPrivateKeyFile(`${file}.pub`), { code: 'E_KEY_FILE', message: /is a public key/ });

  const pub = JSON.parse(await fs.readFile(`${file}.pub`, 'utf8'));
  const other = path.join(path.dirname(file), 'other.pub');
  await fs.writeFile(other, JSON.stringify({ ...pub, keyId: '0'.repeat(32) }));
  await t.rejects(readPublicKeyFile(other), { code: 'E_KEY_FILE', message: /does not match/ });
  await fs.writeFile(other, JSON.stringify({ ...pub, publicKey: Buffer.alloc(31).toString('base64') }));
  await t.rejects(readPublicKeyFile(other), { code: 'E_KEY_FILE', message: /32 bytes/ });
  await fs.writeFile(other, 'not json');
  await t.rejects(readPublicKeyFile(other), { code: 'E_KEY_FILE', message: /not JSON/ });
  await fs.writeFile(other, '{"hello":1}');
  await t.rejects(readPublicKeyFile(other), { code: 'E_KEY_FILE' });
  await t.rejects(readPublicKeyFile(path.join(path.dirname(file), 'missing.pub')), {
    code: 'E_IO',
    message: /no such file/,
  });

  const priv = JSON.parse(await fs.readFile(file, 'utf8'));
  const damaged = path.join(path.dirname(file), 'damaged');
  await fs.writeFile(damaged, JSON.stringify({ ...priv, keyId: generateKey().keyId }), { mode: 0o600 });
  await t.rejects(readPrivateKeyFile(damaged), { code: 'E_KEY_FILE', message: /damaged/ });
});
