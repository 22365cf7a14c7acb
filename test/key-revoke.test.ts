import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { uploadRelease } from '../coordinator/client/upload-release.js';
import { coordinatorTrust, releaseEligibility } from '../coordinator/fleet/release-trust.js';
import { decide } from '../coordinator/rollout/decide.js';
import { parseWaves } from '../coordinator/rollout/strategy.js';
import type { Rollout, RolloutDevice } from '../coordinator/rollout/types.js';
import type { TrustedKeyRecord } from '../coordinator/store/records.js';
import { goodModel } from '../scripts/tiny-models.js';
import { type Envelope, signManifest } from '../shared/envelope.js';
import { type PrivateKey, publicKeyToJson } from '../shared/keys.js';
import type { AuditEvent, RolloutSummary } from '../shared/messages.js';
import { signerFor } from '../shared/signatures.js';
import { otactl } from './helpers/cli.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import { keys, manifestFor } from './helpers/releases.js';
import { rolloutRecord } from './helpers/rollout-record.js';

// Issue 12 item 9: `key revoke` must reach what is already published. A release whose valid
// signatures from keys the coordinator still trusts fall below the threshold is revoked: listed
// as such, and assigned by nothing (channel set, rollout create, a further wave, approve,
// enrolment, a revert). Desired states already assigned are left; the revocation reports them.

const [a, b] = keys(2) as [PrivateKey, PrivateKey];
const NOW = '2026-06-01T00:00:00.000Z';

function record(k: PrivateKey, revoked = false): TrustedKeyRecord {
  return { keyId: k.keyId, publicKey: publicKeyToJson(k).publicKey, name: null, revoked, addedAt: NOW };
}

function release(version: string, signers: PrivateKey[]): { id: string; envelope: Envelope } {
  const envelope = signManifest(
    manifestFor(new TextEncoder().encode(version), { model: 'det', version }),
    signers.map((k) => signerFor(k)),
  );
  return { id: `det@${version}`, envelope };
}

t.test('eligibility: a pure function of the envelope, the trusted keys and the threshold', async (t) => {
  const byA = release('1.0.0', [a]);
  const byAB = release('2.0.0', [a, b]);
  const before = coordinatorTrust([record(a), record(b)], null, 1);
  t.same(releaseEligibility(byA, before), { eligible: true });

  const revoked = coordinatorTrust([record(a, true), record(b)], null, 1);
  const verdict = releaseEligibility(byA, revoked);
  t.equal(verdict.eligible, false);
  t.same(!verdict.eligible && verdict.keys, [a.keyId], 'names the revoked key');
  t.match(!verdict.eligible && verdict.reason, new RegExp(`det@1.0.0 is revoked: signed by ${a.keyId} \\(revoked\\)`));
  t.match(!verdict.eligible && verdict.reason, /publish it as a new version/, 'and says how to fix it');
  t.same(releaseEligibility(byAB, revoked), { eligible: true }, 'b still signs it');
  t.equal(releaseEligibility(byAB, coordinatorTrust([record(a, true), record(b)], null, 2)).eligible, false);

  // Rotated out by a trust document: named as such.
  const rotated = coordinatorTrust([record(a), record(b)], { version: 3, keys: [b], threshold: 1 }, 1);
  const out = releaseEligibility(byA, rotated);
  t.match(!out.eligible && out.reason, /\(not in trust version 3\)/);
});

// ---- the rollout engine: pure decisions with a revoked candidate or revert target ----

function rolloutOf(waves: string): Rollout {
  return rolloutRecord({
    id: 'r1',
    model: 'det',
    version: '2.0.0',
    strategy: { waves: parseWaves(waves), maxFailureRate: 0 },
    createdAt: NOW,
  });
}

function device(id: string, wave: number, state: RolloutDevice['state']): RolloutDevice {
  return {
    deviceId: id,
    wave,
    state,
    online: true,
    previousReleaseId: 'det@1.0.0',
    revertedTo: null,
    assignedAt: state === 'pending' ? null : NOW,
    finishedAt: null,
    error: null,
  };
}

const revokedCandidate = {
  revokedReason: (id: string) => (id === 'det@2.0.0' ? 'release det@2.0.0 is revoked: signed by k (revoked)' : null),
};

