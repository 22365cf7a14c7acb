import { createHash } from 'node:crypto';
import t from 'tap';
import { decide, decideBatch } from '../coordinator/rollout/decide.js';
import { indexDevices, LiveDeviceIndex } from '../coordinator/rollout/device-index.js';
import { planWaves, waveCuts } from '../coordinator/rollout/plan-waves.js';
import { parseWaves, validateStrategy } from '../coordinator/rollout/strategy.js';
import { summarize } from '../coordinator/rollout/summary.js';
import type {
  Decision,
  Rollout,
  RolloutDevice,
  RolloutDeviceState,
  RolloutEvent,
  Strategy,
} from '../coordinator/rollout/types.js';
import type { ModelState, RolloutStatus } from '../shared/messages.js';
import { RolloutSummarySchema } from '../shared/messages.js';
import { rolloutRecord } from './helpers/rollout-record.js';

// ---------------------------------------------------------------------------------------------
// fixtures

const T0 = Date.parse('2026-11-26T10:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const CREATED = at(0);
const OLD = 'detector@1.0.0';
const EMPTY: Decision = { patch: {}, devices: [], assignments: [], audit: [], channelMove: null };

function rolloutOf(waves: string, maxFailureRate = 0, extra: Partial<Rollout> = {}): Rollout {
  return rolloutRecord({
    id: 'r1',
    model: 'detector',
    version: '2.0.0',
    releaseId: 'detector@2.0.0',
    strategy: { waves: parseWaves(waves), maxFailureRate },
    createdAt: CREATED,
    updatedAt: CREATED,
    ...extra,
  });
}

/** Devices d0, d1, ... with the given wave indexes, online, pending. */
function fleet(waves: number[], previous: (i: number) => string | null = () => OLD): RolloutDevice[] {
  return waves.map((wave, i) => ({
    deviceId: `d${i}`,
    wave,
    state: 'pending',
    online: true,
    previousReleaseId: previous(i),
    revertedTo: null,
    assignedAt: null,
    finishedAt: null,
    error: null,
  }));
}

const subject = 'rollout:r1';
const audit = (actor: string, action: string, details: Record<string, unknown>) => ({
  actor,
  action,
  subject,
  details: { rolloutId: 'r1', ...details },
});
const probeError = { code: 'E_PROBE_FAILED', message: 'outputs differ from the golden outputs' };

/** Plays the shell: applies every decision to its copy of the rows, one second per event. */
class Sim {
  clock = 0;
  private rows: RolloutDevice[] = [];
  /** What the real shell keeps: the rows with running wave tallies, decided against directly. */
  private index!: LiveDeviceIndex;
  constructor(
    public rollout: Rollout,
    devices: RolloutDevice[],
  ) {
    this.devices = devices;
  }

  get devices(): RolloutDevice[] {
    return this.rows;
  }

  /** Rows edited by a test (not by a decision): the shell would load them afresh. */
  set devices(rows: RolloutDevice[]) {
    this.rows = rows;
    this.index = new LiveDeviceIndex(rows, this.rollout.strategy.waves.length);
  }

  static started(waves: string, deviceWaves: number[], maxFailureRate = 0): Sim {
    const sim = new Sim(rolloutOf(waves, maxFailureRate), fleet(deviceWaves));
    sim.send({ type: 'start' });
    return sim;
  }

  get now(): string {
    return at(this.clock);
  }

  send(event: RolloutEvent): Decision {
    const before = JSON.stringify([this.rollout, this.devices]);
    const decision = decide(this.rollout, this.devices, event, at(this.clock + 1));
    this.clock++; // only when decide did not throw
    if (JSON.stringify([this.rollout, this.devices]) !== before) throw new Error('decide mutated its input');
    // The shell's path (its live index, no copy) decides exactly the same.
    const viaIndex = decide(this.rollout, this.index, event, at(this.clock));
    if (JSON.stringify(viaIndex) !== JSON.stringify(decision))
      throw new Error(`the live index decided differently: ${JSON.stringify(viaIndex)} vs ${JSON.stringify(decision)}`);
    this.rollout = { ...this.rollout, ...decision.patch };
    const changed = new Map(decision.devices.map((d) => [d.deviceId, d]));
    this.rows = this.rows.map((d) => changed.get(d.deviceId) ?? d);
    this.index.apply(decision.devices);
    const recount = indexDevices(this.devices, this.rollout.strategy.waves.length);
    if (JSON.stringify(recount.waves) !== JSON.stringify(this.index.waves)) throw new Error('tallies drifted');
    return decision;
  }

  report(deviceId: string, state: ModelState, version = '2.0.0'): Decision {
    const error = state === 'failed' || state === 'rolled_back' ? probeError : null;
    return this.send({ type: 'report', deviceId, state, version, error });
  }

  presence(deviceId: string, online: boolean): Decision {
    return this.send({ type: 'presence', deviceId, online });
  }

  dev(id: string): RolloutDevice {
    const d = this.devices.find((x) => x.deviceId === id);
    if (!d) throw new Error(`no device ${id}`);
    return d;
  }

  states(): string {
    return this.devices.map((d) => `${d.deviceId}:${d.state}`).join(' ');
  }
}

function codeOf(fn: () => unknown): { code?: string; message?: string } {
  try {
    fn();
  } catch (err) {
    return err as { code?: string; message?: string };
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// strategy

t.test('parseWaves reads the CLI syntax', async (t) => {
  const cases: [string, Strategy['waves']][] = [
    ['100', [{ percent: 100, approval: 'auto' }]],
    [
      '1,10:manual,50,100',
      [
        { percent: 1, approval: 'auto' },
        { percent: 10, approval: 'manual' },
        { percent: 50, approval: 'auto' },
        { percent: 100, approval: 'auto' },
      ],
    ],
    [
      ' 0.5 , 5:MANUAL , 100:auto ',
      [
        { percent: 0.5, approval: 'auto' },
        { percent: 5, approval: 'manual' },
        { percent: 100, approval: 'auto' },
      ],
    ],
    [
      '1:auto,100%:manual',
      [
        { percent: 1, approval: 'auto' },
        { percent: 100, approval: 'manual' },
      ],
    ],
  ];
  for (const [text, waves] of cases) t.strictSame(parseWaves(text), waves, text);
});

t.test('parseWaves refuses bad text with E_STRATEGY and a message that says what to fix', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /^--waves is empty: give cumulative percents ending at 100, e\.g\. --waves 1,10:manual,50,100$/],
    ['   ', /^--waves is empty/],
    ['1,,100', /^wave 2 of --waves "1,,100" is empty \(two commas in a row\?\)/],
    ['1,ten,100', /^percent of wave 2 "ten" is not a number: write a number in \(0, 100\]/],
    ['1,10:manaul,100', /^wave 2 "10:manaul" has an unknown flag "manaul": use ":manual", ":auto" or ":analysis"/],
    ['1,10:manual:auto,100', /^wave 2 "10:manual:auto" gives its approval twice/],
    ['1,Infinity', /^percent of wave 2 "Infinity" is not a number/],
    ['10,10,100', /^wave percents must strictly increase \(they are cumulative\): wave 2 has 10 after 10 in wave 1/],
    ['50,10,100', /wave 2 has 10 after 50 in wave 1/],
    ['1,10,50', /^the last wave must be 100 \(the whole target\), not 50: append 100/],
    ['0,100', /^percent of wave 1 is 0: it must be in \(0, 100\]/],
    ['-5,100', /^percent of wave 1 is -5: it must be in \(0, 100\]/],
    ['1,150', /^percent of wave 2 is 150: it must be in \(0, 100\]/],
    ['1:manual,100', /^wave 1 cannot be manual: the first wave starts when the rollout is created/],
  ];
  for (const [text, message] of cases) {
    const err = codeOf(() => parseWaves(text));
    t.equal(err.code, 'E_STRATEGY', `code for ${JSON.stringify(text)}`);
    t.match(err.message, message, `message for ${JSON.stringify(text)}`);
  }
});

