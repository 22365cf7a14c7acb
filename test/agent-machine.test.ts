import t from 'tap';
import { type AgentState, emptyRecord, initialState } from '../agent/core/agent-state.js';
import { type AgentEvent, backoffMs, type Effect, type StepContext, step } from '../agent/core/machine.js';
import { MACHINE_NOW, machineContext } from './helpers/machine-context.js';
import { TestSigners } from './helpers/signing.js';

// Table-driven tests of the agent's pure core: every transition, with the clock passed in.

const signers = new TestSigners();
const NOW = MACHINE_NOW;
const ctx: StepContext = machineContext(signers);
const v1 = new TextEncoder().encode('model v1');
const v2 = new TextEncoder().encode('model v2 bytes');
const env1 = signers.release('det', '1.0', v1, { counter: 1 });
const env2 = signers.release('det', '2.0', v2, { counter: 2, floor: 1 });
const sha = (envelope: typeof env1) => (JSON.parse(envelope.manifest) as { sha256: string }).sha256;

/** Runs events in order, returning the last state and every effect. */
function run(state: AgentState, ...events: AgentEvent[]): { state: AgentState; effects: Effect[] } {
  let effects: Effect[] = [];
  for (const event of events) {
    const r = step(state, event, ctx);
    state = r.state;
    effects = effects.concat(r.effects);
  }
  return { state, effects };
}
const types = (effects: Effect[]) => effects.map((e) => e.type);
const desired = (envelope = env2, rolloutId: string | null = 'r1', seq?: number): AgentEvent => ({
  type: 'desired_message',
  message: signers.desired('cam-1', { det: { envelope, rolloutId } }, seq),
});

/** A device running v1 (healthy) and now assigned v2. */
function assignedV2() {
  const start = initialState();
  start.models.det = { ...emptyRecord(NOW, { current: '1.0', previous: null }), phase: 'healthy' };
  return run(start, desired());
}

t.test('a valid desired state starts the download and queues a report', async (t) => {
  const { state, effects } = assignedV2();
  const rec = state.models.det;
  t.equal(rec?.phase, 'downloading');
  t.equal(rec?.target?.version, '2.0');
  t.equal(rec?.attempt, 1);
  t.equal(rec?.rolloutId, 'r1');
  t.same(types(effects), ['download', 'report']);
  t.equal(state.outbox.length, 1);
  t.match(state.outbox[0], {
    deviceId: 'cam-1',
    models: { det: { state: 'downloading', version: '2.0', current: '1.0' } },
  });
  t.equal(state.lastSeq > 0, true);
});

t.test('the happy path: download -> verify -> apply -> probe -> healthy', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const b = run(a.state, { type: 'download_ok', model: 'det', generation: gen });
  t.equal(b.state.models.det?.phase, 'verifying');
  t.same(types(b.effects), ['hash_staged', 'report']);
  const c = run(b.state, { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) });
  t.equal(c.state.models.det?.phase, 'applying');
  t.same(c.state.models.det?.rollbackTo, { current: '1.0', previous: null });
  t.equal(c.state.floors.det, 1, 'the verified floor is persisted');
  t.match(c.effects[0], { type: 'apply', rollbackTo: { current: '1.0', previous: null } });
  const d = run(c.state, { type: 'applied', model: 'det', generation: gen });
  t.equal(d.state.models.det?.phase, 'probing');
  t.same(d.state.models.det?.links, { current: '2.0', previous: '1.0' });
  t.same(types(d.effects), ['probe', 'report']);
  const e = run(d.state, { type: 'probe_passed', model: 'det', generation: gen });
  t.equal(e.state.models.det?.phase, 'healthy');
  t.equal(e.state.models.det?.rollbackTo, null);
  t.match(e.effects[0], { type: 'gc', keep: ['2.0', '1.0'] });
  t.same(
    e.state.outbox.map((r) => r.models.det?.state),
    ['downloading', 'verifying', 'applying', 'probing', 'healthy'],
    'one report per transition',
  );
});

