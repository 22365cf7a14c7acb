import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import {
  externalDataModel,
  goodModel,
  goodProbe,
  invalidModel,
  nanModel,
  slowModel,
  wrongOutputsModel,
} from '../scripts/tiny-models.js';
import { canonicalJson } from '../shared/canonical-json.js';
import { ProbeSpecSchema } from '../shared/probe-spec.js';
import { signerFor, signText } from '../shared/signatures.js';
import { createTopics } from '../shared/topics.js';
import { AgentFixture } from './helpers/agent-fixture.js';
import { paddedGoodModel } from './helpers/models.js';
import { TestSigners } from './helpers/signing.js';

// Real agent processes against a real Aedes broker and a local artifact server.

const topics = createTopics();

t.test('happy path: every reported state in order, and the on-disk layout', async (t) => {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent('cam-1');
  await f.observer.waitFor('online status', () => f.observer.statuses.get('cam-1')?.find((s) => s.online));
  const status = f.observer.statuses.get('cam-1')?.find((s) => s.online);
  t.equal(status?.facts?.arch, process.arch, 'device facts in the retained status');
  t.ok((status?.facts?.cpuCores ?? 0) > 0);
  t.ok((status?.facts?.memoryMB ?? 0) > 0);

  const v1 = f.release('det', '1.0.0', goodModel(1), { counter: 1 });
  await f.assign('cam-1', { det: { envelope: v1, rolloutId: 'r1' } });
  const healthy = await f.observer.waitForState('cam-1', 'det', 'healthy');
  t.same(f.observer.states('cam-1', 'det'), ['downloading', 'verifying', 'applying', 'probing', 'healthy']);
  t.match(healthy.models.det, {
    version: '1.0.0',
    current: '1.0.0',
    previousVersion: null,
    rolloutId: 'r1',
    error: null,
  });
  t.equal(healthy.seq, 1, 'acknowledges the desired seq');
  t.equal(await f.link('cam-1', 'det', 'current'), '1.0.0');
  t.same(await f.appVisible('cam-1', 'det'), Buffer.from(goodModel(1)));
  const envelopeOnDisk = JSON.parse(
    await fs.readFile(path.join(f.stateDir('cam-1'), 'models/det/1.0.0/envelope.json'), 'utf8'),
  );
  t.same(envelopeOnDisk, v1, 'the envelope is kept next to the model');

  // v2, then v3: previous follows, and only current + previous are kept.
  const v2 = f.release('det', '2.0.0', goodModel(2), { counter: 2 });
  await f.assign('cam-1', { det: { envelope: v2, rolloutId: 'r2' } });
  const r2 = await f.observer.waitFor('2.0.0 healthy', () => {
    const r = f.observer.last('cam-1');
    return r?.models.det?.state === 'healthy' && r.models.det.version === '2.0.0' ? r : undefined;
  });
  t.match(r2.models.det, { current: '2.0.0', previousVersion: '1.0.0' });
  const v3 = f.release('det', '3.0.0', goodModel(3), { counter: 3 });
  await f.assign('cam-1', { det: { envelope: v3, rolloutId: 'r3' } });
  await f.observer.waitFor('3.0.0 healthy', () => {
    const r = f.observer.last('cam-1');
    return r?.models.det?.state === 'healthy' && r.models.det.version === '3.0.0' ? r : undefined;
  });
  t.equal(await f.link('cam-1', 'det', 'previous'), '2.0.0');
  await f.observer.waitFor('gc', async () => (await f.versionsOnDisk('cam-1', 'det')).length === 2 || undefined);
  t.same(await f.versionsOnDisk('cam-1', 'det'), ['2.0.0', '3.0.0'], 'old versions garbage-collected');
  t.same(await fs.readdir(path.join(f.stateDir('cam-1'), 'staging')), [], 'no staged leftovers');
  t.same(f.observer.invalid, [], 'every message matched its schema');

  // Clean stop: retained offline status.
  const exit = await agent.stop();
  t.equal(exit.code, 0);
  await f.observer.waitFor(
    'offline status',
    () => f.observer.statuses.get('cam-1')?.at(-1)?.online === false || undefined,
  );
});