t.test('validateStrategy normalizes a valid strategy and defaults maxFailureRate to 0', async (t) => {
  t.strictSame(validateStrategy({ waves: [{ percent: 100 }] }), {
    waves: [{ percent: 100, approval: 'auto' }],
    maxFailureRate: 0,
  });
  const s = {
    waves: [
      { percent: 5, approval: 'auto' },
      { percent: 100, approval: 'manual' },
    ],
    maxFailureRate: 0.05,
  };
  const v = validateStrategy(s);
  t.strictSame(v, s);
  t.not(v.waves, s.waves, 'a copy, not the caller object');
  t.equal(validateStrategy({ waves: [{ percent: 100 }], maxFailureRate: 0.999 }).maxFailureRate, 0.999);
  const hundred = Array.from({ length: 100 }, (_, i) => ({ percent: i + 1, approval: 'auto' as const }));
  t.equal(validateStrategy({ waves: hundred }).waves.length, 100, '100 waves is the maximum, allowed');
});

t.test('validateStrategy refuses invalid strategies with E_STRATEGY and a clear message', async (t) => {
  const w100 = [{ percent: 100, approval: 'auto' }];
  const cases: [string, unknown, RegExp][] = [
    [
      'not an object',
      'fast',
      /^the strategy must be an object \{ waves: \[\{ percent, approval \}\], maxFailureRate \}$/,
    ],
    ['null', null, /^the strategy must be an object/],
    ['unknown field', { waves: w100, maxFailureRates: 0.1 }, /^the strategy has an unknown field "maxFailureRates"/],
    ['waves missing', {}, /^waves \(missing\) is not a list/],
    ['empty waves', { waves: [] }, /^waves is empty: give at least one wave, and the last at 100/],
    [
      'non-increasing',
      { waves: [{ percent: 10 }, { percent: 5 }, { percent: 100 }] },
      /^wave percents must strictly increase \(they are cumulative\): wave 2 has 5 after 10 in wave 1/,
    ],
    ['equal percents', { waves: [{ percent: 100 }, { percent: 100 }] }, /wave 2 has 100 after 100 in wave 1/],
    ['last is not 100', { waves: [{ percent: 1 }, { percent: 99 }] }, /^the last wave must be 100.*not 99/],
    ['percent is a string', { waves: [{ percent: '100' }] }, /^percent of wave 1 "100" is not a number/],
    ['percent NaN', { waves: [{ percent: Number.NaN }] }, /^percent of wave 1 NaN is not a number/],
    ['percent 0', { waves: [{ percent: 0 }, { percent: 100 }] }, /^percent of wave 1 is 0: it must be in \(0, 100\]/],
    ['percent negative', { waves: [{ percent: -1 }, { percent: 100 }] }, /^percent of wave 1 is -1/],
    ['percent > 100', { waves: [{ percent: 1 }, { percent: 101 }] }, /^percent of wave 2 is 101/],
    ['percent Infinity', { waves: [{ percent: Number.POSITIVE_INFINITY }] }, /^percent of wave 1 is Infinity/],
    ['wave not an object', { waves: [100] }, /^wave 1 100 is not an object \{ percent, approval \}/],
    ['wave unknown field', { waves: [{ percent: 100, gate: 'manual' }] }, /^wave 1 has an unknown field "gate"/],
    ['bad approval', { waves: [{ percent: 100, approval: 'later' }] }, /^approval of wave 1 "later" is unknown/],
    ['wave 1 manual', { waves: [{ percent: 1, approval: 'manual' }, { percent: 100 }] }, /^wave 1 cannot be manual/],
    [
      'more than 100 waves',
      { waves: Array.from({ length: 101 }, (_, i) => ({ percent: (i + 1) * (100 / 101) })) },
      /^101 waves is more than the maximum of 100/,
    ],
    ['rate 1', { waves: w100, maxFailureRate: 1 }, /^maxFailureRate 1 is outside \[0, 1\): give a number in \[0, 1\)/],
    ['rate 1.5', { waves: w100, maxFailureRate: 1.5 }, /^maxFailureRate 1\.5 is outside \[0, 1\)/],
    ['rate negative', { waves: w100, maxFailureRate: -0.1 }, /^maxFailureRate -0\.1 is outside \[0, 1\)/],
    ['rate NaN', { waves: w100, maxFailureRate: Number.NaN }, /^maxFailureRate NaN is not a number/],
    ['rate string', { waves: w100, maxFailureRate: '0.1' }, /^maxFailureRate "0\.1" is not a number/],
    ['rate null', { waves: w100, maxFailureRate: null }, /^maxFailureRate null is not a number/],
  ];
  for (const [name, input, message] of cases) {
    const err = codeOf(() => validateStrategy(input));
    t.equal(err.code, 'E_STRATEGY', `${name}: code`);
    t.match(err.message, message, `${name}: message`);
  }
});

// ---------------------------------------------------------------------------------------------
// planWaves

const STRATEGIES: Record<string, Strategy> = {
  '100': validateStrategy({ waves: [{ percent: 100 }] }),
  '1,10,50,100': { waves: parseWaves('1,10,50,100'), maxFailureRate: 0 },
  '5,25:manual,100': { waves: parseWaves('5,25:manual,100'), maxFailureRate: 0 },
  '50,100': { waves: parseWaves('50,100'), maxFailureRate: 0 },
  '10,20,...,100': { waves: parseWaves('10,20,30,40,50,60,70,80,90,100'), maxFailureRate: 0 },
  '1..100': { waves: parseWaves(Array.from({ length: 100 }, (_, i) => i + 1).join(',')), maxFailureRate: 0 },
};

/** Independent integer arithmetic: ceil(p * n / 100) for integer percents. */
function expectedSizes(n: number, percents: number[]): number[] {
  let previous = 0;
  return percents.map((p, i) => {
    let cut = Math.floor((p * n + 99) / 100);
    if (i === 0) cut = Math.max(cut, 1);
    const size = cut - previous;
    previous = cut;
    return size;
  });
}

function sizesOf(plan: Map<string, number>, waves: number): number[] {
  const sizes = new Array<number>(waves).fill(0);
  for (const w of plan.values()) sizes[w] = (sizes[w] ?? 0) + 1;
  return sizes;
}

/** A deterministic shuffle (no Math.random: a failure must reproduce). */
function shuffled<T>(items: T[], salt: number): T[] {
  const key = (x: T) =>
    createHash('sha256')
      .update(`${salt}:${String(x)}`)
      .digest('hex');
  return [...items].sort((a, b) => (key(a) < key(b) ? -1 : 1));
}

t.test('planWaves: deterministic, order-independent, sizes match the cuts, always a canary (n = 1..200)', async (t) => {
  let checked = 0;
  for (const [name, strategy] of Object.entries(STRATEGIES)) {
    const percents = strategy.waves.map((w) => w.percent);
    for (let n = 1; n <= 200; n++) {
      const ids = Array.from({ length: n }, (_, i) => `cam-${i}`);
      const seed = `r-${name}-${n}`;
      const plan = planWaves(ids, strategy, seed);
      const again = planWaves(shuffled(ids, n), strategy, seed);
      const withDuplicates = planWaves([...shuffled(ids, n + 1), ...ids.slice(0, 3)], strategy, seed);
      const sizes = sizesOf(plan, percents.length);
      const wanted = expectedSizes(n, percents);
      const entries = [...plan.entries()].sort();
      const ok =
        plan.size === n &&
        JSON.stringify([...again.entries()].sort()) === JSON.stringify(entries) &&
        JSON.stringify([...withDuplicates.entries()].sort()) === JSON.stringify(entries) &&
        JSON.stringify(sizes) === JSON.stringify(wanted) &&
        (sizes[0] ?? 0) >= 1;
      if (!ok) {
        t.fail(`${name} n=${n}`, { sizes, wanted, size: plan.size });
        return;
      }
      checked++;
    }
  }
  t.equal(checked, Object.keys(STRATEGIES).length * 200, 'every strategy and size checked');
});

