import t from 'tap';
import { encodePayload } from '../shared/payload.js';
import { createTopics } from '../shared/topics.js';
import { startInProcessCoordinator } from './helpers/in-process-coordinator.js';
import {
  connackCode,
  grantOf,
  nextMessage,
  openSession,
  publishOutcome,
  type Session,
} from './helpers/mqtt-session.js';

// Issue 12 item 2: an operator's client ids and reply topics are its own exactly, whatever other
// names exist. The ACL once treated anything starting with `name-` as the operator's, so viewer
// `bob` could read the replies of admin `bob-admin` (the token `operator add` prints) and
// connect with its client ids. Names that prefix each other in every way, every ordered pair,
// against the real coordinator (Aedes, SQLite) and real MQTT 3.1.1 clients.

const topics = createTopics();
const NAMES = ['bob', 'bob-admin', 'bob.admin', 'b', 'bob_admin'];

type Reply = { correlationId: string; ok: boolean; result?: { token?: string }; error?: { code: string } };
const parse = (payload: Buffer) => JSON.parse(payload.toString('utf8')) as Reply;
let seq = 0;
const correlation = () => `c-${process.pid}-${++seq}`;
const request = (correlationId: string, replyTo: string, args: object) =>
  encodePayload({ correlationId, replyTo, args });
/** The reply with this correlation id, received by `session` or arriving. */
const replyOn = (session: Session, id: string) =>
  nextMessage(session, (m) => (parse(m.payload).correlationId === id ? parse(m.payload) : undefined));

t.test('operators whose names prefix each other cannot use or read each other', async (t) => {
  const { running, admin } = await startInProcessCoordinator(t);
  const url = running.mqttUrl;
  const tokens = new Map<string, string>();
  // All admins: every command is allowed by role, so a refusal below is the client id's or the reply's.
  for (const name of NAMES) {
    tokens.set(name, (await admin.call<{ token: string }>('operator.add', { name, role: 'admin' })).token);
  }
  const as = (user: string, clientId: string) => openSession(t, url, user, tokens.get(user) as string, clientId);
  const groups = async () => (await admin.call<{ id: string }[]>('group.ls')).map((g) => g.id);

  for (const first of NAMES) {
    t.equal(await connackCode(as(first, first)), 0, `${first} connects as ${first}`);
    t.equal(await connackCode(as(first, `${first}@otactl-1`)), 0, `${first} connects as ${first}@otactl-1`);
  }

  let probe = 0;
  for (const first of NAMES) {
    for (const second of NAMES) {
      if (first === second) continue;
      await t.test(`${first} against ${second}`, async (t) => {
        for (const id of [second, `${second}@otactl-1`, `${second}@x.y_z`]) {
          t.equal(await connackCode(as(first, id)), 5, `${first} cannot connect as ${id} (CONNACK 5)`);
        }

        const s = await as(first, `${first}@probe`);
        t.equal(await grantOf(s.client, `${topics.replyPrefix(`${first}@probe`)}#`), 1, 'its own replies: granted');
        for (const filter of [
          `${topics.replyPrefix(second)}#`,
          topics.reply(second, 'r'),
          `${topics.replyPrefix(`${second}@otactl-1`)}#`,
          topics.reply(`${second}@otactl-1`, 'r'),
        ]) {
          t.equal(await grantOf(s.client, filter), 128, `${first} cannot subscribe to ${filter} (SUBACK 0x80)`);
        }

        // A replyTo of the other operator's: the broker refuses the command (closes the
        // connection) before it runs; the store shows it never ran. (group.create returns no
        // secret, so only the replyTo rule stands between it and the store.)
        for (const theirs of [topics.reply(second, 'r'), topics.reply(`${second}@otactl-1`, 'r')]) {
          const conn = s.client.connected ? s : await as(first, `${first}@probe`);
          const name = `leak-${++probe}`;
          const args = { name, selector: { site: 'x' } };
          const outcome = await publishOutcome(conn, topics.cmd('group.create'), request(correlation(), theirs, args));
          t.equal(outcome, 'closed', `${first} cannot send a command with replyTo ${theirs}`);
          t.notOk((await groups()).includes(name), `group ${name} was not created`);
        }
      });
    }
  }
});

