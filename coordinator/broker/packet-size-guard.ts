import { MAX_PAYLOAD_BYTES } from '../../shared/payload.js';

/**
 * Refuses an MQTT packet by its size before it is buffered, from the bytes of one connection as
 * they arrive. Aedes 1.x and mqtt-packet 9 have no packet-size limit: mqtt-packet reads the
 * remaining length from the fixed header and keeps appending bytes until the whole packet is
 * there (parser.js `_parsePayload`), so a client that announces 200 MiB and streams them made
 * the coordinator hold all of it before any check, even before CONNECT was authenticated.
 *
 * Every MQTT 3.1.1 control packet starts with a fixed header (section 2.2): one byte of packet
 * type and flags, then the remaining length (section 2.2.3), a variable byte integer of 1 to 4
 * bytes, 7 bits each, least significant first, the high bit saying another byte follows. The
 * guard reads those headers and skips the bodies by counting, so it costs nothing per payload
 * byte and keeps no bytes itself.
 */

/** Largest remaining length MQTT 3.1.1 can express (4 bytes of 7 bits, section 2.2.3). */
export const MQTT_MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Room besides the payload in the largest packet a client needs: a PUBLISH's topic (2-byte
 * length + up to 65,535 bytes, section 3.3.2.1) and packet identifier (2 bytes); a CONNECT's
 * fields (each 2-byte length + up to 65,535 bytes) are no larger in practice.
 */
export const PACKET_OVERHEAD_BYTES = 2 + 65_535 + 2;

/** The default cap on a packet's remaining length: the payload cap plus PACKET_OVERHEAD_BYTES. */
export function defaultMaxPacketBytes(maxPayloadBytes = MAX_PAYLOAD_BYTES): number {
  return maxPayloadBytes + PACKET_OVERHEAD_BYTES;
}

/** Largest fixed header: 1 byte type and flags + 4 bytes remaining length. */
export const MAX_FIXED_HEADER_BYTES = 5;

/** MQTT 3.1.1 control packet types (section 2.2.1), for messages. */
const PACKET_TYPES = [
  'reserved(0)',
  'CONNECT',
  'CONNACK',
  'PUBLISH',
  'PUBACK',
  'PUBREC',
  'PUBREL',
  'PUBCOMP',
  'SUBSCRIBE',
  'SUBACK',
  'UNSUBSCRIBE',
  'UNSUBACK',
  'PINGREQ',
  'PINGRESP',
  'DISCONNECT',
  'reserved(15)',
] as const;

export interface OversizedPacket {
  /** The packet type named by the fixed header, e.g. CONNECT. */
  packet: string;
  /** Which packet of the connection it was (1 = the first). */
  index: number;
  /** The announced remaining length, or null when it is longer than 4 bytes (malformed, section 2.2.3). */
  remainingLength: number | null;
  limit: number;
}

export function describeOversized(o: OversizedPacket): string {
  const size =
    o.remainingLength === null
      ? 'a remaining length longer than the 4 bytes MQTT 3.1.1 allows (section 2.2.3)'
      : `a remaining length of ${o.remainingLength} bytes`;
  return `packet ${o.index} (${o.packet}) announces ${size}; the limit is ${o.limit}`;
}

/**
 * Follows the fixed headers of one byte stream. `push` every chunk in order; it returns the
 * first packet over the limit (and the same verdict for every chunk after it), else null.
 */
export class PacketSizeGuard {
  private state: 'type' | 'length' | 'body' = 'type';
  private type = 0;
  private length = 0;
  private lengthBytes = 0;
  /** Body bytes of the current packet still to skip. */
  private left = 0;
  private packets = 0;
  private verdict: OversizedPacket | null = null;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 0 || limit > MQTT_MAX_REMAINING_LENGTH) {
      throw new RangeError(
        `maxPacketBytes must be an integer from 0 to ${MQTT_MAX_REMAINING_LENGTH} (MQTT 3.1.1 section 2.2.3), got ${limit}`,
      );
    }
  }

  push(chunk: Uint8Array): OversizedPacket | null {
    if (this.verdict) return this.verdict;
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.state === 'body') {
        const skip = Math.min(this.left, n - i);
        this.left -= skip;
        i += skip;
        if (this.left === 0) this.state = 'type';
        continue;
      }
      const byte = chunk[i++] as number;
      if (this.state === 'type') {
        this.type = byte >> 4;
        this.packets++;
        this.length = 0;
        this.lengthBytes = 0;
        this.state = 'length';
        continue;
      }
      // Remaining length: 7 bits per byte, least significant first (section 2.2.3).
      if (this.lengthBytes === 4) return this.refuse(null);
      this.length += (byte & 0x7f) * 128 ** this.lengthBytes;
      this.lengthBytes++;
      if (byte & 0x80) continue;
      if (this.length > this.limit) return this.refuse(this.length);
      this.left = this.length;
      this.state = this.left === 0 ? 'type' : 'body';
    }
    return null;
  }

  private refuse(remainingLength: number | null): OversizedPacket {
    this.verdict = {
      packet: PACKET_TYPES[this.type] ?? 'unknown',
      index: this.packets,
      remainingLength,
      limit: this.limit,
    };
    return this.verdict;
  }
}