t.test('probe failure rolls back to exactly the links before the swap', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const d = run(
    a.state,
    { type: 'download_ok', model: 'det', generation: gen },
    { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) },
    { type: 'applied', model: 'det', generation: gen },
  );
  const f = run(d.state, {
    type: 'probe_failed',
    model: 'det',
    generation: gen,
    error: { code: 'E_PROBE_FAILED', message: 'y[0]' },
  });
  t.equal(f.state.models.det?.phase, 'probing', 'stays probing until the rollback is done');
  t.equal(f.state.models.det?.error?.code, 'E_PROBE_FAILED');
  t.match(f.effects[0], { type: 'rollback', rollbackTo: { current: '1.0', previous: null } });
  const g = run(f.state, { type: 'rolled_back', model: 'det', generation: gen });
  t.equal(g.state.models.det?.phase, 'rolled_back');
  t.same(g.state.models.det?.links, { current: '1.0', previous: null });
  t.match(g.state.outbox.at(-1)?.models.det, {
    state: 'rolled_back',
    version: '2.0',
    current: '1.0',
    error: { code: 'E_PROBE_FAILED' },
  });
  const h = run(g.state, {
    type: 'rollback_failed',
    model: 'det',
    generation: gen,
    error: { code: 'E_IO', message: 'x' },
  });
  t.equal(h.state, g.state, 'a late rollback_failed after rolled_back changes nothing');
});

t.test('rollback failure is failed with E_ROLLBACK and both reasons', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const r = run(
    a.state,
    { type: 'download_ok', model: 'det', generation: gen },
    { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) },
    { type: 'applied', model: 'det', generation: gen },
    { type: 'probe_failed', model: 'det', generation: gen, error: { code: 'E_PROBE_NONFINITE', message: 'NaN' } },
    { type: 'rollback_failed', model: 'det', generation: gen, error: { code: 'E_IO', message: 'disk gone' } },
  );
  t.equal(r.state.models.det?.phase, 'failed');
  t.match(r.state.models.det?.error, {
    code: 'E_ROLLBACK',
    message: /E_PROBE_NONFINITE: NaN; rollback failed: disk gone/,
  });
});

t.test('signed bytes whose content the inspection refuses are failed at once, never applied', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const refusal = { code: 'E_EXTERNAL_DATA', message: 'tensor "W" points outside the model directory' } as const;
  const r = run(
    a.state,
    { type: 'download_ok', model: 'det', generation: gen },
    { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2), refusal },
  );
  t.equal(r.state.models.det?.phase, 'failed');
  t.same(r.state.models.det?.error, refusal);
  t.same(r.state.models.det?.links, a.state.models.det?.links, 'links untouched');
  t.ok(
    r.effects.some((e) => e.type === 'discard_staged'),
    'the staged bytes are thrown away',
  );
  t.notOk(
    r.effects.some((e) => e.type === 'apply' || e.type === 'retry_later'),
    'neither applied nor retried',
  );
});

t.test('an unreachable server is waited for without using up attempts', async (t) => {
  let { state } = assignedV2();
  const gen = state.models.det?.generation as number;
  const unreachable = { code: 'E_UNREACHABLE', message: 'connect ECONNREFUSED' } as const;
  for (let i = 0; i < 20; i++) {
    const r = run(state, {
      type: 'download_failed',
      model: 'det',
      generation: gen,
      error: unreachable,
    });
    state = r.state;
    t.equal(state.models.det?.phase, 'downloading');
    t.ok(r.effects.some((e) => e.type === 'retry_later'));
    state = run(state, { type: 'retry_due', model: 'det', generation: gen }).state;
  }
  t.equal(state.models.det?.attempt, 1, 'twenty refusals later, still the first attempt');
  t.same(state.models.det?.error, unreachable, 'the reason is reported meanwhile');
  const other = { code: 'E_DOWNLOAD', message: 'HTTP 500' } as const;
  state = run(state, { type: 'download_failed', model: 'det', generation: gen, error: other }).state;
  t.equal(state.models.det?.attempt, 2, 'a server that answers badly does use an attempt');
});