t.test(
  'a revoked candidate starts no further wave: the rollout halts, approve/promote/resume are refused',
  async (t) => {
    const running = rolloutOf('50,100');
    const devices = [device('d0', 0, 'downloading'), device('d1', 1, 'pending')];
    const d = decide(
      running,
      devices,
      { type: 'report', deviceId: 'd0', state: 'healthy', version: '2.0.0', error: null },
      NOW,
      revokedCandidate,
    );
    t.equal(d.patch.status, 'halted', 'halted instead of starting wave 2');
    t.match(d.patch.haltReason, /^wave 2 not started: release det@2.0.0 is revoked/);
    t.same(d.assignments, [], 'nothing assigned');
    t.match(d.audit.at(-1), { action: 'rollout.halted', details: { revoked: true } });
    // Without the revocation the same report starts wave 2: the test above is about the revocation.
    const plain = decide(
      running,
      devices,
      { type: 'report', deviceId: 'd0', state: 'healthy', version: '2.0.0', error: null },
      NOW,
    );
    t.same(
      plain.assignments.map((x) => x.deviceId),
      ['d1'],
    );

    const waiting = { ...rolloutOf('50,100:manual'), status: 'waiting_approval' as const };
    const atGate = [device('d0', 0, 'healthy'), device('d1', 1, 'pending')];
    for (const event of [
      { type: 'approve', actor: 'alice' },
      { type: 'promote', actor: 'alice' },
    ] as const) {
      t.throws(() => decide(waiting, atGate, event, NOW, revokedCandidate), {
        code: 'E_RELEASE_REVOKED',
        message: new RegExp(`cannot ${event.type} rollout r1: release det@2.0.0 is revoked.*otactl rollout abort r1`),
      });
    }
    const halted = { ...rolloutOf('50,100'), status: 'halted' as const };
    t.throws(() => decide(halted, atGate, { type: 'resume', actor: 'alice' }, NOW, revokedCandidate), {
      code: 'E_RELEASE_REVOKED',
    });
  },
);

t.test('a rollout completing after its release was revoked leaves its channel where it is', async (t) => {
  const last = rolloutOf('100');
  const devices = [device('d0', 0, 'downloading')];
  const report = { type: 'report', deviceId: 'd0', state: 'healthy', version: '2.0.0', error: null } as const;
  const revoked = decide(last, devices, report, NOW, revokedCandidate);
  t.equal(revoked.patch.status, 'completed');
  t.equal(revoked.channelMove, null, 'stable is not moved to the revoked det@2.0.0');
  t.match(revoked.audit.at(-1), {
    action: 'rollout.channel_not_moved',
    details: { channel: 'stable', reason: /det@2.0.0 is revoked/ },
  });
  const plain = decide(last, devices, report, NOW);
  t.same(plain.channelMove, { channel: 'stable', model: 'det', releaseId: 'det@2.0.0' }, 'moved when not revoked');
});

t.test('a revoked revert target is treated like an unpublished one: the entry is removed', async (t) => {
  const halted = { ...rolloutOf('100'), status: 'halted' as const };
  const devices = [device('d0', 0, 'rolled_back'), device('d1', 0, 'healthy')];
  const revokedOld = { revokedReason: (id: string) => (id === 'det@1.0.0' ? 'revoked' : null) };
  const d = decide(halted, devices, { type: 'abort', actor: 'alice', policy: 'revert' }, NOW, revokedOld);
  t.same(d.assignments, [
    { deviceId: 'd0', kind: 'revert', releaseId: null },
    { deviceId: 'd1', kind: 'revert', releaseId: null },
  ]);
  t.match(d.audit.at(-1), {
    action: 'rollout.aborted',
    details: { setBack: [{ version: null, devices: ['d0', 'd1'] }] },
  });
  const plain = decide(halted, devices, { type: 'abort', actor: 'alice', policy: 'revert' }, NOW);
  t.same(
    plain.assignments.map((x) => x.kind === 'revert' && x.releaseId),
    ['det@1.0.0', 'det@1.0.0'],
  );
});

// ---- a real coordinator (in process): the commands ----

