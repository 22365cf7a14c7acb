import t from 'tap';
import { canPublish, canSubscribe, checkClientId, ownsReplyClientId } from '../coordinator/broker/acl.js';
import type { Principal } from '../coordinator/broker/principal.js';
import { OPS } from '../coordinator/commands/ops.js';
import type { Role } from '../coordinator/store/records.js';
import { createTopics } from '../shared/topics.js';
import { prng } from './helpers/prng.js';

// The broker ACL (coordinator/broker/acl.ts) against a small reference model of its rules,
// written here from design section 3 and docs/security.md without calling acl.ts, names.ts or
// topics.ts: random principals, client ids, topics and filters, drawn from pools full of
// collisions (bob / bob-admin / bob.admin / b / bob@x, a device named like an operator,
// Object.prototype keys, wildcards, other prefixes). Seeded, so every run checks the same cases;
// a failure prints its seed and case number.

const SEED = 0x0a11ce12;
const CASES = 4000;

// ---- the reference model ----

const PREFIX = 'ota/v1';
const ALNUM = /^[A-Za-z0-9]$/;

/** A safe id: 1-64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit, no `..`. */
function safe(s: string): boolean {
  if (s.length < 1 || s.length > 64 || !ALNUM.test(s[0] as string)) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (!(ALNUM.test(c) || c === '_' || c === '-' || c === '.')) return false;
    if (c === '.' && s[i + 1] === '.') return false;
  }
  return true;
}

/** An operator's client ids: the name, or the name, one `@` and a safe suffix. */
function operatorOwns(name: string, clientId: string): boolean {
  if (clientId === name) return true;
  const parts = clientId.split('@');
  return parts.length === 2 && parts[0] === name && safe(parts[1] as string);
}

function modelClientId(p: Principal, clientId: string): boolean {
  return p.kind === 'device' ? clientId === p.deviceId : operatorOwns(p.name, clientId);
}

function modelOwnsReply(p: Principal, clientId: string): boolean {
  return p.kind === 'operator' && operatorOwns(p.name, clientId);
}

type Parsed =
  | { kind: 'desired' | 'reported' | 'status' | 'metrics'; id: string }
  | { kind: 'rollout' | 'audit' | 'fleet' }
  | { kind: 'cmd'; op: string; operator?: string }
  | { kind: 'reply'; clientId: string };