t.test('planWaves: the order is sha256(seed NUL deviceId), so the canary is the smallest hash', async (t) => {
  const ids = ['cam-a', 'cam-b', 'cam-c', 'cam-d', 'cam-e', 'cam-f', 'cam-g', 'cam-h', 'cam-i', 'cam-j'];
  const strategy = { waves: parseWaves('10,50,100'), maxFailureRate: 0 };
  for (const seed of ['r1', 'r2', 'r3', 'rollout-2026-11-26']) {
    const byHash = [...ids].sort((a, b) => {
      const ha = createHash('sha256').update(`${seed}\0${a}`).digest('hex');
      const hb = createHash('sha256').update(`${seed}\0${b}`).digest('hex');
      return ha < hb ? -1 : 1;
    });
    const plan = planWaves(ids, strategy, seed);
    t.strictSame(
      byHash.map((id) => plan.get(id)),
      [0, 1, 1, 1, 1, 2, 2, 2, 2, 2],
      `seed ${seed}`,
    );
  }
  const canaries = new Set(
    ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8'].map((seed) => firstOf(planWaves(ids, strategy, seed))),
  );
  t.ok(canaries.size > 1, 'another rollout id picks another canary');
});

function firstOf(plan: Map<string, number>): string {
  for (const [id, wave] of plan) if (wave === 0) return id;
  return '';
}

t.test('planWaves: explicit small cases, empty target, floating-point exact cuts', async (t) => {
  const cases: [string, number, number[]][] = [
    ['1,10,50,100', 3, [1, 0, 1, 1]],
    ['1,10,50,100', 1, [1, 0, 0, 0]],
    ['1,10,50,100', 10, [1, 0, 4, 5]],
    ['1,10,50,100', 100, [1, 9, 40, 50]],
    ['1,10,50,100', 101, [2, 9, 40, 50]],
    ['50,100', 1, [1, 0]],
    ['50,100', 3, [2, 1]],
    ['0.5,100', 200, [1, 199]],
    ['0.5,100', 201, [2, 199]],
    ['0.7,100', 10000, [70, 9930]],
    // 1.1 * 3000 / 100 is 33.00000000000001 in floating point: still 33 devices, not 34.
    ['1.1,100', 3000, [33, 2967]],
    ['4.4,8.8,100', 750, [33, 33, 684]],
    // A share far below one device still gives the canary.
    ['0.0000001,100', 1, [1, 0]],
    ['0.0000001,100', 5, [1, 4]],
    ['33.3,66.6,100', 1000, [333, 333, 334]],
  ];
  for (const [waves, n, sizes] of cases) {
    const strategy = { waves: parseWaves(waves), maxFailureRate: 0 };
    const plan = planWaves(
      Array.from({ length: n }, (_, i) => `d${i}`),
      strategy,
      'r1',
    );
    t.strictSame(sizesOf(plan, strategy.waves.length), sizes, `${waves} over ${n}`);
  }
  t.equal(planWaves([], STRATEGIES['1,10,50,100'] as Strategy, 'r1').size, 0, 'empty target: empty plan');
  t.strictSame(waveCuts(0, [1, 100]), [0, 0]);
  t.strictSame(waveCuts(7, [1, 10, 50, 100]), [1, 1, 4, 7]);
  t.strictSame(waveCuts(3000, [1.1, 100]), [33, 3000]);
  t.strictSame(waveCuts(1, [1e-9, 100]), [1, 1]);
});

// ---------------------------------------------------------------------------------------------
// decide: start, reports, wave completion

t.test('start assigns wave 1 (index 0) only, with the candidate release', async (t) => {
  const rollout = rolloutOf('1,50,100');
  const devices = fleet([0, 1, 1, 2, 0]);
  const d = decide(rollout, devices, { type: 'start' }, at(1));
  t.strictSame(d, {
    patch: { updatedAt: at(1) },
    devices: [
      { ...(devices[0] as RolloutDevice), state: 'assigned', assignedAt: at(1) },
      { ...(devices[4] as RolloutDevice), state: 'assigned', assignedAt: at(1) },
    ],
    assignments: [
      { deviceId: 'd0', kind: 'assign', releaseId: 'detector@2.0.0' },
      { deviceId: 'd4', kind: 'assign', releaseId: 'detector@2.0.0' },
    ],
    audit: [audit('coordinator', 'rollout.wave_started', { wave: 1, devices: 2 })],
    channelMove: null,
  });
  t.equal(devices[0]?.state, 'pending', 'input rows untouched');
  const started = { ...rollout, updatedAt: at(1) };
  const after = devices.map((x) => (x.wave === 0 ? { ...x, state: 'assigned' as const, assignedAt: at(1) } : x));
  t.match(
    codeOf(() => decide(started, after, { type: 'start' }, at(2))),
    {
      code: 'E_ROLLOUT_STATE',
      message: /^cannot start rollout r1: it already started \(status running, wave 1\)/,
    },
  );
});

t.test('start on an empty target passes through every (empty) wave and completes', async (t) => {
  // docs/rollouts.md: an empty wave passes at once, its manual gate included (nothing to approve).
  const d = decide(rolloutOf('1,10:manual,100'), [], { type: 'start' }, at(1));
  t.strictSame(
    d.patch,
    { currentWave: 2, status: 'completed', updatedAt: at(1) },
    'an empty manual wave does not park',
  );
  t.notOk(
    d.audit.some((a) => a.action === 'rollout.gate_waiting'),
    'no gate waits for an empty wave',
  );
  const e = decide(rolloutOf('1,10,100'), [], { type: 'start' }, at(1));
  t.strictSame(e.patch, { currentWave: 2, status: 'completed', updatedAt: at(1) });
  t.strictSame(
    e.audit.map((a) => [a.action, a.details.wave]),
    [
      ['rollout.wave_started', 1],
      ['rollout.wave_started', 2],
      ['rollout.wave_started', 3],
      ['rollout.completed', undefined],
    ],
    'audit rows number waves from 1',
  );
  t.strictSame(e.channelMove, { channel: 'stable', model: 'detector', releaseId: 'detector@2.0.0' });
});

t.test('reports move devices through their states; terminal ones set finishedAt, error and an audit row', async (t) => {
  const sim = Sim.started('100', [0, 0, 0], 0.5);
  const d1 = sim.report('d0', 'downloading');
  t.strictSame(d1, {
    patch: { updatedAt: at(2) },
    devices: [{ ...sim.dev('d0') }],
    assignments: [],
    audit: [],
    channelMove: null,
  });
  t.equal(sim.dev('d0').state, 'downloading');
  t.equal(sim.dev('d0').finishedAt, null);
  for (const s of ['verifying', 'applying', 'probing'] as const) sim.report('d0', s);
  const d2 = sim.report('d0', 'healthy');
  t.strictSame(sim.dev('d0'), {
    deviceId: 'd0',
    wave: 0,
    state: 'healthy',
    online: true,
    previousReleaseId: OLD,
    revertedTo: null,
    assignedAt: at(1),
    finishedAt: at(6),
    error: null,
  });
  t.strictSame(d2.audit, [audit('coordinator', 'rollout.device_outcome', { device: 'd0', wave: 1, state: 'healthy' })]);
  const d3 = sim.report('d1', 'rolled_back');
  t.strictSame(sim.dev('d1').error, probeError);
  t.equal(sim.dev('d1').finishedAt, at(7));
  t.strictSame(d3.audit, [
    audit('coordinator', 'rollout.device_outcome', { device: 'd1', wave: 1, state: 'rolled_back', error: probeError }),
  ]);
  t.equal(sim.rollout.status, 'running', '1 of 3 = 0.33 is within 0.5');
});

