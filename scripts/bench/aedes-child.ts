import net from 'node:net';
import { Aedes } from 'aedes';
import { retainedIndexPersistence } from '../../coordinator/broker/retained-index.js';

/**
 * A bare Aedes broker in its own process, the embedded broker's baseline (scripts/bench/
 * aedes-process.ts starts it): Aedes 1.x with its defaults (in-memory persistence), no
 * authentication, no ACL, no handlers, on a TCP server at 127.0.0.1, port 0. With
 * `--retained-index` its in-memory store is the coordinator's (coordinator/broker/retained-index.ts:
 * SUBSCRIBE without wildcards answered from a map, where the stock store walks every retained
 * message), to tell that store's share apart from the rest of the coordinator. Sends
 * `{ port }` over the IPC channel once listening; exits on SIGTERM or when the channel closes.
 */

if (!process.send) {
  process.stderr.write('aedes-child: start me with child_process.fork (scripts/bench/aedes-process.ts)\n');
  process.exit(2);
}

const aedes = await Aedes.createBroker(
  process.argv.includes('--retained-index') ? { persistence: retainedIndexPersistence() } : {},
);
const server = net.createServer(aedes.handle);
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as net.AddressInfo).port });
});
// Nothing to keep: the benchmark is over when we are told to go.
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
