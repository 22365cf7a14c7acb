import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { goodModel, goodProbe } from '../scripts/tiny-models.js';
import { canonicalJson } from '../shared/canonical-json.js';
import { signManifest } from '../shared/envelope.js';
import { type PrivateKey, publicKeyToJson, readPrivateKeyFile } from '../shared/keys.js';
import type { Reported } from '../shared/messages.js';
import { ProbeSpecSchema } from '../shared/probe-spec.js';
import { signerFor, signText } from '../shared/signatures.js';
import { TRUST_TYPE, type TrustDocument, type TrustEnvelope } from '../shared/trust.js';
import { TINY_IO } from './helpers/agent-fixture.js';
import { FleetFixture } from './helpers/fleet-fixture.js';
import { keys, manifestFor } from './helpers/releases.js';

// Issue 12 item 10, with a real coordinator and a real agent: trust rotates from key A (the
// agent config's) to B through a signed trust document relayed in the desired state; after it,
// a release signed by A alone is refused by the device and one signed by B is installed. A trust
// document the coordinator could forge (signed by its own key) or one signed by only one key of
// a 2-of-3 set is refused by the agent, which keeps its trust; and the agent keeps the rotated
// trust across a restart.

t.setTimeout(300_000);

const [b, c, d] = keys(3) as [PrivateKey, PrivateKey, PrivateKey];

function trustDoc(version: number, ks: PrivateKey[], threshold: number): TrustDocument {
  return {
    type: TRUST_TYPE,
    version,
    keys: ks.map((k) => ({ keyId: k.keyId, publicKey: publicKeyToJson(k).publicKey })),
    threshold,
    createdAt: new Date().toISOString(),
  };
}

/** Signs any document with any keys, the signer's own checks skipped (a forger's view). */
function signed(doc: TrustDocument, signers: PrivateKey[]): TrustEnvelope {
  const text = canonicalJson(doc);
  return {
    document: text,
    signatures: signText(
      text,
      signers.map((k) => signerFor(k)),
    ),
  };
}

