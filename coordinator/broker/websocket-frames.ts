import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/**
 * Below this many bytes queued in the WebSocket (ws.bufferedAmount: its socket's buffer and
 * frames waiting to be framed), a write is taken at once into the next frame; above it, the
 * stream waits for the frame to be written, so a slow reader's backlog shows in the stream's
 * writableLength as before (watcher-delivery.ts cuts a watcher that leaves too much unread).
 */
const HIGH_WATER_BYTES = 256 * 1024;
/** A frame is sent as soon as this much is waiting (a browser's message buffer stays small). */
const MAX_FRAME_BYTES = 1024 * 1024;

type Callback = (error?: Error | null) => void;

/**
 * Makes the broker's writes to one WebSocket client go out as one binary frame per turn of the
 * event loop, whatever was written during it.
 *
 * Why: ws's stream (`createWebSocketStream`) sends every write as its own frame and socket write,
 * and the broker writes one delivery after another. A 9,000-device wave delivers 9,000 audit
 * events to every open dashboard: those frames were a third of the coordinator's CPU during the
 * wave (a CPU profile of bench:dashboard, BENCHMARKS.md). Allowed by MQTT 3.1.1 section 6.0: "A
 * single WebSocket data frame can contain multiple or partial MQTT Control Packets. The receiver
 * MUST NOT assume that MQTT Control Packets are aligned on WebSocket frame boundaries".
 *
 * What is written before the stream ends or is destroyed is sent first (`_final`, `_destroy`): a
 * refused CONNACK still reaches the page before the connection closes.
 */
export function coalesceWebSocketWrites(stream: Duplex, ws: WebSocket, schedule = setImmediate): void {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let scheduled = false;
  /** Writes acknowledged only once the frame holding them is written (the reader is slow). */
  let held: Callback[] = [];
  /** The callbacks of the frame sent last, while it is being written. */
  let lastFrame: Callback[] = [];

  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const data = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
    const waiting = held;
    pending = [];
    pendingBytes = 0;
    held = [];
    lastFrame = waiting;
    ws.send(data, (err) => {
      for (const cb of waiting) cb(err ?? null);
    });
  };

  const take = (buffers: Buffer[], cb: Callback) => {
    // Decided first: a held write is acknowledged with the frame that carries its last byte.
    const slowReader = ws.bufferedAmount >= HIGH_WATER_BYTES;
    for (const b of buffers) {
      pending.push(b);
      pendingBytes += b.length;
      // A slow reader's backlog comes back in one call (up to the watcher cut): still 1 MiB frames.
      if (pendingBytes >= MAX_FRAME_BYTES) flush();
    }
    if (pending.length > 0 && !scheduled) {
      scheduled = true;
      schedule(flush);
    }
    if (!slowReader) cb();
    else if (pending.length > 0) held.push(cb);
    else lastFrame.push(cb); // all of it went out just now: ws calls that frame's callbacks later
  };
  const asBuffer = (chunk: unknown) => (Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));

  const s = stream as Duplex & {
    _write: NonNullable<Duplex['_write']>;
    _writev: NonNullable<Duplex['_writev']>;
    _final: NonNullable<Duplex['_final']>;
    _destroy: NonNullable<Duplex['_destroy']>;
  };
  const end = s._final.bind(stream);
  const destroy = s._destroy.bind(stream);
  s._write = (chunk, _encoding, cb) => take([asBuffer(chunk)], cb);
  s._writev = (chunks, cb) =>
    take(
      chunks.map(({ chunk }) => asBuffer(chunk)),
      cb,
    );
  s._final = (cb) => {
    flush();
    end(cb);
  };
  // The broker refuses a connection by writing its CONNACK and destroying the stream at once:
  // that CONNACK must not die in `pending` (the page says "wrong user or token" from it).
  s._destroy = (err, cb) => {
    flush();
    destroy(err, cb);
  };
}