t.test('a model failing its probe is rolled back; current and the app-visible file are unchanged', async (t) => {
  const f = await AgentFixture.create(t);
  f.startAgent('cam-2');
  const good = f.release('det', '1.0.0', goodModel(1), { counter: 1 });
  await f.assign('cam-2', { det: { envelope: good } });
  await f.observer.waitForState('cam-2', 'det', 'healthy');
  const before = await f.appVisible('cam-2', 'det');

  const cases = [
    { version: '2.0.0-wrong', bytes: wrongOutputsModel(), code: 'E_PROBE_FAILED' },
    { version: '2.0.0-nan', bytes: nanModel(), code: 'E_PROBE_NONFINITE' },
    { version: '2.0.0-invalid', bytes: invalidModel(), code: 'E_MODEL_INVALID' },
    // Runs for minutes: the probe's hard timeout kills its child.
    {
      version: '2.0.0-hangs',
      bytes: slowModel(),
      code: 'E_PROBE_TIMEOUT',
      probe: ProbeSpecSchema.parse({ ...goodProbe(), timeoutMs: 2_000 }),
    },
  ];
  for (const [i, c] of cases.entries()) {
    const envelope = f.release('det', c.version, c.bytes, {
      counter: 10 + i,
      ...('probe' in c ? { probe: c.probe } : {}),
    });
    await f.assign('cam-2', { det: { envelope, rolloutId: `bad-${i}` } });
    const r = await f.observer.waitFor(`${c.version} rolled back`, () => {
      const last = f.observer.last('cam-2');
      return last?.models.det?.state === 'rolled_back' && last.models.det.version === c.version ? last : undefined;
    });
    t.match(r.models.det, { current: '1.0.0', error: { code: c.code } }, `${c.version}: ${c.code}`);
    t.equal(await f.link('cam-2', 'det', 'current'), '1.0.0');
    t.same(await f.appVisible('cam-2', 'det'), before, `${c.version}: app-visible file byte-identical`);
  }
  const states = f.observer.states('cam-2', 'det');
  t.same(states.slice(-5), ['downloading', 'verifying', 'applying', 'probing', 'rolled_back']);
});

t.test('attacks are rejected with their code and nothing reaches current', async (t) => {
  const f = await AgentFixture.create(t);
  // No artifact cap below the disk, so the free-space check is what stops the huge release.
  f.startAgent('cam-3', {}, { download: { maxBytes: Number.MAX_SAFE_INTEGER } });
  const good = f.release('det', '1.0.0', goodModel(1), { counter: 5, floor: 5 });
  await f.assign('cam-3', { det: { envelope: good } });
  await f.observer.waitForState('cam-3', 'det', 'healthy');
  const before = await f.appVisible('cam-3', 'det');

  const expectFailed = async (name: string, code: string, publish: () => Promise<void>) => {
    const n = f.observer.reports.get('cam-3')?.length ?? 0;
    await publish();
    await f.observer.waitFor(
      `${name} -> ${code} (last: ${JSON.stringify(f.observer.last('cam-3')?.models.det?.error)})`,
      () => {
        const list = f.observer.reports.get('cam-3') ?? [];
        return list
          .slice(n)
          .find(
            (x) =>
              x.rejected?.error.code === code ||
              (x.models.det?.state === 'failed' && x.models.det.error?.code === code),
          );
      },
    );
    t.pass(`${name}: refused with ${code}`);
    t.equal(await f.link('cam-3', 'det', 'current'), '1.0.0', `${name}: current unchanged`);
    t.same(await f.appVisible('cam-3', 'det'), before, `${name}: app-visible bytes unchanged`);
  };

  // Tampered bytes: the store serves other bytes under the signed digest (retried, then failed).
  const v2bytes = goodModel(2);
  const v2 = f.release('det', '2.0.0', v2bytes, { counter: 6 });
  const sha = (JSON.parse(v2.manifest) as { sha256: string }).sha256;
  const tampered = Buffer.from(v2bytes);
  tampered[tampered.length - 3] = (tampered[tampered.length - 3] as number) ^ 0xff;
  f.artifacts.replace(sha, tampered);
  await expectFailed('tampered bytes', 'E_DIGEST', () => f.assign('cam-3', { det: { envelope: v2, rolloutId: 'a1' } }));

  // Endless data: the server sends more than the signed size.
  const v3bytes = goodModel(3);
  const v3 = f.release('det', '3.0.0', v3bytes, { counter: 7 });
  f.artifacts.replace(
    (JSON.parse(v3.manifest) as { sha256: string }).sha256,
    Buffer.concat([Buffer.from(v3bytes), Buffer.alloc(1 << 20)]),
  );
  await expectFailed('endless data', 'E_SIZE', () => f.assign('cam-3', { det: { envelope: v3, rolloutId: 'a2' } }));

  // A stalled download: the server sends a little and then nothing (stall timeout, resumed and
  // retried until the attempts run out).
  const v3b = f.release('det', '3.1.0', paddedGoodModel(1 << 20, 8), { counter: 7 });
  f.artifacts.stallAfter = 100;
  await expectFailed('stalled download', 'E_DOWNLOAD_STALLED', () =>
    f.assign('cam-3', { det: { envelope: v3b, rolloutId: 'a2b' } }),
  );
  f.artifacts.stallAfter = null;

  // Signed by the trusted key, but a tensor's bytes live in a file outside the model directory:
  // refused before anything is installed.
  await expectFailed('external data outside the model directory', 'E_EXTERNAL_DATA', () =>
    f.assign('cam-3', {
      det: {
        envelope: f.release('det', '3.2.0', externalDataModel('../../../state.json'), { counter: 7 }),
        rolloutId: 'a2c',
      },
    }),
  );

  // Path traversal in the version, signed by the trusted key (the signing tools refuse to make
  // such a manifest, so the text is written by hand): refused before any path is built from it.
  const traversal = JSON.parse(f.release('det', '3.3.0', goodModel(9), { counter: 7 }).manifest) as Record<
    string,
    unknown
  >;
  traversal.version = '../../evil';
  const traversalText = canonicalJson(traversal);
  await expectFailed('path traversal in the version', 'E_NAME', () =>
    f.assign('cam-3', {
      det: {
        envelope: { manifest: traversalText, signatures: signText(traversalText, [signerFor(f.signers.releaseKey)]) },
        rolloutId: 'a2d',
      },
    }),
  );

  const unknownKey = new TestSigners();
  await expectFailed('unknown release key', 'E_UNKNOWN_KEY', () =>
    f.assign('cam-3', {
      det: { envelope: unknownKey.release('det', '4.0.0', goodModel(4), { counter: 9 }), rolloutId: 'a3' },
    }),
  );
  const bad = f.release('det', '4.0.0', goodModel(4), { counter: 9 });
  await expectFailed('bad signature', 'E_SIGNATURE', () =>
    f.assign('cam-3', {
      det: { envelope: { ...bad, manifest: bad.manifest.replace('"counter":9', '"counter":99') }, rolloutId: 'a4' },
    }),
  );
  const sig = Buffer.from(bad.signatures[0]?.sig as string, 'base64');
  let carry = 0n;
  let l = (1n << 252n) + 27742317777372353535851937790883648493n;
  for (let i = 32; i < 64; i++) {
    const sum = BigInt(sig[i] as number) + (l & 0xffn) + carry;
    sig[i] = Number(sum & 0xffn);
    carry = sum >> 8n;
    l >>= 8n;
  }
  await expectFailed('malleated signature', 'E_SIGNATURE_MALLEATED', () =>
    f.assign('cam-3', {
      det: {
        envelope: { ...bad, signatures: [{ keyId: bad.signatures[0]?.keyId as string, sig: sig.toString('base64') }] },
        rolloutId: 'a5',
      },
    }),
  );
  await expectFailed('manifest for another model', 'E_MODEL_MISMATCH', () =>
    f.assign('cam-3', {
      det: { envelope: f.release('other', '4.0.0', goodModel(4), { counter: 9 }), rolloutId: 'a6' },
    }),
  );
  await expectFailed('counter below the floor', 'E_FLOOR', () =>
    f.assign('cam-3', { det: { envelope: f.release('det', '0.9.0', goodModel(5), { counter: 4 }), rolloutId: 'a7' } }),
  );
  await expectFailed('expired manifest', 'E_EXPIRED', () =>
    f.assign('cam-3', {
      det: {
        envelope: f.release('det', '4.1.0', goodModel(6), {
          counter: 10,
          createdAt: '2025-01-01T00:00:00.000Z',
          expiresAt: '2025-06-01T00:00:00.000Z',
        }),
        rolloutId: 'a8',
      },
    }),
  );
  await expectFailed('not enough disk space', 'E_DISK_SPACE', async () => {
    // A release whose signed size is bigger than the free space (the bytes never exist).
    await f.assign('cam-3', {
      det: { envelope: f.release('det', '5.0.0', goodModel(7), { counter: 11, size: 2 ** 52 }), rolloutId: 'a9' },
    });
  });
  // Replayed desired state: an older seq with different content.
  const replay = f.signers.desired('cam-3', { det: { envelope: good } }, 1);
  await expectFailed('replayed desired state', 'E_REPLAY', () => f.observer.publishDesired('cam-3', replay));
  t.same(await f.versionsOnDisk('cam-3', 'det'), ['1.0.0'], 'no rejected release on disk');
});