t.test('reports that are not acted on return an empty decision', async (t) => {
  const base = () => {
    const sim = Sim.started('50,100', [0, 1], 0.5);
    sim.report('d0', 'downloading');
    return sim;
  };
  const cases: [string, (sim: Sim) => void, RolloutEvent][] = [
    [
      'stale version (older release)',
      () => {},
      { type: 'report', deviceId: 'd0', state: 'failed', version: '1.0.0', error: probeError },
    ],
    [
      'newer unrelated version',
      () => {},
      { type: 'report', deviceId: 'd0', state: 'healthy', version: '3.0.0', error: null },
    ],
    [
      'device of a wave not started',
      () => {},
      { type: 'report', deviceId: 'd1', state: 'failed', version: '2.0.0', error: probeError },
    ],
    [
      'device not in the rollout',
      () => {},
      { type: 'report', deviceId: 'zz', state: 'failed', version: '2.0.0', error: probeError },
    ],
    ['idle', () => {}, { type: 'report', deviceId: 'd0', state: 'idle', version: '2.0.0', error: null }],
    [
      'same state again',
      () => {},
      { type: 'report', deviceId: 'd0', state: 'downloading', version: '2.0.0', error: null },
    ],
    [
      'after a terminal outcome',
      (sim) => sim.report('d0', 'rolled_back'),
      { type: 'report', deviceId: 'd0', state: 'healthy', version: '2.0.0', error: null },
    ],
    [
      'after abort with revert (the device was sent back)',
      (sim) => sim.send({ type: 'abort', actor: 'alice', policy: 'revert' }),
      { type: 'report', deviceId: 'd0', state: 'failed', version: '2.0.0', error: probeError },
    ],
    [
      'presence after abort',
      (sim) => sim.send({ type: 'abort', actor: 'alice', policy: 'keep' }),
      { type: 'presence', deviceId: 'd0', online: false },
    ],
    ['presence unchanged', () => {}, { type: 'presence', deviceId: 'd0', online: true }],
    ['presence of a stranger', () => {}, { type: 'presence', deviceId: 'zz', online: false }],
  ];
  for (const [name, setup, event] of cases) {
    const sim = base();
    setup(sim);
    const before = JSON.stringify([sim.rollout, sim.devices]);
    t.strictSame(sim.send(event), EMPTY, name);
    t.equal(JSON.stringify([sim.rollout, sim.devices]), before, `${name}: nothing changed`);
  }
  const done = Sim.started('100', [0]);
  done.report('d0', 'healthy');
  t.equal(done.rollout.status, 'completed');
  t.strictSame(
    done.send({ type: 'report', deviceId: 'd0', state: 'failed', version: '2.0.0', error: probeError }),
    EMPTY,
    'late report after completion',
  );
});

t.test('a wave completes when all its live devices are terminal, then the next auto wave starts', async (t) => {
  const sim = Sim.started('20,60,100', [0, 0, 1, 1, 2]);
  t.equal(sim.states(), 'd0:assigned d1:assigned d2:pending d3:pending d4:pending');
  t.strictSame(sim.report('d0', 'healthy').assignments, [], 'd1 still working');
  const d = sim.report('d1', 'healthy');
  t.strictSame(d.patch, { currentWave: 1, updatedAt: at(3) });
  t.strictSame(d.assignments, [
    { deviceId: 'd2', kind: 'assign', releaseId: 'detector@2.0.0' },
    { deviceId: 'd3', kind: 'assign', releaseId: 'detector@2.0.0' },
  ]);
  t.strictSame(
    d.audit.map((a) => a.action),
    ['rollout.device_outcome', 'rollout.wave_started'],
  );
  t.strictSame(d.audit[1], audit('coordinator', 'rollout.wave_started', { wave: 2, devices: 2 }));
  t.strictSame(
    d.devices.map((x) => [x.deviceId, x.state, x.assignedAt]),
    [
      ['d1', 'healthy', at(1)],
      ['d2', 'assigned', at(3)],
      ['d3', 'assigned', at(3)],
    ],
  );
});

t.test('completion of the last wave completes the rollout and moves the channel', async (t) => {
  const sim = new Sim(rolloutOf('50,100', 0, { channel: 'fleet-eu' }), fleet([0, 1]));
  sim.send({ type: 'start' });
  sim.report('d0', 'healthy');
  const d = sim.report('d1', 'healthy');
  t.strictSame(d.channelMove, { channel: 'fleet-eu', model: 'detector', releaseId: 'detector@2.0.0' });
  t.strictSame(d.patch, { status: 'completed', updatedAt: at(3) });
  t.strictSame(d.audit[1], {
    actor: 'coordinator',
    action: 'rollout.completed',
    subject: 'rollout:r1',
    details: {
      rolloutId: 'r1',
      model: 'detector',
      version: '2.0.0',
      releaseId: 'detector@2.0.0',
      channel: 'fleet-eu',
      devices: 2,
      healthy: 2,
      rolled_back: 0,
      failed: 0,
      unfinished: 0,
    },
  });
  t.equal(sim.rollout.status, 'completed');
});

t.test('empty waves pass straight through, their manual gates included (nothing to approve)', async (t) => {
  // 3 devices with 1,10,50,100: sizes 1,0,1,1.
  const sim = Sim.started('1,10,50,100', [0, 2, 3]);
  const d = sim.report('d0', 'healthy');
  t.strictSame(
    d.audit.map((a) => [a.action, a.details.wave, a.details.devices]),
    [
      ['rollout.device_outcome', 1, undefined],
      ['rollout.wave_started', 2, 0],
      ['rollout.wave_started', 3, 1],
    ],
  );
  t.equal(sim.rollout.currentWave, 2);
  t.strictSame(d.assignments, [{ deviceId: 'd1', kind: 'assign', releaseId: 'detector@2.0.0' }]);

  // The empty wave 2 is manual: it passes; the manual gate of wave 3 (one device) parks.
  const gated = Sim.started('1,10:manual,50:manual,100', [0, 2, 3]);
  const g = gated.report('d0', 'healthy');
  t.strictSame(g.patch, { currentWave: 1, status: 'waiting_approval', updatedAt: at(2) });
  t.strictSame(
    g.audit.map((a) => [a.action, a.details.wave, a.details.devices]),
    [
      ['rollout.device_outcome', 1, undefined],
      ['rollout.wave_started', 2, 0],
      ['rollout.gate_waiting', 3, undefined],
    ],
    'the empty gated wave starts (with no devices) at once; the next gate waits',
  );
  t.strictSame(g.assignments, []);
  const a = gated.send({ type: 'approve', actor: 'bob' });
  t.strictSame(
    a.audit.map((x) => [x.actor, x.action, x.details.wave]),
    [
      ['bob', 'rollout.approved', 3],
      ['bob', 'rollout.wave_started', 3],
    ],
  );
  t.strictSame(a.patch, { status: 'running', currentWave: 2, updatedAt: at(3) });
  t.strictSame(a.assignments, [{ deviceId: 'd1', kind: 'assign', releaseId: 'detector@2.0.0' }]);
});

// ---------------------------------------------------------------------------------------------
// decide: offline devices

t.test('offline devices do not block completion; going offline can complete the wave', async (t) => {
  const sim = Sim.started('40,100', [0, 0, 1, 1, 1]);
  sim.report('d0', 'healthy');
  sim.report('d1', 'downloading');
  t.equal(sim.rollout.currentWave, 0, 'd1 is live and working');
  const d = sim.presence('d1', false);
  t.strictSame(d.patch, { currentWave: 1, updatedAt: at(4) });
  t.strictSame(
    d.devices.map((x) => [x.deviceId, x.online, x.state]),
    [
      ['d1', false, 'downloading'],
      ['d2', true, 'assigned'],
      ['d3', true, 'assigned'],
      ['d4', true, 'assigned'],
    ],
  );
  t.strictSame(
    d.audit.map((a) => a.action),
    ['rollout.wave_started'],
  );

  // Offline before its wave starts: assigned anyway (converges on reconnect), never waited for.
  const off = new Sim(rolloutOf('50,100'), fleet([0, 0, 1, 1]));
  off.devices = off.devices.map((x) => (x.deviceId === 'd1' ? { ...x, online: false } : x));
  const s = off.send({ type: 'start' });
  t.strictSame(
    s.assignments.map((a) => a.deviceId),
    ['d0', 'd1'],
  );
  const r = off.report('d0', 'healthy');
  t.strictSame(
    r.assignments.map((a) => a.deviceId),
    ['d2', 'd3'],
    'd1 offline: wave 1 completes with d0 alone',
  );
});