t.test('bytes that do not match are fetched again, a bounded number of times', async (t) => {
  let { state } = assignedV2();
  const gen = state.models.det?.generation as number;
  const bad = { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: '0'.repeat(64) } as const;
  const delays: number[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    const r = run(state, { type: 'download_ok', model: 'det', generation: gen }, bad);
    state = r.state;
    const retry = r.effects.find((e) => e.type === 'retry_later');
    if (attempt < 3) {
      t.equal(state.models.det?.phase, 'downloading', `attempt ${attempt}: back to downloading`);
      t.ok(
        r.effects.some((e) => e.type === 'discard_staged'),
        'the bad bytes are discarded',
      );
      delays.push((retry as { delayMs: number }).delayMs);
      state = run(state, { type: 'retry_due', model: 'det', generation: gen }).state;
    } else {
      t.equal(state.models.det?.phase, 'failed');
      t.equal(state.models.det?.error?.code, 'E_DIGEST');
    }
  }
  t.same(delays, [1000, 2000], 'exponential backoff');
  t.equal(backoffMs(10, ctx.limits), 8000, 'capped');
});

t.test('download errors: transient ones retried, others fail at once', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const transient = run(a.state, {
    type: 'download_failed',
    model: 'det',
    generation: gen,
    error: { code: 'E_DOWNLOAD_STALLED', message: 'stalled' },
  });
  t.equal(transient.state.models.det?.phase, 'downloading');
  t.equal(transient.state.models.det?.attempt, 2);
  t.match(transient.state.outbox.at(-1)?.models.det, { attempt: 2, error: { code: 'E_DOWNLOAD_STALLED' } });
  t.match(transient.effects[0], { type: 'retry_later', delayMs: 1000 });
  const due = run(transient.state, { type: 'retry_due', model: 'det', generation: gen });
  t.same(types(due.effects), ['download']);
  const disk = run(a.state, {
    type: 'download_failed',
    model: 'det',
    generation: gen,
    error: { code: 'E_DISK_SPACE', message: 'full' },
  });
  t.equal(disk.state.models.det?.phase, 'failed');
  t.equal(disk.state.models.det?.links.current, '1.0', 'current untouched');
});

t.test('attacks on the assignment are refused before any byte is fetched', async (t) => {
  const other = new TestSigners();
  const cases: [string, AgentEvent, string][] = [
    ['unknown release key', desired(other.release('det', '2.0', v2)), 'E_UNKNOWN_KEY'],
    ['manifest for another model', desired(signers.release('other', '2.0', v2)), 'E_MODEL_MISMATCH'],
    [
      'expired manifest',
      desired(
        signers.release('det', '2.0', v2, { createdAt: '2026-01-01T00:00:00Z', expiresAt: '2026-02-01T00:00:00Z' }),
      ),
      'E_EXPIRED',
    ],
    [
      'needs another arch',
      desired(signers.release('det', '2.0', v2, { requires: { arch: ['x64'] } })),
      'E_REQUIREMENTS',
    ],
    ['bigger than the device cap', desired(signers.release('det', '2.0', v2, { size: 2_000_000 })), 'E_SIZE'],
  ];
  for (const [name, event, code] of cases) {
    const start = initialState();
    start.models.det = { ...emptyRecord(NOW, { current: '1.0', previous: null }), phase: 'healthy' };
    const r = run(start, event);
    t.equal(r.state.models.det?.phase, 'failed', name);
    t.equal(r.state.models.det?.error?.code, code, name);
    t.equal(r.state.models.det?.links.current, '1.0', `${name}: current untouched`);
    t.notOk(
      r.effects.some((e) => e.type === 'download'),
      `${name}: nothing downloaded`,
    );
  }
  // Tampered envelope signature.
  const tampered = { ...env2, manifest: env2.manifest.replace('"2.0"', '"2.1"') };
  t.equal(run(initialState(), desired(tampered)).state.models.det?.error?.code, 'E_SIGNATURE');
  // Counter below the floor the device already verified.
  const floored = initialState();
  floored.floors.det = 5;
  t.equal(run(floored, desired(env2)).state.models.det?.error?.code, 'E_FLOOR');
});

