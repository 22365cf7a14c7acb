import mqttPacket from 'mqtt-packet';

/**
 * Makes mqtt-packet (the codec of mqtt.js and Aedes) write a packet's 2-byte numbers (message
 * ids, topic lengths) as it goes instead of from its table of all 65,536 of them, which it builds
 * on the first packet written: 65,536 Buffers, ~7 MB of a process's heap for good (the largest
 * single owner in the coordinator's heap after its per-device state; BENCHMARKS.md, 2026-12-07
 * "memory at 50,000"). Writing one costs a 2-byte slice of Buffer's pool. A setting of the
 * module, shared by every client and broker in the process: called once by each program's main
 * before it connects anything (coordinator/main.ts, agent/main.ts).
 */
export function writeMqttNumbersUncached(): void {
  mqttPacket.writeToStream.cacheNumbers = false;
}