/** A topic of design section 3 under ota/v1, or null. */
function parse(topic: string): Parsed | null {
  const levels = topic.split('/');
  if (levels[0] !== 'ota' || levels[1] !== 'v1') return null;
  const rest = levels.slice(2);
  const [head, a, b] = rest;
  if (head === 'devices' && rest.length === 3 && safe(a as string)) {
    if (b === 'desired' || b === 'reported' || b === 'status' || b === 'metrics') return { kind: b, id: a as string };
    return null;
  }
  if (head === 'rollouts' && rest.length === 2 && safe(a as string)) return { kind: 'rollout' };
  if (head === 'audit' && rest.length === 1) return { kind: 'audit' };
  if (head === 'fleet' && rest.length === 1) return { kind: 'fleet' };
  if (head === 'cmd' && rest.length === 2 && safe(a as string)) return { kind: 'cmd', op: a as string };
  if (head === 'cmd' && rest.length === 3 && safe(a as string) && safe(b as string))
    return { kind: 'cmd', op: a as string, operator: b as string };
  if (head === 'reply' && rest.length >= 3) {
    const clientId = a as string;
    const parts = clientId.split('@');
    const idOk = parts.length === 1 ? safe(clientId) : parts.length === 2 && parts.every(safe);
    const tail = rest.slice(2).join('/');
    if (idOk && tail !== '' && !tail.includes('+') && !tail.includes('#')) return { kind: 'reply', clientId };
  }
  return null;
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
/** The role an op needs (an unknown op passes the broker and gets an E_COMMAND reply). */
function mayCall(role: Role, op: string): boolean {
  const need: Role = Object.hasOwn(OPS, op) ? OPS[op as keyof typeof OPS] : 'viewer';
  return RANK[role] >= RANK[need];
}

function modelPublish(p: Principal, clientId: string, topic: string, retain: boolean, will: boolean): boolean {
  const parsed = parse(topic);
  if (!parsed) return false;
  if (p.kind === 'device') {
    if (parsed.kind !== 'reported' && parsed.kind !== 'status' && parsed.kind !== 'metrics') return false;
    if (parsed.id !== p.deviceId || clientId !== p.deviceId) return false;
    if (retain && parsed.kind === 'metrics') return false;
    return !will || parsed.kind === 'status';
  }
  return (
    parsed.kind === 'cmd' &&
    !will &&
    !retain &&
    mayCall(p.role, parsed.op) &&
    (parsed.operator === undefined || parsed.operator === p.name)
  );
}

function modelSubscribe(p: Principal, clientId: string, filter: string): boolean {
  if (p.kind === 'device') return clientId === p.deviceId && filter === `${PREFIX}/devices/${p.deviceId}/desired`;
  if (filter.includes('+') || filter.includes('#')) {
    const views = ['reported', 'status', 'metrics', 'desired'].map((k) => `${PREFIX}/devices/+/${k}`);
    if (filter === `${PREFIX}/rollouts/+` || views.includes(filter)) return true;
    const levels = filter.split('/');
    const id = levels[3] as string;
    return (
      levels.length === 5 &&
      filter.startsWith(`${PREFIX}/reply/`) &&
      levels[4] === '#' &&
      id !== '' &&
      !/[+#]/.test(id) &&
      modelOwnsReply(p, id)
    );
  }
  const parsed = parse(filter);
  if (!parsed || parsed.kind === 'cmd') return false;
  return parsed.kind !== 'reply' || modelOwnsReply(p, parsed.clientId);
}

// ---- the pools ----

/** Names that prefix, extend or resemble each other, and Object.prototype keys. */
const NAMES = [
  'bob',
  'bob-admin',
  'bob.admin',
  'b',
  'bob_admin',
  'bo',
  'bobx',
  'admin',
  'cam-1',
  'toString',
  'constructor',
];
const SUFFIXES = ['x', 'otactl-3f2a', 'admin', 'a.b_c-d', '', 'a/b', '#', '+', '@', 'x'.repeat(64), 'y'.repeat(65)];
const SEPARATORS = ['@', '-', '.', '_', '', '@@', '/'];
const ODD = ['', '@bob', 'bob@', 'bob@x@y', 'café', '..', 'a..b', '.bob', '+', '#', 'z'.repeat(65), '__proto__'];
const OP_NAMES = [...Object.keys(OPS), 'unknown.op', 'constructor', 'toString', 'hasOwnProperty'];
const KINDS = ['desired', 'reported', 'status', 'metrics', 'other', '+', '#', ''];
const PREFIXES = [PREFIX, PREFIX, PREFIX, 'ota/v2', 'ota', 'other/v1', '+/v1', '#'];
const TAILS = ['r', 'a/b', 'c-42', '', '#', '+', 'a/#', 'a/+/b', '/x'];
const ROLES: Role[] = ['viewer', 'operator', 'admin'];

function generators(seed: number) {
  const r = prng(seed);
  const name = () => r.pick(NAMES);
  /** A client id, built half the time on `near` (the principal's own name) when given. */
  const clientId = (near?: string): string => {
    const base = near !== undefined && r.bool() ? near : name();
    const x = r.next();
    if (x < 0.1) return r.pick(ODD);
    if (x < 0.3) return base;
    return `${base}${r.pick(SEPARATORS)}${r.pick(SUFFIXES)}`;
  };
  const ownerOf = (p: Principal) => (p.kind === 'device' ? p.deviceId : p.name);
  const principal = (): Principal =>
    r.bool() ? { kind: 'device', deviceId: name() } : { kind: 'operator', name: name(), role: r.pick(ROLES) };
  /** Topics and filters, valid and not, including every wildcard position. */
  const topic = (): string => {
    const p = r.pick(PREFIXES);
    switch (Math.floor(r.next() * 8)) {
      case 0:
        return `${p}/devices/${r.bool() ? name() : r.pick(['+', '#', '', clientId()])}/${r.pick(KINDS)}`;
      case 1:
        return r.pick([
          `${p}/devices/${name()}`,
          `${p}/devices/#`,
          `${p}/devices/+/+`,
          `${p}/devices/${name()}/status/x`,
        ]);
      case 2:
        return r.pick([`${p}/rollouts/${name()}`, `${p}/rollouts/+`, `${p}/rollouts/#`, `${p}/rollouts/${name()}/x`]);
      case 3:
        return r.pick([`${p}/audit`, `${p}/audit/x`, `${p}/fleet`, `${p}/fleet/x`, `${p}/fleet/+`, `${p}/#`, `${p}/+`]);
      case 4:
        return `${p}/cmd/${r.bool() ? r.pick(OP_NAMES) : r.pick(['+', '#', ''])}${r.bool() ? `/${r.pick(NAMES)}` : ''}`;
      case 5:
      case 6:
        return `${p}/reply/${r.next() < 0.85 ? clientId() : r.pick(['+', '#'])}/${r.pick(TAILS)}`;
      default:
        return r.pick(['#', '+/+', '$SYS/x', 'ota/#', '', '/', `${p}/reply/#`, `${p}/reply/+/#`]);
    }
  };
  return { r, name, clientId, ownerOf, principal, topic };
}

const topics = createTopics(PREFIX);
const show = (v: unknown) => JSON.stringify(v);

/** True or a non-empty reason, and agreeing with the model. */
function agrees(actual: true | string, expected: boolean): boolean {
  return expected ? actual === true : typeof actual === 'string' && actual.length > 0;
}

t.test('the reference model itself, on the cases issue 12 names', async (t) => {
  const bob: Principal = { kind: 'operator', name: 'bob', role: 'viewer' };
  t.ok(modelClientId(bob, 'bob') && modelClientId(bob, 'bob@otactl-3f2a'));
  for (const id of ['bob-admin', 'bob-admin@x', 'bob.admin', 'b', 'bob_admin@x', 'bob-x', 'bob@', 'bob@x@y']) {
    t.notOk(modelClientId(bob, id), id);
  }
  t.notOk(modelSubscribe(bob, 'bob', `${PREFIX}/reply/bob-admin@x/#`));
  t.ok(modelSubscribe(bob, 'bob', `${PREFIX}/reply/bob@x/#`));
});

t.test('checkClientId and reply ownership agree with the model', async (t) => {
  const g = generators(SEED);
  let failures = 0;
  let accepted = 0;
  for (let i = 0; i < CASES && failures < 5; i++) {
    const p = g.principal();
    const id = g.clientId(g.ownerOf(p));
    const expected = modelClientId(p, id);
    if (expected) accepted++;
    if (!agrees(checkClientId(p, id), expected)) {
      failures++;
      t.fail(`seed ${SEED} case ${i}: checkClientId(${show(p)}, ${show(id)}) should be ${expected}`);
    }
    if (ownsReplyClientId(p, id) !== modelOwnsReply(p, id)) {
      failures++;
      t.fail(`seed ${SEED} case ${i}: ownsReplyClientId(${show(p)}, ${show(id)}) should be ${modelOwnsReply(p, id)}`);
    }
  }
  t.equal(failures, 0, `${CASES} cases`);
  t.ok(accepted > CASES / 20 && accepted < CASES / 2, `both outcomes drawn (${accepted} accepted)`);
});

t.test('no client id belongs to two principals (but a device and an operator of the same name)', async (t) => {
  const g = generators(SEED + 1);
  let failures = 0;
  for (let i = 0; i < CASES && failures < 5; i++) {
    const [a, b] = [g.principal(), g.principal()];
    const id = g.clientId(g.ownerOf(a));
    if (checkClientId(a, id) !== true || checkClientId(b, id) !== true) continue;
    const owner = g.ownerOf;
    const sameAccount = a.kind === b.kind && owner(a) === owner(b);
    // An operator's bare name is also a device's id when both exist (enrolment refuses to make
    // such a pair; the broker lets only the device take over the other's live session).
    const deviceAndOperatorOfOneName = a.kind !== b.kind && owner(a) === owner(b) && id === owner(a);
    if (!sameAccount && !deviceAndOperatorOfOneName) {
      failures++;
      t.fail(`seed ${SEED + 1} case ${i}: ${show(id)} is both ${show(a)}'s and ${show(b)}'s`);
    }
  }
  t.equal(failures, 0, `${CASES} cases`);
});

t.test('canPublish agrees with the model', async (t) => {
  const g = generators(SEED + 2);
  let failures = 0;
  let allowed = 0;
  for (let i = 0; i < CASES && failures < 5; i++) {
    const p = g.principal();
    // Mostly a client id the principal may use (as after CONNECT), sometimes not.
    const id = g.r.next() < 0.8 ? (p.kind === 'device' ? p.deviceId : p.name) : g.clientId();
    // Mostly the principal's own device topics, so allowed cases are drawn too.
    const topic =
      p.kind === 'device' && g.r.bool()
        ? `${PREFIX}/devices/${g.r.bool() ? p.deviceId : g.name()}/${g.r.pick(KINDS)}`
        : g.topic();
    const retain = g.r.bool();
    const will = g.r.next() < 0.3;
    const expected = modelPublish(p, id, topic, retain, will);
    if (expected) allowed++;
    if (!agrees(canPublish(p, id, topic, { retain, will }, topics), expected)) {
      failures++;
      t.fail(
        `seed ${SEED + 2} case ${i}: canPublish(${show(p)}, ${show(id)}, ${show(topic)}, retain ${retain}, will ${will}) should be ${expected}`,
      );
    }
  }
  t.equal(failures, 0, `${CASES} cases`);
  t.ok(allowed > CASES / 50, `allowed cases drawn (${allowed})`);
});

t.test('canSubscribe agrees with the model', async (t) => {
  const g = generators(SEED + 3);
  let failures = 0;
  let allowed = 0;
  for (let i = 0; i < CASES && failures < 5; i++) {
    const p = g.principal();
    const id =
      g.r.next() < 0.8 ? (p.kind === 'device' ? p.deviceId : `${p.name}@${g.r.pick(['x', 'cli'])}`) : g.clientId();
    const own =
      p.kind === 'operator' ? `${PREFIX}/reply/${g.r.bool() ? p.name : `${p.name}@x`}/${g.r.pick(['#', 'r'])}` : null;
    const filter = own !== null && g.r.next() < 0.2 ? own : g.topic();
    const expected = modelSubscribe(p, id, filter);
    if (expected) allowed++;
    if (!agrees(canSubscribe(p, id, filter, topics), expected)) {
      failures++;
      t.fail(
        `seed ${SEED + 3} case ${i}: canSubscribe(${show(p)}, ${show(id)}, ${show(filter)}) should be ${expected}`,
      );
    }
  }
  t.equal(failures, 0, `${CASES} cases`);
  t.ok(allowed > CASES / 10, `allowed cases drawn (${allowed})`);
});