t.test('a device that comes back later converges: its reports are accepted and recorded', async (t) => {
  const sim = Sim.started('40,100', [0, 0, 1, 1, 1]);
  sim.presence('d1', false);
  sim.report('d0', 'healthy');
  t.equal(sim.rollout.currentWave, 1);
  for (const id of ['d2', 'd3', 'd4']) sim.report(id, 'healthy');
  t.equal(sim.rollout.status, 'completed', 'd1 offline does not block completion');

  const back = Sim.started('40,100', [0, 0, 1, 1, 1]);
  back.presence('d1', false);
  back.report('d0', 'healthy');
  t.strictSame(back.presence('d1', true).patch, { updatedAt: at(4) }, 'back online, still assigned');
  t.equal(back.report('d1', 'downloading').devices[0]?.state, 'downloading');
  for (const id of ['d2', 'd3', 'd4']) back.report(id, 'healthy');
  t.equal(back.rollout.status, 'running', 'a live device of an earlier wave still working holds completion');
  const d = back.report('d1', 'healthy');
  t.strictSame(
    d.audit.map((a) => [a.action, a.details.device]),
    [
      ['rollout.device_outcome', 'd1'],
      ['rollout.completed', undefined],
    ],
  );
  t.strictSame(back.dev('d1').finishedAt, at(9));
  t.not(d.channelMove, null);
});

// ---------------------------------------------------------------------------------------------
// decide: halt rule

t.test('halt rule: exactly at the threshold does not trip, one failure over it does', async (t) => {
  // [maxFailureRate, devices in wave 0 (all of waves 100), failures, tripped]
  const cases: [number, number, number, boolean][] = [
    [0, 1, 1, true],
    [0, 10, 1, true],
    [0.1, 10, 1, false],
    [0.1, 10, 2, true],
    [0.25, 4, 1, false],
    [0.25, 4, 2, true],
    [0.5, 2, 1, false],
    [0.5, 4, 3, true],
    [0.2, 5, 1, false],
    [0.2, 5, 2, true],
    [0.3, 10, 3, false],
    [0.3, 10, 4, true],
  ];
  for (const [max, n, failures, tripped] of cases) {
    const sim = Sim.started('100', new Array(n).fill(0), max);
    let trippedAt = -1;
    for (let i = 0; i < failures; i++) {
      const d = sim.report(`d${i}`, i % 2 === 0 ? 'failed' : 'rolled_back');
      if (d.patch.status === 'halted' && trippedAt < 0) trippedAt = i + 1;
    }
    t.equal(sim.rollout.status, tripped ? 'halted' : 'running', `max ${max}, ${failures} of ${n}`);
    t.equal(trippedAt, tripped ? failures : -1, `max ${max}, ${failures} of ${n}: trips on the last failure`);
  }
});

t.test('halt rule trips mid-wave, in the same decision, with numbers, and serves nothing new', async (t) => {
  const sim = Sim.started('30,100', [0, 0, 0, 1, 1, 1, 1, 1, 1, 1], 0.33);
  sim.report('d0', 'healthy');
  sim.report('d1', 'downloading');
  const d = sim.report('d2', 'failed');
  t.strictSame(d.patch, {
    status: 'halted',
    haltReason: 'failure rate 0.333 (1 of 3 assigned) exceeds max 0.330 in wave 1',
    updatedAt: at(4),
  });
  t.strictSame(d.audit, [
    audit('coordinator', 'rollout.device_outcome', { device: 'd2', wave: 1, state: 'failed', error: probeError }),
    audit('coordinator', 'rollout.halted', {
      manual: false,
      wave: 1,
      failures: 1,
      acknowledged: 0,
      assigned: 3,
      rate: 1 / 3,
      maxFailureRate: 0.33,
      reason: 'failure rate 0.333 (1 of 3 assigned) exceeds max 0.330 in wave 1',
      device: 'd2',
    }),
  ]);
  t.strictSame(d.assignments, []);
  // Still recorded while halted, but the wave never advances.
  const r = sim.report('d1', 'healthy');
  t.strictSame(r.patch, { updatedAt: at(5) });
  t.strictSame(r.assignments, []);
  t.equal(sim.dev('d1').state, 'healthy');
  t.equal(sim.rollout.currentWave, 0);
  t.equal(
    sim.states(),
    'd0:healthy d1:healthy d2:failed d3:pending d4:pending d5:pending d6:pending d7:pending d8:pending d9:pending',
  );
});

t.test('halt rule with maxFailureRate 0: the first failure halts, with a readable reason', async (t) => {
  const sim = Sim.started('10,100', [0, 0, 1, 1]);
  const d = sim.report('d1', 'rolled_back');
  t.equal(d.patch.haltReason, 'failure rate 0.50 (1 of 2 assigned) exceeds max 0.00 in wave 1');
  t.equal(sim.rollout.status, 'halted');
});

t.test('a late failure from an earlier wave halts a rollout parked at a gate', async (t) => {
  const sim = Sim.started('50,100:manual', [0, 0, 1, 1], 0.4);
  sim.presence('d1', false);
  sim.report('d0', 'healthy');
  t.equal(sim.rollout.status, 'waiting_approval');
  sim.presence('d1', true);
  const d = sim.report('d1', 'failed');
  t.equal(d.patch.status, 'halted');
  t.equal(sim.rollout.haltReason, 'failure rate 0.50 (1 of 2 assigned) exceeds max 0.40 in wave 1');
});

t.test('resume acknowledges the failures so far: old ones do not re-trip, a new one does', async (t) => {
  const sim = Sim.started('100', new Array(10).fill(0), 0.1);
  sim.report('d0', 'failed');
  sim.report('d1', 'failed');
  t.equal(sim.rollout.status, 'halted');
  const r = sim.send({ type: 'resume', actor: 'carol' });
  t.strictSame(r, {
    patch: { acknowledgedFailures: 2, status: 'running', haltReason: null, updatedAt: at(4) },
    devices: [],
    assignments: [],
    audit: [audit('carol', 'rollout.resumed', { acknowledged: 2, actor: 'carol', wave: 1 })],
    channelMove: null,
  });
  t.strictSame(sim.report('d0', 'failed'), EMPTY, 'an old failure reported again is not a new one');
  sim.report('d2', 'healthy');
  t.equal(sim.rollout.status, 'running');
  sim.report('d3', 'failed');
  t.equal(sim.rollout.status, 'running', '1 new of 10 = 0.1: at the threshold');
  const d = sim.report('d4', 'rolled_back');
  t.equal(d.patch.status, 'halted', '2 new of 10 = 0.2 > 0.1');
  t.equal(
    sim.rollout.haltReason,
    'failure rate 0.20 (2 of 10 assigned, 2 more acknowledged) exceeds max 0.10 in wave 1',
  );
  t.match(d.audit[1]?.details, { failures: 4, acknowledged: 2, assigned: 10, rate: 0.2 });
});

