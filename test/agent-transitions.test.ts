import t from 'tap';
import { type AgentState, emptyRecord, initialState, type ModelRecord } from '../agent/core/agent-state.js';
import { type AgentEvent, type Effect, type StepContext, step } from '../agent/core/machine.js';
import {
  MACHINE_STATES,
  type MachineState,
  MODEL_EVENT_TYPES,
  type ModelEventType,
  machineState,
  TRANSITIONS,
  transitionFor,
} from '../agent/core/transitions.js';
import { MACHINE_NOW, machineContext } from './helpers/machine-context.js';
import { TestSigners } from './helpers/signing.js';

// The agent's transition table, pair by pair: every (state, event) pair is declared (a row, or
// ignored), and every pair is run through the real `step` from a state reached by the machine
// itself, checking that the outcome is the declared one.

/**
 * The declared table, written out: `state event -> the states it may end in`. Every pair not
 * listed is ignored (the state object comes back unchanged and no effect runs).
 */
const EXPECTED = `
  idle          assigned         downloading healthy failed
  downloading   assigned         downloading failed
  verifying     assigned         verifying downloading failed
  applying      assigned         applying downloading failed
  probing       assigned         probing downloading failed
  rolling_back  assigned         rolling_back
  healthy       assigned         healthy downloading failed
  rolled_back   assigned         rolled_back downloading healthy failed
  failed        assigned         failed downloading healthy
  idle          started          idle
  healthy       started          healthy
  rolled_back   started          rolled_back
  failed        started          failed
  downloading   started          downloading failed
  verifying     started          verifying failed
  applying      started          applying rolling_back failed
  probing       started          probing rolling_back failed
  rolling_back  started          rolling_back failed
  downloading   disk_checked     verifying downloading failed
  downloading   progress         downloading
  downloading   download_ok      verifying
  downloading   download_failed  downloading failed
  downloading   retry_due        downloading
  verifying     hashed           applying downloading failed
  verifying     hash_failed      downloading failed
  applying      applied          probing
  applying      apply_failed     failed
  probing       probe_passed     healthy
  probing       probe_failed     rolling_back
  rolling_back  rolled_back      rolled_back failed downloading healthy
  rolling_back  rollback_failed  failed downloading healthy
`;

const signers = new TestSigners();
const NOW = MACHINE_NOW;
const ctx: StepContext = machineContext(signers, { outboxLimit: 50 });
const v2 = new TextEncoder().encode('model v2 bytes');
const env2 = signers.release('det', '2.0', v2, { counter: 2, floor: 1 });
const env3 = signers.release('det', '3.0', new TextEncoder().encode('model v3'), { counter: 3 });
const env3x64 = signers.release('det', '3.1', new TextEncoder().encode('model v3 x64'), {
  counter: 3,
  requires: { arch: ['x64'] },
});
const sha2 = (JSON.parse(env2.manifest) as { sha256: string }).sha256;

function run(state: AgentState, ...events: AgentEvent[]): AgentState {
  for (const event of events) state = step(state, event, ctx).state;
  return state;
}
const det = (state: AgentState): ModelRecord => {
  const rec = state.models.det;
  if (!rec) throw new Error('no record for det');
  return rec;
};

// ---- every state, reached by the machine itself ----

function onV1(phase: 'idle' | 'healthy'): AgentState {
  const s = initialState();
  s.models.det = { ...emptyRecord(NOW, { current: '1.0', previous: null }), phase };
  return s;
}
const downloading = () => run(onV1('healthy'), desired(env2, 'r1'));
const g = (s: AgentState) => det(s).generation;
const verifying = () => {
  const s = downloading();
  return run(s, { type: 'download_ok', model: 'det', generation: g(s) });
};
const applying = () => {
  const s = verifying();
  return run(s, { type: 'hashed', model: 'det', generation: g(s), size: v2.length, sha256: sha2 });
};
const probing = () => {
  const s = applying();
  return run(s, { type: 'applied', model: 'det', generation: g(s) });
};
const rollingBack = () => {
  const s = probing();
  return run(s, {
    type: 'probe_failed',
    model: 'det',
    generation: g(s),
    error: { code: 'E_PROBE_FAILED', message: 'y' },
  });
};