t.test('after key revoke, the commands never assign a release signed only by it', async (t) => {
  const { running, token, admin, dataDir } = await startInProcessCoordinator(t);
  await admin.call('key.add', { key: publicKeyToJson(a), name: 'a' });
  await admin.call('key.add', { key: publicKeyToJson(b), name: 'b' });
  const publish = async (version: string, counter: number, signers: PrivateKey[], channel: string | null = null) => {
    const bytes = goodModel(counter);
    const file = path.join(dataDir, '..', `det-${version}.onnx`);
    await fs.writeFile(file, bytes);
    const envelope = signManifest(
      manifestFor(bytes, { model: 'det', version, counter }),
      signers.map((k) => signerFor(k)),
    );
    await uploadRelease({ url: running.httpUrl, user: 'admin', token: token.token, envelope, file, channel });
  };
  await publish('1.0.0', 1, [a]);
  await publish('2.0.0', 2, [a]);
  await publish('3.0.0', 3, [a, b]);
  for (const id of ['cam-1', 'cam-2']) await admin.call('device.add', { id });
  await admin.call('channel.set', { model: 'det', channel: 'stable', version: '1.0.0' });
  // A rollout of 2.0.0 (signed by a alone) waits at its manual gate, wave 1 assigned.
  const before = await admin.call<RolloutSummary>('rollout.create', {
    id: 'r-a',
    model: 'det',
    version: '2.0.0',
    devices: ['cam-1', 'cam-2'],
    waves: '50,100:manual',
  });
  t.equal(before.status, 'waiting_approval', 'offline wave 1 complete, waiting at the gate');

  const revoked = await admin.call<{
    id: string;
    affected: { releases: string[]; channels: string[]; devices: number };
  }>('key.revoke', { keyId: a.keyId });
  t.same(
    revoked.affected,
    { releases: ['det@1.0.0', 'det@2.0.0'], channels: ['det/stable'], devices: 2 },
    'the revocation lists what is left behind: releases, channels, devices whose desired state names them',
  );

  const listed =
    await admin.call<{ id: string; revoked: boolean; revokedReason: string | null; revokedKeys: string[] }[]>(
      'release.ls',
    );
  t.same(
    listed.map((r) => [r.id, r.revoked]),
    [
      ['det@1.0.0', true],
      ['det@2.0.0', true],
      ['det@3.0.0', false],
    ],
  );
  t.match(listed[0]?.revokedReason, new RegExp(`signed by ${a.keyId} \\(revoked\\)`));
  t.same(listed[0]?.revokedKeys, [a.keyId], 'the key that made it revoked');
  // As an operator reads it: the STATUS column names the key.
  const env = { OTA_URL: running.mqttUrl, OTA_HTTP_URL: running.httpUrl, OTA_USER: 'admin', OTA_TOKEN: token.token };
  const text = await otactl(['release', 'ls'], { env });
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, new RegExp(`det@2\\.0\\.0 .* revoked \\(key ${a.keyId}\\)`));
  t.match(text.stdout, /det@3\.0\.0 .* ok /);

  const named = {
    code: 'E_RELEASE_REVOKED',
    message: new RegExp(`det@2.0.0 is revoked: signed by ${a.keyId}.*new version`),
  };
  await t.rejects(admin.call('channel.set', { model: 'det', channel: 'canary', version: '2.0.0' }), named);
  await t.rejects(
    admin.call('rollout.create', { id: 'r-b', model: 'det', version: '2.0.0', devices: ['cam-1'], waves: '100' }),
    named,
  );
  await t.rejects(admin.call('rollout.approve', { id: 'r-a' }), { code: 'E_RELEASE_REVOKED', message: /abort/ });
  // release publish --channel: a new release signed by the revoked key alone is not published at all.
  await t.rejects(publish('4.0.0', 4, [a], 'canary'), { code: 'E_UNKNOWN_KEY' });
  t.match(
    await admin.call('channel.ls'),
    [{ id: 'det/stable', releaseId: 'det@1.0.0' }],
    'nothing moved: no canary channel, stable as it was',
  );
  t.equal((await admin.call<unknown[]>('channel.ls')).length, 1);

  // Enrolment: stable points at the revoked 1.0.0, so a new device gets no det.
  await admin.call('device.add', { id: 'cam-3' });
  const cam3 = await admin.call<{ desired: unknown[] }>('device.show', { id: 'cam-3' });
  t.same(cam3.desired, [], 'enrolment skips a revoked channel release');

  // Abort with revert: cam-1 would go back to 1.0.0 (its desired state before), now revoked:
  // its entry is removed instead, and the audit row says so.
  const aborted = await admin.call<RolloutSummary>('rollout.abort', { id: 'r-a', policy: 'revert' });
  t.equal(aborted.status, 'aborted');
  const shown = await Promise.all(
    ['cam-1', 'cam-2'].map((id) => admin.call<{ desired: { releaseId: string }[] }>('device.show', { id })),
  );
  const wave1 = shown.findIndex((d) => !d.desired.some((x) => x.releaseId === 'det@1.0.0'));
  t.not(wave1, -1, 'the reverted device does not name the revoked 1.0.0');
  t.same(shown[wave1]?.desired, [], 'its entry for det is removed: the agent keeps what it runs');
  t.same(
    shown[1 - wave1]?.desired.map((x) => x.releaseId),
    ['det@1.0.0'],
    'the device the rollout never touched keeps its desired state (left as assigned)',
  );
  const audit = await admin.call<AuditEvent[]>('audit.ls', { rolloutId: 'r-a' });
  t.match(audit.find((e) => e.action === 'rollout.aborted')?.details, { setBack: [{ version: null }] });

  // A release also signed by b is still assignable.
  const moved = await admin.call<{ retargeted: string[] }>('channel.set', {
    model: 'det',
    channel: 'stable',
    version: '3.0.0',
  });
  t.equal(moved.retargeted.length, 3);
});