t.test('resume re-evaluates at once: advance, complete, or park at the gate again', async (t) => {
  // Wave 0 finished while halted: resume starts wave 1.
  const a = Sim.started('50,100', [0, 0, 1, 1]);
  a.report('d0', 'failed');
  a.report('d1', 'healthy');
  const ra = a.send({ type: 'resume', actor: 'carol' });
  t.strictSame(
    ra.audit.map((x) => [x.actor, x.action]),
    [
      ['carol', 'rollout.resumed'],
      ['carol', 'rollout.wave_started'],
    ],
  );
  t.strictSame(
    ra.assignments.map((x) => x.deviceId),
    ['d2', 'd3'],
  );

  // Halted (by hand) while parked at a manual gate: resume parks again.
  const b = Sim.started('50,100:manual', [0, 1]);
  b.report('d0', 'healthy');
  b.send({ type: 'halt', actor: 'dan', reason: 'night freeze' });
  const rb = b.send({ type: 'resume', actor: 'dan' });
  t.equal(b.rollout.status, 'waiting_approval');
  t.strictSame(
    rb.audit.map((x) => x.action),
    ['rollout.resumed', 'rollout.gate_waiting'],
  );

  // Last wave finished while halted: resume completes and moves the channel.
  const c = Sim.started('100', [0, 0]);
  c.report('d0', 'failed');
  c.report('d1', 'healthy');
  const rc = c.send({ type: 'resume', actor: 'carol' });
  t.equal(c.rollout.status, 'completed');
  t.strictSame(rc.channelMove, { channel: 'stable', model: 'detector', releaseId: 'detector@2.0.0' });
});

t.test('halt by hand keeps the reason; resumes to running', async (t) => {
  const sim = Sim.started('50,100', [0, 1]);
  const d = sim.send({ type: 'halt', actor: 'dan', reason: '  customer escalation  ' });
  t.strictSame(d, {
    patch: { status: 'halted', haltReason: 'customer escalation', updatedAt: at(2) },
    devices: [],
    assignments: [],
    audit: [
      audit('dan', 'rollout.halted', {
        manual: true,
        reason: 'customer escalation',
        actor: 'dan',
        wave: 1,
        failures: 0,
        acknowledged: 0,
        assigned: 1,
        rate: 0,
        maxFailureRate: 0,
      }),
    ],
    channelMove: null,
  });
  t.match(
    codeOf(() => sim.send({ type: 'halt', actor: 'dan', reason: 'again' })),
    { code: 'E_ROLLOUT_STATE' },
  );
  const r = sim.send({ type: 'resume', actor: 'dan' });
  t.strictSame(r.patch, { status: 'running', haltReason: null, updatedAt: at(3) }, 'no failures to acknowledge');
  const blank = Sim.started('50,100', [0, 1]);
  t.equal(blank.send({ type: 'halt', actor: 'dan', reason: '   ' }).patch.haltReason, 'halted by dan');
});

// ---------------------------------------------------------------------------------------------
// decide: operator operations and their statuses

t.test('manual gate waits for approve', async (t) => {
  const sim = Sim.started('50,100:manual', [0, 0, 1, 1]);
  sim.report('d0', 'healthy');
  const d = sim.report('d1', 'healthy');
  t.strictSame(d.patch, { status: 'waiting_approval', updatedAt: at(3) });
  t.strictSame(d.assignments, []);
  t.equal(sim.states(), 'd0:healthy d1:healthy d2:pending d3:pending');
  t.strictSame(sim.presence('d0', false).patch, { updatedAt: at(4) }, 'presence does not pass the gate');
  const a = sim.send({ type: 'approve', actor: 'bob' });
  t.strictSame(a.patch, { status: 'running', currentWave: 1, updatedAt: at(5) });
  t.strictSame(a.assignments, [
    { deviceId: 'd2', kind: 'assign', releaseId: 'detector@2.0.0' },
    { deviceId: 'd3', kind: 'assign', releaseId: 'detector@2.0.0' },
  ]);
  t.strictSame(a.audit, [
    audit('bob', 'rollout.approved', { wave: 2, actor: 'bob' }),
    audit('bob', 'rollout.wave_started', { wave: 2, devices: 2 }),
  ]);
});

/** A rollout in each status, reached through the engine itself. */
function inStatus(status: RolloutStatus): Sim {
  const sim = Sim.started('50,100:manual', [0, 1]);
  switch (status) {
    case 'running':
      break;
    case 'waiting_approval':
      sim.report('d0', 'healthy');
      break;
    case 'halted':
      sim.report('d0', 'failed');
      break;
    case 'completed':
      sim.report('d0', 'healthy');
      sim.send({ type: 'approve', actor: 'bob' });
      sim.report('d1', 'healthy');
      break;
    case 'aborted':
      sim.send({ type: 'abort', actor: 'bob', policy: 'keep' });
      break;
  }
  if (sim.rollout.status !== status) throw new Error(`fixture did not reach ${status}`);
  return sim;
}

t.test('operations in the wrong status are refused with E_ROLLOUT_STATE naming status and valid ops', async (t) => {
  const ops: Record<string, RolloutEvent> = {
    approve: { type: 'approve', actor: 'bob' },
    promote: { type: 'promote', actor: 'bob' },
    halt: { type: 'halt', actor: 'bob', reason: 'x' },
    resume: { type: 'resume', actor: 'bob' },
    abort: { type: 'abort', actor: 'bob', policy: 'keep' },
  };
  const allowed: Record<RolloutStatus, string[]> = {
    running: ['promote', 'halt', 'abort'],
    waiting_approval: ['approve', 'promote', 'halt', 'abort'],
    halted: ['resume', 'abort'],
    completed: [],
    aborted: [],
  };
  const listed: Record<RolloutStatus, string> = {
    running: 'promote, halt, abort',
    waiting_approval: 'approve, promote, halt, abort',
    halted: 'resume, abort',
    completed: 'none (the rollout is finished)',
    aborted: 'none (the rollout is finished)',
  };
  for (const status of Object.keys(allowed) as RolloutStatus[]) {
    for (const [op, event] of Object.entries(ops)) {
      const sim = inStatus(status);
      const err = codeOf(() => sim.send(event));
      if (allowed[status].includes(op)) {
        t.equal(err.code, undefined, `${op} applies when ${status}`);
      } else {
        t.equal(err.code, 'E_ROLLOUT_STATE', `${op} refused when ${status}`);
        t.equal(
          err.message,
          `cannot ${op} rollout r1: it is ${status}; operations that apply now: ${listed[status]}`,
          `${op} when ${status}: message`,
        );
      }
    }
  }
});

t.test('promote approves every remaining wave: later gates do not park', async (t) => {
  const sim = Sim.started('25,50:manual,75:manual,100:manual', [0, 1, 2, 3]);
  sim.report('d0', 'healthy');
  t.equal(sim.rollout.status, 'waiting_approval');
  const p = sim.send({ type: 'promote', actor: 'erin' });
  t.strictSame(p.patch, { promoted: true, status: 'running', currentWave: 1, updatedAt: at(3) });
  t.strictSame(
    p.audit.map((a) => [a.actor, a.action, a.details.wave]),
    [
      ['erin', 'rollout.promoted', 1],
      ['erin', 'rollout.wave_started', 2],
    ],
  );
  t.strictSame(
    p.assignments.map((a) => a.deviceId),
    ['d1'],
  );
  const w2 = sim.report('d1', 'healthy');
  t.strictSame(w2.patch, { currentWave: 2, updatedAt: at(4) }, 'the manual gate of wave 2 is approved');
  sim.report('d2', 'healthy');
  t.equal(sim.rollout.currentWave, 3);
  const done = sim.report('d3', 'healthy');
  t.equal(sim.rollout.status, 'completed');
  t.not(done.channelMove, null);

  // Promote while running: no assignment now, the next gate is skipped when it comes.
  const run = Sim.started('50,100:manual', [0, 1]);
  const pr = run.send({ type: 'promote', actor: 'erin' });
  t.strictSame(pr.patch, { promoted: true, updatedAt: at(2) });
  t.strictSame(pr.assignments, []);
  t.strictSame(
    run.report('d0', 'healthy').assignments.map((a) => a.deviceId),
    ['d1'],
  );
  t.equal(run.rollout.status, 'running');
});