t.test('a refused release is reported failed with the version it refused', async (t) => {
  // docs/protocol.md: `version` is the version the state is about. A release this device cannot
  // take (another architecture, too little memory) must be named, or the operator (and the
  // rollout, which counts reports by version) cannot tell which release it refused.
  const cases: [string, ReturnType<typeof signers.release>, string][] = [
    ['another architecture', signers.release('det', '2.0-x64', v2, { requires: { arch: ['x64'] } }), 'E_REQUIREMENTS'],
    [
      'too little memory',
      signers.release('det', '2.0-big', v2, { requires: { minMemoryMB: 64_000 } }),
      'E_REQUIREMENTS',
    ],
    ['bigger than the device cap', signers.release('det', '2.0-huge', v2, { size: 2_000_000 }), 'E_SIZE'],
    ['an unknown release key', new TestSigners().release('det', '2.0-other', v2), 'E_UNKNOWN_KEY'],
  ];
  for (const [name, envelope, code] of cases) {
    const version = (JSON.parse(envelope.manifest) as { version: string }).version;
    const start = initialState();
    start.models.det = { ...emptyRecord(NOW, { current: '1.0', previous: null }), phase: 'healthy' };
    const r = run(start, desired(envelope, 'r7'));
    t.match(
      r.state.outbox.at(-1)?.models.det,
      { state: 'failed', version, current: '1.0', rolloutId: 'r7', error: { code } },
      `${name}: failed, naming ${version}`,
    );
    t.equal(r.state.models.det?.target, null, `${name}: nothing accepted`);
    // The next release it can take clears the refused version.
    const next = run(r.state, desired(env2, 'r8'));
    t.match(next.state.outbox.at(-1)?.models.det, { state: 'downloading', version: '2.0' });
    t.equal(next.state.models.det?.refusedVersion, null);
  }
  // A version that could not go into a report (a path) is not repeated: the report stays valid.
  const manifest = JSON.parse(env2.manifest) as Record<string, unknown>;
  const unsafe = { ...env2, manifest: JSON.stringify({ ...manifest, version: '../../evil' }) };
  const r = run(initialState(), desired(unsafe));
  t.match(r.state.outbox.at(-1)?.models.det, { state: 'failed', version: null });
});

t.test('desired-state messages: retained copy ignored, replay and strangers refused', async (t) => {
  const first = desired(env2, 'r1', 10);
  const a = run(initialState(), first);
  t.equal(a.state.lastSeq, 10);
  const again = step(a.state, first, ctx);
  t.equal(again.state, a.state, 'the same retained text again is nothing new');
  t.same(again.effects, []);
  const replay = run(a.state, desired(env1, 'r0', 9));
  t.equal(replay.state.rejected?.error.code, 'E_REPLAY');
  t.equal(replay.state.rejected?.seq, 9);
  t.equal(replay.state.models.det?.target?.version, '2.0', 'the replay changed nothing');
  t.match(replay.state.outbox.at(-1), { rejected: { error: { code: 'E_REPLAY' } } });
  const stranger = new TestSigners();
  const forged: AgentEvent = {
    type: 'desired_message',
    message: stranger.desired('cam-1', { det: { envelope: env1 } }, 50),
  };
  t.equal(run(a.state, forged).state.rejected?.error.code, 'E_UNKNOWN_KEY');
  const otherDevice: AgentEvent = {
    type: 'desired_message',
    message: signers.desired('cam-2', { det: { envelope: env1 } }, 51),
  };
  t.equal(run(a.state, otherDevice).state.rejected?.error.code, 'E_WRONG_DEVICE');
  const invalid = run(a.state, { type: 'desired_invalid', error: { code: 'E_PAYLOAD_JSON', message: 'x' } });
  t.equal(invalid.state.rejected?.error.code, 'E_PAYLOAD_JSON');
});

