import type { Writable } from 'node:stream';
import type { PublishFlow } from '../broker/ordered-publisher.js';

/**
 * Bytes the coordinator lets wait in its broker connection's write buffer before its publisher
 * holds further messages back (~14,000 desired states: a 10,000-device fleet's whole wave).
 * Refilling it takes a turn of the event loop, which during a wave also ingests the devices'
 * answers, so a small limit starves the connection: at 10,000 devices through Mosquitto the
 * 9,000-device wave took 3.75 s with 1 MiB, 2.1-2.2 s with 4 MiB, and with 8 MiB 1.60-1.69 s
 * alone but 1.88-2.02 s in full runs (1.74 s without a limit). What a larger fleet's wave holds
 * here is bounded by it (BENCHMARKS.md, 2026-12-07 "memory at 50,000").
 */
export const SOCKET_BACKLOG_BYTES = 16 * 1024 * 1024;

/**
 * The publisher's flow through an MQTT client's connection (ordered-publisher.ts, PublishFlow):
 * open while the socket's write buffer holds less than `limitBytes`.
 *
 * Why: mqtt.js writes a publish as soon as it is handed one, in ~6 small chunks (header, lengths,
 * topic, id, payload), each kept with its own wrapper in the socket's buffer until the kernel
 * takes it. A wave handed over at once (a window of 10,000) through a broker that reads slower
 * than the coordinator writes sat there: 72 MB of heap and 41 MB of Buffers at 50,000 devices, a
 * heap snapshot found (BENCHMARKS.md, 2026-12-07 "memory at 50,000"). Held back in the
 * publisher instead, a desired state is not even signed until its turn.
 *
 * No connection, or one closed or ending: open, so that mqtt.js takes the message (it keeps QoS 1
 * publishes while offline and sends them after it reconnects) and nothing waits here for a
 * `drain` that cannot come. A wait ends at the socket's `drain` (its buffer emptied) or `close`.
 */
export function socketFlow(connection: () => Writable | undefined, limitBytes = SOCKET_BACKLOG_BYTES): PublishFlow {
  // Never below the stream's high-water mark: Node emits 'drain' only after a write found the
  // buffer at or past it, so a wait that began under it would wait for the connection's close.
  const open = (stream: Writable | undefined) =>
    !stream ||
    stream.destroyed ||
    !stream.writable ||
    stream.writableLength < Math.max(limitBytes, stream.writableHighWaterMark);
  return {
    open: () => open(connection()),
    whenOpen(resume) {
      const stream = connection();
      if (!stream || open(stream)) {
        setImmediate(resume);
        return;
      }
      const done = () => {
        stream.off('drain', done);
        stream.off('close', done);
        resume();
      };
      stream.on('drain', done);
      stream.on('close', done);
    },
  };
}