const DEFERRED = 'probe failed, then 3.0 assigned';

/** Each state, by one or more routes (a `failed` record with a target and one without). */
const REACH: Record<MachineState, [string, () => AgentState][]> = {
  idle: [['adopted from disk', () => onV1('idle')]],
  downloading: [['assigned 2.0', downloading]],
  verifying: [['downloaded', verifying]],
  applying: [['verified', applying]],
  probing: [['applied', probing]],
  rolling_back: [
    ['probe failed', rollingBack],
    // A new release assigned during the rollback waits for it (the rows for `rolled_back` and
    // `rollback_failed` then take it up).
    [DEFERRED, () => run(rollingBack(), desired(env3, 'r2'))],
  ],
  healthy: [
    [
      'probe passed',
      () => {
        const s = probing();
        return run(s, { type: 'probe_passed', model: 'det', generation: g(s) });
      },
    ],
  ],
  rolled_back: [
    [
      'rolled back',
      () => {
        const s = rollingBack();
        return run(s, { type: 'rolled_back', model: 'det', generation: g(s) });
      },
    ],
  ],
  failed: [
    ['refused at assignment', () => run(onV1('healthy'), desired(env3x64, 'r1'))],
    [
      'download failed',
      () => {
        const s = downloading();
        return run(s, {
          type: 'download_failed',
          model: 'det',
          generation: g(s),
          error: { code: 'E_HTTP', message: 'x' },
        });
      },
    ],
  ],
};

function desired(envelope: typeof env2, rolloutId: string): AgentEvent {
  return { type: 'desired_message', message: signers.desired('cam-1', { det: { envelope, rolloutId } }) };
}

// ---- every event, in the variants that lead to different outcomes ----

interface Variant {
  name: string;
  /** Prepares the state (e.g. the loop guard's start count); the event is built from the record. */
  prepare?: (rec: ModelRecord) => ModelRecord;
  event: (rec: ModelRecord) => AgentEvent;
  /** Where this variant leaves a model in `from` (reached by `route`) when the pair has a row. */
  outcome: (from: MachineState, route: string) => MachineState;
  /** An effect this variant must queue when the pair has a row (none when it gives undefined). */
  effect?: Effect['type'] | ((from: MachineState, route: string) => Effect['type'] | undefined);
}

const at = (rec: ModelRecord) => ({ model: 'det', generation: rec.generation });
const stays = (from: MachineState) => from;
const to = (state: MachineState) => () => state;
const LOOP_GUARD: Partial<Record<MachineState, MachineState>> = {
  downloading: 'failed',
  verifying: 'failed',
  applying: 'rolling_back',
  probing: 'rolling_back',
  rolling_back: 'rolling_back',
};