t.test('a new assignment supersedes work in progress; stale results are ignored', async (t) => {
  const a = assignedV2();
  const oldGen = a.state.models.det?.generation as number;
  const env3 = signers.release('det', '3.0', new TextEncoder().encode('v3'), { counter: 3 });
  const b = run(a.state, desired(env3, 'r2'));
  t.equal(b.state.models.det?.generation, oldGen + 1);
  t.equal(b.state.models.det?.target?.version, '3.0');
  const stale = step(b.state, { type: 'download_ok', model: 'det', generation: oldGen }, ctx);
  t.equal(stale.state, b.state, 'result of the old generation ignored');
  // Same bytes, new rollout label, while in progress: keep going under the new label.
  const relabel = run(b.state, desired(env3, 'r3'));
  t.equal(relabel.state.models.det?.rolloutId, 'r3');
  t.equal(relabel.state.models.det?.generation, oldGen + 1);
  t.notOk(relabel.effects.some((e) => e.type === 'download'));
});

t.test('assigned the version it already runs: healthy without a pipeline', async (t) => {
  const start = initialState();
  start.models.det = { ...emptyRecord(NOW, { current: '1.0', previous: null }), phase: 'idle' };
  const r = run(start, desired(env1, 'r9'));
  t.equal(r.state.models.det?.phase, 'healthy');
  t.same(types(r.effects), ['report']);
});

t.test('restart resumes the step it was in; the loop guard stops a crashing update', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const phases: [string, AgentEvent[], Effect['type']][] = [
    ['downloading', [], 'download'],
    ['verifying', [{ type: 'download_ok', model: 'det', generation: gen }], 'hash_staged'],
    [
      'applying',
      [
        { type: 'download_ok', model: 'det', generation: gen },
        { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) },
      ],
      'apply',
    ],
    [
      'probing',
      [
        { type: 'download_ok', model: 'det', generation: gen },
        { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) },
        { type: 'applied', model: 'det', generation: gen },
      ],
      'probe',
    ],
  ];
  for (const [phase, events, effect] of phases) {
    const before = run(a.state, ...events).state;
    t.equal(before.models.det?.phase, phase);
    const links = { det: before.models.det?.links ?? { current: null, previous: null } };
    const once = run(before, { type: 'started', links });
    t.ok(types(once.effects).includes(effect), `${phase}: resumes with ${effect}`);
    t.equal(once.state.models.det?.starts, 1);
    const twice = run(once.state, { type: 'started', links });
    const thrice = run(twice.state, { type: 'started', links });
    if (phase === 'probing' || phase === 'applying') {
      // The links may already point at the new version: the loop guard restores the old ones.
      t.match(thrice.effects[0], { type: 'rollback' }, `${phase}: the loop guard rolls back`);
      const done = run(thrice.state, { type: 'rolled_back', model: 'det', generation: gen });
      t.equal(done.state.models.det?.phase, 'failed');
      t.equal(done.state.models.det?.error?.code, 'E_CRASH_LOOP');
      t.equal(done.state.models.det?.links.current, '1.0');
    } else {
      t.equal(thrice.state.models.det?.phase, 'failed', `${phase}: loop guard`);
      t.equal(thrice.state.models.det?.error?.code, 'E_CRASH_LOOP');
    }
  }
  // A restart while rolling back redoes the rollback, not the probe.
  const rolling = run(
    a.state,
    { type: 'download_ok', model: 'det', generation: gen },
    { type: 'hashed', model: 'det', generation: gen, size: v2.length, sha256: sha(env2) },
    { type: 'applied', model: 'det', generation: gen },
    { type: 'probe_failed', model: 'det', generation: gen, error: { code: 'E_PROBE_TIMEOUT', message: 't' } },
  ).state;
  t.match(run(rolling, { type: 'started', links: {} }).effects[0], { type: 'rollback' });
  // The links read from disk replace the mirrors.
  const disk = run(a.state, { type: 'started', links: { det: { current: 'x', previous: null } } });
  t.same(disk.state.models.det?.links, { current: 'x', previous: null });
});