t.test('bad desired payloads are refused without a crash', async (t) => {
  const f = await AgentFixture.create(t);
  const agent = f.startAgent('cam-4');
  await f.observer.waitFor('online', () => f.observer.statuses.get('cam-4')?.find((s) => s.online));
  const desiredTopic = topics.desired('cam-4');
  const payloads: [string, Buffer | string, string][] = [
    ['malformed JSON', '{"desired":', 'E_PAYLOAD_JSON'],
    ['wrong types', JSON.stringify({ desired: 42, signatures: 'x' }), 'E_PAYLOAD_SCHEMA'],
    ['huge', Buffer.alloc(300_000, 0x61), 'E_PAYLOAD_TOO_LARGE'],
    ['binary', Buffer.from([0xff, 0xfe, 0x00]), 'E_PAYLOAD_JSON'],
  ];
  for (const [name, payload, code] of payloads) {
    await f.observer.publishRaw(desiredTopic, payload);
    await f.observer.waitFor(name, () => f.observer.last('cam-4')?.rejected?.error.code === code || undefined);
    t.pass(`${name}: refused with ${code}`);
  }
  // Still alive and working.
  const v1 = f.release('det', '1.0.0', goodModel(1), { counter: 1 });
  await f.assign('cam-4', { det: { envelope: v1 } });
  await f.observer.waitForState('cam-4', 'det', 'healthy');
  t.equal(await Promise.race([agent.exited.then(() => 'exited'), Promise.resolve('running')]), 'running');
});