const VARIANTS: Record<ModelEventType, Variant[]> = {
  started: [
    { name: 'resume', event: (rec) => ({ type: 'started', links: { det: rec.links } }), outcome: stays },
    {
      name: 'loop guard',
      prepare: (rec) => ({ ...rec, starts: ctx.limits.maxStarts }),
      event: (rec) => ({ type: 'started', links: { det: rec.links } }),
      outcome: (from) => LOOP_GUARD[from] ?? from,
    },
  ],
  assigned: [
    // While rolling back, an assignment waits for the rollback to finish.
    {
      name: 'a new release',
      event: () => desired(env3, 'r2'),
      outcome: (from) => (from === 'rolling_back' ? from : 'downloading'),
      effect: (from) => (from === 'rolling_back' ? undefined : 'download'),
    },
    {
      name: 'a release for another arch',
      event: () => desired(env3x64, 'r2'),
      outcome: (from) => (from === 'rolling_back' ? from : 'failed'),
    },
  ],
  disk_checked: [
    {
      name: 'already installed',
      event: (rec) => ({ type: 'disk_checked', ...at(rec), installed: true, freeBytes: 0, stagedBytes: 0 }),
      outcome: to('verifying'),
      effect: 'hash_staged',
    },
    {
      name: 'room enough',
      event: (rec) => ({ type: 'disk_checked', ...at(rec), installed: false, freeBytes: 1 << 20, stagedBytes: 0 }),
      outcome: to('downloading'),
      effect: 'fetch',
    },
    {
      name: 'disk full',
      event: (rec) => ({ type: 'disk_checked', ...at(rec), installed: false, freeBytes: 10, stagedBytes: 0 }),
      outcome: to('failed'),
    },
  ],
  progress: [
    {
      name: 'bytes',
      event: (rec) => ({ type: 'progress', ...at(rec), bytes: 3, total: 9 }),
      outcome: to('downloading'),
    },
  ],
  download_ok: [
    {
      name: 'fetched',
      event: (rec) => ({ type: 'download_ok', ...at(rec) }),
      outcome: to('verifying'),
      effect: 'hash_staged',
    },
  ],
  download_failed: [
    {
      name: 'stalled',
      event: (rec) => ({ type: 'download_failed', ...at(rec), error: { code: 'E_DOWNLOAD_STALLED', message: 's' } }),
      outcome: to('downloading'),
      effect: 'retry_later',
    },
    {
      name: 'too many bytes',
      event: (rec) => ({ type: 'download_failed', ...at(rec), error: { code: 'E_SIZE', message: 'more' } }),
      outcome: to('downloading'),
      effect: 'discard_staged',
    },
    {
      name: 'not retryable',
      event: (rec) => ({ type: 'download_failed', ...at(rec), error: { code: 'E_INTERNAL', message: 'bug' } }),
      outcome: to('failed'),
    },
  ],
  retry_due: [
    {
      name: 'due',
      event: (rec) => ({ type: 'retry_due', ...at(rec) }),
      outcome: to('downloading'),
      effect: 'download',
    },
  ],
  hashed: [
    {
      name: 'the signed bytes',
      event: (rec) => ({ type: 'hashed', ...at(rec), size: v2.length, sha256: sha2 }),
      outcome: to('applying'),
      effect: 'apply',
    },
    {
      name: 'other bytes',
      event: (rec) => ({ type: 'hashed', ...at(rec), size: v2.length, sha256: '0'.repeat(64) }),
      outcome: to('downloading'),
      effect: 'discard_staged',
    },
    {
      name: 'hostile content',
      event: (rec) => ({
        type: 'hashed',
        ...at(rec),
        size: v2.length,
        sha256: sha2,
        refusal: { code: 'E_EXTERNAL_DATA', message: 'x' },
      }),
      outcome: to('failed'),
      effect: 'discard_staged',
    },
  ],
  hash_failed: [
    {
      name: 'unreadable',
      event: (rec) => ({ type: 'hash_failed', ...at(rec), error: { code: 'E_IO', message: 'x' } }),
      outcome: to('downloading'),
      effect: 'discard_staged',
    },
  ],
  applied: [
    { name: 'swapped', event: (rec) => ({ type: 'applied', ...at(rec) }), outcome: to('probing'), effect: 'probe' },
  ],
  apply_failed: [
    {
      name: 'install failed',
      event: (rec) => ({ type: 'apply_failed', ...at(rec), error: { code: 'E_APPLY', message: 'x' } }),
      outcome: to('failed'),
    },
  ],
  probe_passed: [
    { name: 'passed', event: (rec) => ({ type: 'probe_passed', ...at(rec) }), outcome: to('healthy'), effect: 'gc' },
  ],
  probe_failed: [
    {
      name: 'failed',
      event: (rec) => ({ type: 'probe_failed', ...at(rec), error: { code: 'E_PROBE_NONFINITE', message: 'NaN' } }),
      outcome: to('rolling_back'),
      effect: 'rollback',
    },
  ],
  rolled_back: [
    {
      name: 'restored',
      event: (rec) => ({ type: 'rolled_back', ...at(rec) }),
      // The release assigned during the rollback is taken up once it is done.
      outcome: (_from, route) => (route === DEFERRED ? 'downloading' : 'rolled_back'),
      effect: 'gc',
    },
  ],
  rollback_failed: [
    {
      name: 'could not restore',
      event: (rec) => ({ type: 'rollback_failed', ...at(rec), error: { code: 'E_IO', message: 'x' } }),
      outcome: (_from, route) => (route === DEFERRED ? 'downloading' : 'failed'),
    },
  ],
};