t.test('progress is recorded only while downloading and for the live generation', async (t) => {
  const a = assignedV2();
  const gen = a.state.models.det?.generation as number;
  const p = run(a.state, { type: 'progress', model: 'det', generation: gen, bytes: 5, total: v2.length });
  t.same(p.state.outbox.at(-1)?.models.det?.progress, { bytes: 5, total: v2.length });
  t.equal(
    step(p.state, { type: 'progress', model: 'det', generation: gen - 1, bytes: 9, total: 9 }, ctx).state,
    p.state,
  );
});

// ---- assignments that arrive while a rollback runs (issue 11 B) ----

const v3 = new TextEncoder().encode('model v3');
const env3 = signers.release('det', '3.0', v3, { counter: 3 });
const gen = (state: AgentState) => state.models.det?.generation as number;

/** v1 healthy, v2 assigned, v2 failed its probe: rolling back to {1.0, null}, the rollback effect running. */
function rollingBackV2() {
  const a = assignedV2();
  const g0 = gen(a.state);
  return run(
    a.state,
    { type: 'download_ok', model: 'det', generation: g0 },
    { type: 'hashed', model: 'det', generation: g0, size: v2.length, sha256: sha(env2) },
    { type: 'applied', model: 'det', generation: g0 },
    { type: 'probe_failed', model: 'det', generation: g0, error: { code: 'E_PROBE_NONFINITE', message: 'NaN' } },
  ).state;
}

/** Drives the update in progress through download, verify and apply; returns the state in `probing`. */
function installInProgress(state: AgentState, envelope: typeof env1, bytes: Uint8Array) {
  const g1 = gen(state);
  return run(
    state,
    { type: 'download_ok', model: 'det', generation: g1 },
    { type: 'hashed', model: 'det', generation: g1, size: bytes.length, sha256: sha(envelope) },
    { type: 'applied', model: 'det', generation: g1 },
  );
}

t.test('a new version assigned during a rollback that also fails: back on the last healthy version', async (t) => {
  const rolling = rollingBackV2();
  t.same(rolling.models.det?.links, { current: '2.0', previous: '1.0' }, 'the record still names 2.0 mid-rollback');
  const during = run(rolling, desired(env3, 'r2'));
  t.equal(during.state.models.det?.phase, 'probing', 'the assignment waits: still rolling back');
  t.equal(during.state.models.det?.error?.code, 'E_PROBE_NONFINITE');
  t.notOk(
    during.effects.some((e) => e.type === 'download'),
    'nothing downloaded while the links are being restored',
  );
  // The rollback finishes: the restored links are recorded, then 3.0 is taken up from them.
  const done = run(during.state, { type: 'rolled_back', model: 'det', generation: gen(during.state) });
  t.equal(done.state.models.det?.phase, 'downloading');
  t.equal(done.state.models.det?.target?.version, '3.0');
  t.equal(done.state.models.det?.rolloutId, 'r2');
  t.same(done.state.models.det?.links, { current: '1.0', previous: null });
  t.match(
    done.effects.find((e) => e.type === 'gc'),
    { keep: ['1.0', '3.0'] },
    'the gc keeps the version being downloaded',
  );
  t.match(
    done.state.outbox.at(-2)?.models.det,
    { state: 'rolled_back', version: '2.0', current: '1.0', rolloutId: 'r1' },
    '2.0 is reported rolled back under its own rollout',
  );
  const probing = installInProgress(done.state, env3, v3);
  t.match(
    probing.effects.find((e) => e.type === 'apply'),
    { rollbackTo: { current: '1.0', previous: null } },
    '3.0 is installed over the restored links, never over the failed 2.0',
  );
  t.same(probing.state.models.det?.links, { current: '3.0', previous: '1.0' });
  const g3 = gen(probing.state);
  const failed = run(
    probing.state,
    { type: 'probe_failed', model: 'det', generation: g3, error: { code: 'E_PROBE_FAILED', message: 'y' } },
    { type: 'rolled_back', model: 'det', generation: g3 },
  );
  t.equal(failed.state.models.det?.phase, 'rolled_back');
  t.same(failed.state.models.det?.links, { current: '1.0', previous: null }, 'on 1.0, the last healthy version');
});