t.test('a reply that carries a token reaches the asking session only', async (t) => {
  const { running, admin } = await startInProcessCoordinator(t);
  const url = running.mqttUrl;
  let n = 0;
  for (const name of NAMES) {
    await t.test(name, async (t) => {
      const { token } = await admin.call<{ token: string }>('operator.add', { name, role: 'admin' });
      const as = (clientId: string, clean = true) => openSession(t, url, name, token, clientId, { clean });
      const a = await as(`${name}@a`);
      const replyA = topics.reply(`${name}@a`, 'r');
      t.equal(await grantOf(a.client, replyA), 1);
      // Another session of the same operator, reading the asking session's replies (allowed: replies
      // are the operator's), and one more that did the same and is offline with a persistent session.
      const b = await as(`${name}@b`);
      t.equal(await grantOf(b.client, `${topics.replyPrefix(`${name}@a`)}#`), 1, 'b may read the replies of a');
      const c = await as(`${name}@c`, false);
      t.equal(await grantOf(c.client, `${topics.replyPrefix(`${name}@a`)}#`), 1, 'c may read the replies of a');
      await c.client.endAsync();

      const secrets: [string, object][] = [
        ['device.add', { id: `cam-${++n}` }],
        ['operator.add', { name: `new-${n}`, role: 'viewer' }],
      ];
      const tokens: string[] = [];
      const secretIds: string[] = [];
      for (const [op, args] of secrets) {
        const id = correlation();
        secretIds.push(id);
        a.client.publish(topics.cmd(op), request(id, replyA, args), { qos: 1 });
        const reply = await replyOn(a, id);
        t.equal(reply.ok, true, `${op}: the asking session gets its reply`);
        t.match(reply.result?.token, /\S{20,}/, `${op}: with the token`);
        tokens.push(reply.result?.token as string);
      }
      // A reply without a secret, after them, on the same topic: b and c get it, so they would have
      // got the token replies (published earlier, on the same topic, in order) if those went to them.
      const barrier = correlation();
      a.client.publish(topics.cmd('device.ls'), request(barrier, replyA, {}), { qos: 1 });
      await replyOn(b, barrier);
      const c2 = await as(`${name}@c`, false);
      await replyOn(c2, barrier);
      for (const [who, s] of [
        ['another live session', b],
        ['another, persistent session (queued while offline)', c2],
      ] as const) {
        const got = s.received.map((m) => m.payload.toString('utf8'));
        t.notOk(
          got.some((p) => secretIds.some((id) => p.includes(id)) || tokens.some((tok) => p.includes(tok))),
          `${who} never received a token reply`,
        );
      }
    });
  }
});

t.test('a command that returns a token is refused unless its reply comes back to the asking connection', async (t) => {
  const { running, admin, token } = await startInProcessCoordinator(t);
  const a = await openSession(t, running.mqttUrl, token.user, token.token, 'admin@a');
  const b = await openSession(t, running.mqttUrl, token.user, token.token, 'admin@b');
  const replyB = topics.reply('admin@b', 'r');
  t.equal(await grantOf(b.client, replyB), 1);
  const id = correlation();
  a.client.publish(topics.cmd('device.add'), request(id, replyB, { id: 'cam-x' }), { qos: 1 });
  const reply = await replyOn(b, id);
  t.match(reply, { ok: false, error: { code: 'E_USAGE', message: /sent only to the connection that asks.*admin@a/ } });
  t.same(await admin.call('device.ls'), [], 'nothing was enrolled');
  // A command without a secret may still be answered on another session of the same operator.
  const ls = correlation();
  a.client.publish(topics.cmd('device.ls'), request(ls, replyB, {}), { qos: 1 });
  t.match(await replyOn(b, ls), { ok: true });
});
