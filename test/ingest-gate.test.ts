import t from 'tap';
import { IngestGate } from '../coordinator/broker/ingest-gate.js';

// The broker's gate on device publishes during a wave: bounded per turn of the event loop, in
// arrival order, nothing dropped; open (no cost) outside a wave.

const turn = () => new Promise<void>((r) => setImmediate(r));

t.test('closed: at most perTurn per turn, the rest on later turns, in arrival order', async (t) => {
  const gate = new IngestGate(3, () => true);
  const ran: number[] = [];
  for (let i = 0; i < 8; i++) gate.admit(() => ran.push(i));
  t.same(ran, [0, 1, 2], 'three this turn');
  t.equal(gate.backlog, 5);
  await turn();
  t.same(ran, [0, 1, 2, 3, 4, 5], 'three more on the next turn');
  await turn();
  t.same(ran, [0, 1, 2, 3, 4, 5, 6, 7], 'then the rest');
  t.equal(gate.backlog, 0);
});

t.test('one arriving while others wait goes behind them, across turns', async (t) => {
  const gate = new IngestGate(2, () => true);
  const ran: string[] = [];
  for (const id of ['a', 'b', 'c', 'd', 'e']) gate.admit(() => ran.push(id));
  await turn(); // c and d ran at the start of this turn, e still waits
  gate.admit(() => ran.push('f'));
  t.same(ran, ['a', 'b', 'c', 'd'], 'f waits behind e');
  await turn();
  t.same(ran, ['a', 'b', 'c', 'd', 'e', 'f'], 'in arrival order');
});

t.test('open: everything runs at once; a backlog left from a wave drains on the next turn in order', async (t) => {
  let active = true;
  const gate = new IngestGate(2, () => active);
  const ran: number[] = [];
  for (let i = 0; i < 5; i++) gate.admit(() => ran.push(i));
  t.same(ran, [0, 1]);
  active = false;
  gate.admit(() => ran.push(5)); // behind the three waiting
  t.same(ran, [0, 1], 'order kept while a backlog waits');
  await turn();
  t.same(ran, [0, 1, 2, 3, 4, 5], 'the whole backlog on one turn once open');
  gate.admit(() => ran.push(6));
  t.same(ran, [0, 1, 2, 3, 4, 5, 6], 'open and empty: at once');
});