t.test('a revert to the version the rollback restores, during the rollback: healthy on it, no pipeline', async (t) => {
  const rolling = rollingBackV2();
  const during = run(rolling, desired(env1, null));
  t.equal(during.state.models.det?.phase, 'probing', 'waits for the rollback');
  const done = run(during.state, { type: 'rolled_back', model: 'det', generation: gen(during.state) });
  t.match(done.state.models.det, {
    phase: 'healthy',
    target: { version: '1.0' },
    rolloutId: null,
    error: null,
    links: { current: '1.0', previous: null },
  });
  t.same(types(done.effects).sort(), ['gc', 'report'], 'nothing downloaded, installed or probed');
  t.match(done.state.outbox.at(-1)?.models.det, { state: 'healthy', version: '1.0', current: '1.0' });
  // The next update starts from the healthy links: the failed 2.0 is nowhere in its rollback target.
  const next = installInProgress(run(done.state, desired(env3, 'r3')).state, env3, v3);
  t.match(next.state.models.det?.rollbackTo, { current: '1.0', previous: null });
});

t.test('the same revert after the rollback finished ends the same way', async (t) => {
  const rolling = rollingBackV2();
  const done = run(rolling, { type: 'rolled_back', model: 'det', generation: gen(rolling) });
  const reverted = run(done.state, desired(env1, null));
  t.match(reverted.state.models.det, { phase: 'healthy', links: { current: '1.0', previous: null } });
  t.same(types(reverted.effects), ['report']);
});

t.test('the failed candidate again during its rollback', async (t) => {
  const rolling = rollingBackV2();
  // The same assignment again (a re-sent desired state): nothing new; the rollback ends as it would.
  const same = run(rolling, desired(env2, 'r1'));
  const sameDone = run(same.state, { type: 'rolled_back', model: 'det', generation: gen(same.state) });
  t.match(sameDone.state.models.det, { phase: 'rolled_back', links: { current: '1.0', previous: null } });
  // Under a new rollout: taken up after the rollback, from the restored links; failing again
  // lands on 1.0 again.
  const again = run(rolling, desired(env2, 'r4'));
  t.equal(again.state.models.det?.phase, 'probing');
  const retried = run(again.state, { type: 'rolled_back', model: 'det', generation: gen(again.state) });
  t.match(retried.state.models.det, { phase: 'downloading', rolloutId: 'r4', links: { current: '1.0' } });
  const probing = installInProgress(retried.state, env2, v2);
  t.match(probing.state.models.det?.rollbackTo, { current: '1.0', previous: null });
  const g = gen(probing.state);
  const end = run(
    probing.state,
    { type: 'probe_failed', model: 'det', generation: g, error: { code: 'E_PROBE_NONFINITE', message: 'NaN' } },
    { type: 'rolled_back', model: 'det', generation: g },
  );
  t.match(end.state.models.det, { phase: 'rolled_back', rolloutId: 'r4', links: { current: '1.0', previous: null } });
});

t.test('an assignment waiting for a rollback survives a restart and a failed rollback', async (t) => {
  const during = run(rollingBackV2(), desired(env3, 'r2')).state;
  // Restarted mid-rollback: the rollback is redone first (the disk may still say 2.0).
  const restarted = run(during, { type: 'started', links: { det: { current: '2.0', previous: '1.0' } } });
  t.match(restarted.effects[0], { type: 'rollback', rollbackTo: { current: '1.0', previous: null } });
  const done = run(restarted.state, { type: 'rolled_back', model: 'det', generation: gen(restarted.state) });
  t.match(done.state.models.det, { phase: 'downloading', target: { version: '3.0' }, links: { current: '1.0' } });
  // The rollback itself failed: reported failed (E_ROLLBACK), then the waiting assignment is taken up.
  const broken = run(during, {
    type: 'rollback_failed',
    model: 'det',
    generation: gen(during),
    error: { code: 'E_IO', message: 'disk gone' },
  });
  t.match(broken.state.outbox.at(-2)?.models.det, { state: 'failed', version: '2.0', error: { code: 'E_ROLLBACK' } });
  t.match(broken.state.models.det, { phase: 'downloading', target: { version: '3.0' } });
});