t.test(
  'abort keep: healthy and converging devices keep the candidate; a device that rolled back keeps what it runs',
  async (t) => {
    const sim = Sim.started('50,100', [0, 0, 0, 1], 0.9);
    sim.report('d0', 'healthy');
    sim.report('d1', 'rolled_back');
    sim.report('d2', 'downloading');
    const d = sim.send({ type: 'abort', actor: 'frank', policy: 'keep' });
    t.strictSame(d.patch, { status: 'aborted', abortPolicy: 'keep', updatedAt: at(5) });
    // d1 runs its earlier release (the agent swapped back): its desired state must say so, not
    // name the candidate that failed there (issue 11 B).
    t.strictSame(d.assignments, [{ deviceId: 'd1', kind: 'revert', releaseId: OLD }]);
    t.strictSame(
      d.devices.map((x) => [x.deviceId, x.state, x.revertedTo]),
      [['d1', 'rolled_back', { releaseId: OLD }]],
      'the outcome stays; the move back is recorded beside it',
    );
    t.strictSame(d.audit, [
      audit('frank', 'rollout.aborted', {
        policy: 'keep',
        actor: 'frank',
        wave: 1,
        from: 'running',
        reverted: 1,
        setBack: [{ version: '1.0.0', devices: ['d1'] }],
      }),
    ]);
    t.equal(sim.states(), 'd0:healthy d1:rolled_back d2:downloading d3:pending');
  },
);

t.test(
  'after the end, a late report moves the device row; a late failure sets the device back, nothing else is decided',
  async (t) => {
    // A completed rollout with d1 offline and assigned (offline devices never block).
    const sim = Sim.started('100', [0, 0]);
    sim.presence('d1', false);
    sim.report('d0', 'healthy');
    t.equal(sim.rollout.status, 'completed');
    t.equal(sim.dev('d1').state, 'assigned');
    // d1 reconnects (presence of a finished rollout is not recorded: rollout status reads it from
    // the devices table) and converges: its row follows, the rollout stays completed.
    const p = sim.presence('d1', true);
    t.strictSame(p, EMPTY, 'presence after the end decides nothing');
    const down = sim.report('d1', 'downloading');
    t.strictSame(down.patch, { updatedAt: at(5) });
    t.strictSame(down.audit, []);
    t.equal(sim.dev('d1').state, 'downloading');
    const ok = sim.report('d1', 'healthy');
    t.equal(sim.dev('d1').state, 'healthy');
    t.strictSame(ok.audit, [
      audit('coordinator', 'rollout.device_outcome', {
        device: 'd1',
        wave: 1,
        state: 'healthy',
        late: true,
        rolloutStatus: 'completed',
      }),
    ]);
    t.equal(sim.rollout.status, 'completed');
    t.strictSame(ok.assignments, []);

    // Aborted with keep while d1 was still downloading; it rolls back afterwards.
    const kept = Sim.started('100', [0, 0]);
    kept.report('d1', 'downloading');
    kept.send({ type: 'abort', actor: 'frank', policy: 'keep' });
    const late = kept.report('d1', 'rolled_back');
    t.equal(kept.rollout.status, 'aborted', 'no halt after the end');
    t.strictSame(late.assignments, [{ deviceId: 'd1', kind: 'revert', releaseId: OLD }], 'keeps what it runs');
    t.strictSame(
      late.audit.map((a) => [a.action, a.details.device, a.details.to ?? a.details.state]),
      [
        ['rollout.device_outcome', 'd1', 'rolled_back'],
        ['rollout.device_set_back', 'd1', '1.0.0'],
      ],
    );
    t.strictSame(kept.report('d1', 'healthy'), EMPTY, 'a device once set back is left alone');
  },
);

t.test("a wave start takes each device's revert target from what it runs now", async (t) => {
  const sim = new Sim(rolloutOf('50,100'), fleet([0, 1]));
  const running: Record<string, string | null | undefined> = { d0: 'detector@1.5.0', d1: undefined };
  const inputs = { revertTargetOf: (id: string) => running[id] };
  const start = decide(sim.rollout, sim.devices, { type: 'start' }, at(1), inputs);
  t.strictSame(
    start.devices.map((d) => [d.deviceId, d.previousReleaseId]),
    [['d0', 'detector@1.5.0']],
    'what d0 reports it runs replaces the create-time guess',
  );
  const none = decide(sim.rollout, sim.devices, { type: 'start' }, at(1), { revertTargetOf: () => null });
  t.strictSame(none.devices[0]?.previousReleaseId, null, 'runs nothing of the model: null');
  const unknown = decide(sim.rollout, sim.devices, { type: 'start' }, at(1), { revertTargetOf: () => undefined });
  t.strictSame(unknown.devices[0]?.previousReleaseId, OLD, 'never reported: the create-time target stays');
});

t.test('abort from halted and from waiting_approval', async (t) => {
  for (const status of ['halted', 'waiting_approval'] as const) {
    const sim = inStatus(status);
    const d = sim.send({ type: 'abort', actor: 'frank', policy: 'revert' });
    t.equal(sim.rollout.status, 'aborted', status);
    t.strictSame(d.assignments, [{ deviceId: 'd0', kind: 'revert', releaseId: OLD }], `${status}: d0 only`);
    t.equal(d.audit[0]?.details.from, status);
  }
});

// ---------------------------------------------------------------------------------------------
// summary

t.test('summarize: per-wave states and counts, failures, schema-valid', async (t) => {
  const sim = Sim.started('25,50:manual,100', [0, 0, 1, 2, 2, 2, 2, 2], 0.5);
  sim.report('d0', 'healthy');
  sim.report('d1', 'downloading');
  let s = summarize(sim.rollout, sim.devices, at(99));
  t.strictSame(RolloutSummarySchema.parse(s), s);
  t.strictSame(s, {
    id: 'r1',
    model: 'detector',
    version: '2.0.0',
    status: 'running',
    currentWave: 1,
    maxFailureRate: 0.5,
    failures: { count: 0, acknowledged: 0, assigned: 2, rate: 0 },
    waves: [
      {
        wave: 1,
        percent: 25,
        approval: 'auto',
        state: 'running',
        devices: 2,
        counts: { downloading: 1, healthy: 1 },
        reverted: 0,
      },
      { wave: 2, percent: 50, approval: 'manual', state: 'pending', devices: 1, counts: { pending: 1 }, reverted: 0 },
      { wave: 3, percent: 100, approval: 'auto', state: 'pending', devices: 5, counts: { pending: 5 }, reverted: 0 },
    ],
    haltReason: null,
    abortPolicy: null,
    reverted: 0,
    updatedAt: at(3),
  });
  sim.report('d1', 'failed');
  s = summarize(sim.rollout, sim.devices, at(99));
  t.equal(s.status, 'waiting_approval');
  t.strictSame(
    s.waves.map((w) => w.state),
    ['completed', 'waiting_approval', 'pending'],
  );
  t.strictSame(s.failures, { count: 1, acknowledged: 0, assigned: 2, rate: 0.5 });
  sim.send({ type: 'promote', actor: 'erin' });
  sim.report('d2', 'rolled_back');
  s = summarize(sim.rollout, sim.devices, at(99));
  t.strictSame(RolloutSummarySchema.parse(s), s);
  t.equal(s.status, 'halted');
  t.equal(s.haltReason, 'failure rate 0.67 (2 of 3 assigned) exceeds max 0.50 in wave 2');
  t.strictSame(
    s.waves.map((w) => [w.approval, w.state, w.counts]),
    [
      ['auto', 'completed', { healthy: 1, failed: 1 }],
      ['auto', 'completed', { rolled_back: 1 }],
      ['auto', 'pending', { pending: 5 }],
    ],
    'promoted: every gate shows auto; the halted wave whose live devices finished shows completed',
  );
  sim.send({ type: 'resume', actor: 'carol' });
  s = summarize(sim.rollout, sim.devices, at(99));
  t.strictSame(s.waves[2], {
    wave: 3,
    percent: 100,
    approval: 'auto',
    state: 'running',
    devices: 5,
    counts: { assigned: 5 },
    reverted: 0,
  });
  t.strictSame(s.failures, { count: 2, acknowledged: 2, assigned: 8, rate: 0 });
  sim.send({ type: 'abort', actor: 'frank', policy: 'revert' });
  s = summarize(sim.rollout, sim.devices, at(99));
  t.strictSame(RolloutSummarySchema.parse(s), s);
  t.strictSame(
    s.waves.map((w) => [w.state, w.counts, w.reverted]),
    [
      ['completed', { healthy: 1, failed: 1 }, 2],
      ['completed', { rolled_back: 1 }, 1],
      ['aborted', { assigned: 5 }, 5],
    ],
    'after abort with revert each wave keeps its final counts, and says how many went back',
  );
  t.strictSame(s.failures, { count: 2, acknowledged: 2, assigned: 8, rate: 0 }, 'failures stay');
  t.equal(s.reverted, 8);
  t.equal(s.abortPolicy, 'revert');
});