t.test('rotate A -> B, then 2-of-3; forged trust documents are refused; the trust survives a restart', async (t) => {
  const f = await FleetFixture.create(t);
  const a = f.signers.releaseKey;
  const report = () => f.lastReport('cam-1');

  /** Signs det@version with `signers` and uploads it (HTTP), optionally onto a channel. */
  const publishSigned = async (version: string, counter: number, signers: PrivateKey[], channel?: string) => {
    const bytes = goodModel(counter);
    const envelope = signManifest(
      manifestFor(bytes, { model: 'det', version, counter, ...TINY_IO, probe: ProbeSpecSchema.parse(goodProbe()) }),
      signers.map((k) => signerFor(k)),
    );
    const file = path.join(f.dir, `det-${version}.onnx`);
    await fs.writeFile(file, bytes);
    const token = f.coordinator.admin();
    await uploadRelease({
      url: f.coordinator.httpUrl,
      user: token.user,
      token: token.token,
      envelope,
      file,
      channel: channel ?? null,
    });
  };
  const waitReport = (what: string, pred: (r: Reported) => boolean) =>
    f.waitFor(what, () => {
      const r = report();
      return r && pred(r) ? r : undefined;
    });

  await publishSigned('1.0.0', 1, [a], 'stable');
  await f.enrol('cam-1');
  await f.waitForDevice('cam-1', 'det', 'healthy', '1.0.0');
  t.match(report()?.trust, { version: 0, rejected: null }, "the config's keys: trust version 0");

  // While the device is offline, 2.0.0 signed by A alone is assigned; then trust rotates to B.
  await f.agents.get('cam-1')?.stop();
  await publishSigned('2.0.0', 2, [a], 'stable');
  const rotated = await f.admin.call<{ version: number; affected: { releases: string[] } }>('trust.publish', {
    envelope: signed(trustDoc(1, [b], 1), [a, b]),
  });
  t.equal(rotated.version, 1);
  t.same(rotated.affected.releases, ['det@1.0.0', 'det@2.0.0'], 'the coordinator counts B alone now');

  // The device takes the rotation first, then refuses the A-signed 2.0.0 of the same desired state.
  f.startAgent('cam-1');
  const refused = await waitReport(
    'cam-1 refuses 2.0.0',
    (r) => r.models.det?.version === '2.0.0' && r.models.det.state === 'failed',
  );
  t.equal(refused.trust?.version, 1, 'it holds trust version 1');
  t.equal(refused.models.det?.error?.code, 'E_UNKNOWN_KEY', `refused: ${refused.models.det?.error?.message}`);
  t.equal(await f.link('cam-1', 'det'), '1.0.0', 'still running 1.0.0');
  t.ok(existsSync(path.join(f.dir, 'cam-1-state', 'trust.json')), 'trust.json persisted in the state directory');

  // Signed by B: accepted and installed.
  await publishSigned('3.0.0', 3, [b], 'stable');
  await f.waitForDevice('cam-1', 'det', 'healthy', '3.0.0');

  // A restart: the agent still verifies with B (its config names only A).
  await f.agents.get('cam-1')?.kill9();
  const before = f.reports.get('cam-1')?.length ?? 0;
  f.startAgent('cam-1');
  await f.waitFor('a report after the restart', () => (f.reports.get('cam-1')?.length ?? 0) > before);
  t.equal(report()?.trust?.version, 1, 'trust version 1 after the restart');
  await publishSigned('3.1.0', 4, [b], 'stable');
  await f.waitForDevice('cam-1', 'det', 'healthy', '3.1.0');

  // To a 2-of-3 set: signed by B (held) and by two of the new keys.
  await f.admin.call('trust.publish', { envelope: signed(trustDoc(2, [b, c, d], 2), [b, c, d]) });
  await waitReport('cam-1 holds trust version 2', (r) => r.trust?.version === 2);

  // Forged documents, written into the coordinator's database as someone holding it could (the
  // coordinator's own check refuses them): relayed to the device at the coordinator's start.
  const db = path.join(f.coordinator.dataDir, 'coordinator.db');
  const coordinatorKey = await readPrivateKeyFile(path.join(f.coordinator.dataDir, 'coordinator.key'));
  const forge = (envelope: TrustEnvelope) =>
    f.restartCoordinator('SIGKILL', () => {
      const raw = new Database(db);
      try {
        raw.prepare('DELETE FROM trust_documents WHERE version = 3').run();
        raw
          .prepare('INSERT INTO trust_documents (version, envelope, published_by, published_at) VALUES (?, ?, ?, ?)')
          .run(3, JSON.stringify(envelope), 'mallory', new Date().toISOString());
      } finally {
        raw.close();
      }
    });
  const cases: [string, TrustEnvelope, RegExp][] = [
    [
      'one key of the 2-of-3 set',
      signed(trustDoc(3, [c], 1), [c]),
      /1 valid signature\(s\) from trusted keys, 2 required/,
    ],
    [
      "the coordinator's own key",
      signed(trustDoc(3, [coordinatorKey], 1), [coordinatorKey]),
      /no signature is from a trusted key/,
    ],
  ];
  for (const [what, envelope, why] of cases) {
    const seq = report()?.seq ?? 0;
    await forge(envelope);
    const after = await waitReport(`cam-1 answers the desired state of the restart (${what})`, (r) => r.seq > seq);
    t.equal(after.trust?.version, 2, `${what}: the trust is unchanged`);
    t.match(
      after.trust?.rejected,
      { version: 3, error: { code: 'E_TRUST_THRESHOLD', message: why } },
      `${what}: refused and reported`,
    );
  }
  const shown = await f.admin.call<{ lastReport: Reported }>('device.show', { id: 'cam-1' });
  t.match(shown.lastReport.trust, { version: 2, rejected: { version: 3 } }, 'device show carries it');

  // And after a restart of the agent it still holds version 2 (B, C, D; 2 of them).
  await f.agents.get('cam-1')?.kill9();
  const count = f.reports.get('cam-1')?.length ?? 0;
  f.startAgent('cam-1');
  await f.waitFor('a report after the second restart', () => (f.reports.get('cam-1')?.length ?? 0) > count);
  t.equal(report()?.trust?.version, 2);
  t.equal(await f.link('cam-1', 'det'), '3.1.0');

  // A damaged state.json is moved aside and rebuilt by the agent: the trust comes back from
  // trust.json, not from the config's key A.
  const stateDir = path.join(f.dir, 'cam-1-state');
  await f.agents.get('cam-1')?.kill9();
  await fs.writeFile(path.join(stateDir, 'state.json'), '{ damaged');
  const counted = f.reports.get('cam-1')?.length ?? 0;
  f.startAgent('cam-1');
  await f.waitFor('a report after state.json was rebuilt', () => (f.reports.get('cam-1')?.length ?? 0) > counted);
  t.equal(report()?.trust?.version, 2, 'trust version 2 with a rebuilt state.json');

  // A damaged trust.json stops the agent rather than letting it fall back to key A.
  await f.agents.get('cam-1')?.kill9();
  await fs.writeFile(path.join(stateDir, 'trust.json'), '{}');
  const agent = f.startAgent('cam-1');
  const exit = await agent.exitsWithin(30_000, 'the agent with a damaged trust.json');
  t.equal(exit.code, 1);
  t.match(agent.stderr, /error E_CONFIG: .*trust\.json is damaged/);
});
