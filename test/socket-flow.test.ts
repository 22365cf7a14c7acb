import net from 'node:net';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import {
  type DeferredMessages,
  OrderedPublisher,
  type OutgoingPublish,
} from '../coordinator/broker/ordered-publisher.js';
import { socketFlow } from '../coordinator/external-broker/socket-flow.js';
import { createLogger } from '../shared/logger.js';

// The publisher's flow through a real loopback connection whose reader stops reading: messages
// must wait in the publisher (deferred payloads not made), not in the socket's write buffer.

const logger = createLogger('error', new Writable({ write: (_c, _e, cb) => cb() }), 'ota-coordinator');
const tick = () => new Promise((r) => setImmediate(r));

/** A connected pair on 127.0.0.1: `client` writes, `server` reads (paused until the test says). */
async function loopbackPair(t: Test) {
  const accepted = new Promise<net.Socket>((resolve) => {
    const server = net.createServer((s) => {
      s.pause();
      resolve(s);
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      client = net.connect(port, '127.0.0.1');
    });
    t.teardown(() => server.close());
  });
  let client: net.Socket | undefined;
  const server = await accepted;
  const c = client as unknown as net.Socket;
  t.teardown(() => {
    c.destroy();
    server.destroy();
  });
  return { client: c, server };
}

t.test('a connection that stops reading holds messages in the publisher, in order, unmade', async (t) => {
  const { client, server } = await loopbackPair(t);
  const LIMIT = 64 * 1024;
  const SIZE = 4096;
  // 32 MB: more than the kernel buffers of a loopback connection take, so Node's buffer fills.
  const TOTAL = 8_000;
  let made = 0;
  const send = (m: OutgoingPublish, done: () => void) => {
    client.write(m.payload);
    done(); // settled at once, as QoS 0: the window is not what holds them
  };
  const publisher = new OrderedPublisher(send, logger, 10_000, 'connection');
  publisher.useFlow(socketFlow(() => client, LIMIT));
  const messages: DeferredMessages = {
    length: TOTAL,
    retain: false,
    topic: () => 'ota/v1/audit',
    payload: (i) => {
      made++;
      const b = Buffer.alloc(SIZE, 0x20);
      b.writeUInt32BE(i, 0);
      return b;
    },
  };
  const done = publisher.publish([], messages);
  for (let i = 0; i < 100_000 && client.writableLength < LIMIT; i++) await tick();
  t.ok(client.writableLength >= LIMIT, 'the connection backed up');
  await tick();
  await tick();
  t.ok(made < TOTAL, `messages wait unmade in the publisher (${made} of ${TOTAL} made)`);
  t.ok(client.writableLength < LIMIT + SIZE, `the write buffer stops near the limit (${client.writableLength} bytes)`);
  t.equal(publisher.pending, TOTAL - made, 'the rest wait in the publisher');

  // The reader reads again: everything arrives, in handover order.
  let received = Buffer.alloc(0);
  const order: number[] = [];
  server.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    while (received.length >= SIZE) {
      order.push(received.readUInt32BE(0));
      received = received.subarray(SIZE);
    }
  });
  server.resume();
  await done;
  for (let i = 0; i < 100_000 && order.length < TOTAL; i++) await tick();
  t.equal(made, TOTAL);
  t.equal(order.length, TOTAL, 'every message arrived');
  t.ok(
    order.every((n, i) => n === i),
    'in the order handed over',
  );
});

t.test('no connection, or a closed one: open; a wait ends when the connection closes', async (t) => {
  t.equal(socketFlow(() => undefined).open(), true, 'none yet: mqtt.js keeps what it is given');
  let resumed = 0;
  socketFlow(() => undefined).whenOpen(() => resumed++);
  t.equal(resumed, 0, 'never synchronously');
  await tick();
  t.equal(resumed, 1);

  const { client } = await loopbackPair(t);
  const flow = socketFlow(() => client, 1);
  client.cork(); // held in Node's buffer
  client.write(Buffer.alloc(16));
  t.equal(flow.open(), true, "a limit under the high-water mark is raised to it ('drain' comes only past it)");
  client.write(Buffer.alloc(client.writableHighWaterMark));
  t.equal(flow.open(), false, 'over the limit');
  flow.whenOpen(() => resumed++);
  await tick();
  t.equal(resumed, 1, 'still waiting');
  client.destroy();
  await new Promise((r) => client.once('close', r));
  await tick();
  t.equal(resumed, 2, 'the close ended the wait');
  t.equal(flow.open(), true, 'a closed connection is open: nothing waits for its drain');
});