const expected = new Map<string, string>();
for (const line of EXPECTED.trim().split('\n')) {
  const [state, event, ...next] = line.trim().split(/\s+/);
  expected.set(`${state} ${event}`, next.join(' '));
}

t.test('the table declares exactly the pairs written out above; every other pair is ignored', async (t) => {
  t.equal(MACHINE_STATES.length * MODEL_EVENT_TYPES.length, 9 * 15, 'nine states, fifteen events');
  for (const state of MACHINE_STATES) {
    for (const event of MODEL_EVENT_TYPES) {
      const declared = transitionFor(state, event)?.to.join(' ') ?? 'ignored';
      t.equal(declared, expected.get(`${state} ${event}`) ?? 'ignored', `${state} + ${event}`);
    }
  }
  t.equal(TRANSITIONS.length, expected.size, 'no row declared twice');
  t.equal(new Set(TRANSITIONS.map((r) => `${r.from} ${r.on}`)).size, TRANSITIONS.length);
});

t.test('every (state, event) pair does what the table declares', async (t) => {
  let pairs = 0;
  for (const state of MACHINE_STATES) {
    for (const [route, reach] of REACH[state]) {
      const base = reach();
      t.equal(machineState(det(base)), state, `fixture "${route}" is ${state}`);
      for (const event of MODEL_EVENT_TYPES) {
        pairs++;
        const row = transitionFor(state, event);
        for (const variant of VARIANTS[event]) {
          const name = `${state} (${route}) + ${event} (${variant.name})`;
          const before: AgentState = variant.prepare
            ? { ...base, models: { ...base.models, det: variant.prepare(det(base)) } }
            : base;
          const r = step(before, variant.event(det(before)), ctx);
          if (!row) {
            t.equal(r.state, before, `${name}: ignored, state unchanged`);
            t.same(r.effects, [], `${name}: ignored, nothing runs`);
            continue;
          }
          const after = machineState(det(r.state));
          t.ok(row.to.includes(after), `${name}: ends in ${after}, one of ${row.to.join(', ')}`);
          const outcome = variant.outcome(state, route);
          t.equal(after, outcome, `${name}: ends in ${outcome}`);
          const effect = typeof variant.effect === 'function' ? variant.effect(state, route) : variant.effect;
          if (effect) {
            t.ok(
              r.effects.some((e) => e.type === effect),
              `${name}: runs ${effect}`,
            );
          }
          if (r.state !== before) {
            t.equal(r.state.outbox.at(-1)?.models.det?.state, det(r.state).phase, `${name}: reported`);
          }
        }
      }
    }
  }
  t.equal(pairs, 11 * 15, 'every pair, for every route into a state');
});

t.test('an outcome for an older assignment is ignored in every state', async (t) => {
  for (const state of MACHINE_STATES) {
    for (const [route, reach] of REACH[state]) {
      const before = reach();
      for (const event of MODEL_EVENT_TYPES) {
        for (const variant of VARIANTS[event]) {
          const e = variant.event(det(before));
          if (!('generation' in e)) continue;
          const stale = { ...e, generation: e.generation - 1 };
          const r = step(before, stale, ctx);
          t.equal(r.state, before, `${state} (${route}) + stale ${event} (${variant.name})`);
          t.same(r.effects, []);
        }
      }
    }
  }
});