t.test('summarize: a completed rollout shows every wave completed', async (t) => {
  const sim = Sim.started('1,10,50,100', [0, 2, 3]);
  for (const id of ['d0', 'd1', 'd2']) sim.report(id, 'healthy');
  const s = summarize(sim.rollout, sim.devices, at(99));
  t.strictSame(RolloutSummarySchema.parse(s), s);
  t.strictSame(
    s.waves.map((w) => [w.state, w.devices]),
    [
      ['completed', 1],
      ['completed', 0],
      ['completed', 1],
      ['completed', 1],
    ],
  );
});

t.test('device state type covers every reported terminal state', async (t) => {
  const terminal: RolloutDeviceState[] = ['healthy', 'rolled_back', 'failed'];
  for (const state of terminal) {
    const sim = Sim.started('100', [0, 0], 0.9);
    sim.report('d0', state as ModelState);
    t.equal(sim.dev('d0').state, state);
    t.equal(sim.dev('d0').finishedAt, at(2), `${state}: finishedAt`);
    t.strictSame(sim.dev('d0').error, state === 'healthy' ? null : probeError, `${state}: error`);
  }
});

// ---------------------------------------------------------------------------------------------
// batches (what the shell decides per turn of the event loop)

t.test('decideBatch: a batch of reports ends where one decide per report ends', async (t) => {
  // Three waves of 2/4/4 devices, everyone succeeds: per-event and batched agree at every step.
  const waves = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
  const one = Sim.started('20,60,100', waves);
  const batch = Sim.started('20,60,100', waves);
  for (let round = 0; round < 3; round++) {
    const assigned = one.devices.filter((d) => d.state === 'assigned').map((d) => d.deviceId);
    t.same(
      batch.devices.filter((d) => d.state === 'assigned').map((d) => d.deviceId),
      assigned,
      `round ${round}`,
    );
    for (const id of assigned) for (const s of ['downloading', 'probing', 'healthy'] as const) one.report(id, s);
    const events = assigned.flatMap((id) =>
      (['downloading', 'probing', 'healthy'] as const).map((state) => ({
        type: 'report' as const,
        deviceId: id,
        state,
        version: '2.0.0',
        error: null,
      })),
    );
    const d = decideBatch(batch.rollout, batch.devices, events, batch.now);
    batch.rollout = { ...batch.rollout, ...d.patch };
    const changed = new Map(d.devices.map((x) => [x.deviceId, x]));
    batch.devices = batch.devices.map((x) => changed.get(x.deviceId) ?? x);
    t.equal(batch.rollout.status, one.rollout.status);
    t.equal(batch.rollout.currentWave, one.rollout.currentWave);
  }
  t.equal(batch.rollout.status, 'completed');
  t.equal(batch.states(), one.states());
});

t.test('decideBatch: a failure anywhere in the batch halts before the next wave starts', async (t) => {
  const sim = Sim.started('50,100', [0, 0, 1, 1], 0);
  const events = [
    { type: 'report' as const, deviceId: 'd0', state: 'healthy' as const, version: '2.0.0', error: null },
    { type: 'report' as const, deviceId: 'd1', state: 'rolled_back' as const, version: '2.0.0', error: probeError },
  ];
  const d = decideBatch(sim.rollout, sim.devices, events, sim.now);
  t.equal(d.patch.status, 'halted');
  t.same(d.assignments, [], 'wave 1 never assigned');
  t.match(d.audit.find((a) => a.action === 'rollout.halted')?.details, { device: 'd1', failures: 1, assigned: 2 });
  // An empty or irrelevant batch changes nothing.
  t.same(decideBatch(sim.rollout, sim.devices, [], sim.now), EMPTY);
  t.same(
    decideBatch(
      sim.rollout,
      sim.devices,
      [{ type: 'report', deviceId: 'd3', state: 'healthy', version: '2.0.0', error: null }],
      sim.now,
    ),
    EMPTY,
    'a pending device reporting is not acted on',
  );
});

// ---------------------------------------------------------------------------------------------
// the live index (what the shell decides against): tallies against an independent recount

t.test('live index: tallies equal a recount by scanning, after every decision of a random run', async (t) => {
  // A deterministic pseudo-random run over 60 devices in 4 waves: reports in every state,
  // presence flaps, operator operations; the tallies and the engine's answers (wave complete,
  // failure counts) are checked against a scan written independently of device-index.ts.
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const deviceWaves = Array.from({ length: 60 }, (_, i) => (i < 1 ? 0 : i < 6 ? 1 : i < 30 ? 2 : 3));
  const sim = Sim.started('2,10,50,100', deviceWaves, 0.3);
  const states: ModelState[] = ['downloading', 'verifying', 'applying', 'probing', 'healthy', 'rolled_back', 'failed'];
  let checked = 0;
  for (let step = 0; step < 20_000 && sim.rollout.status !== 'completed'; step++) {
    const id = `d${Math.floor(random() * 60)}`;
    const roll = random();
    if (roll < 0.7) sim.report(id, states[Math.floor(random() * states.length)] as ModelState);
    else if (roll < 0.9) sim.presence(id, random() < 0.5);
    else if (sim.rollout.status === 'halted') sim.send({ type: 'resume', actor: 'alice' });
    else if (sim.rollout.status === 'waiting_approval') sim.send({ type: 'approve', actor: 'alice' });
    // Independent recount of what the engine decided from the tallies.
    let failed = 0;
    let assigned = 0;
    for (const d of sim.devices) {
      if (d.state !== 'pending') assigned++;
      if (d.state === 'failed' || d.state === 'rolled_back') failed++;
    }
    const open = sim.devices.some(
      (d) =>
        d.wave <= sim.rollout.currentWave &&
        d.online &&
        !['pending', 'healthy', 'rolled_back', 'failed'].includes(d.state),
    );
    const summary = summarize(sim.rollout, sim.devices, sim.now);
    if (summary.failures.count !== failed || summary.failures.assigned !== assigned) {
      t.fail(`step ${step}: summary says ${JSON.stringify(summary.failures)}, scan says ${failed}/${assigned}`);
      break;
    }
    if (sim.rollout.status === 'running' && !open && sim.rollout.currentWave < 3) {
      t.fail(`step ${step}: wave ${sim.rollout.currentWave} is complete by scan but the rollout did not advance`);
      break;
    }
    for (const [i, w] of summary.waves.entries()) {
      const members = sim.devices.filter((d) => d.wave === i).length;
      if (w.devices !== members) t.fail(`step ${step}: wave ${i} has ${w.devices} devices, scan says ${members}`);
    }
    checked++;
  }
  t.ok(checked > 100, `${checked} decisions checked`);
  t.equal(sim.rollout.status, 'completed', `the random run reaches the end (${sim.states()})`);
});
