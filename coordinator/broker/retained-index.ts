import { Readable } from 'node:stream';
import type { AedesMemoryPersistence } from 'aedes-persistence';
import * as aedesPersistence from 'aedes-persistence';

// A CommonJS module: at run time its namespace's `default` is module.exports, the factory that
// its types declare as the default export (TypeScript sees one `default` more than Node does).
const createMemoryPersistence = aedesPersistence.default as unknown as () => AedesMemoryPersistence;

interface RetainedPacket {
  topic: string;
  payload: Buffer;
  [key: string]: unknown;
}

/** The two methods of Aedes's in-memory persistence this wrapper changes (aedes-persistence 11). */
interface RetainedStore {
  storeRetained(packet: RetainedPacket, cb?: (err: Error | null) => void): unknown;
  createRetainedStreamCombi(patterns: string[]): Readable;
  createRetainedStream(pattern: string): Readable;
}

const WILDCARD = /[+#]/;

/**
 * Aedes's in-memory persistence, answering SUBSCRIBE for filters without wildcards from a
 * `Map<topic, packet>` instead of testing every retained message against the filter. Every
 * device subscribes to its own `.../desired` (no wildcard) on each connect, and the stock store
 * walks all retained messages (each device's status, desired: 20,000+ at 10,000 devices) per
 * subscription: O(N) per connect, O(N^2) for a fleet reconnecting after a coordinator restart
 * (24 s of CPU at 10,000 devices, BENCHMARKS.md). Filters with `+` or `#` (operators, fleet
 * scripts) still go through the stock matcher. Writes go to both, so they never disagree.
 */
export function retainedIndexPersistence(): AedesMemoryPersistence {
  const persistence = createMemoryPersistence();
  const store = persistence as unknown as RetainedStore;
  const byTopic = new Map<string, RetainedPacket>();
  const storeRetained = store.storeRetained.bind(store);
  const combi = store.createRetainedStreamCombi.bind(store);
  const single = store.createRetainedStream.bind(store);

  store.storeRetained = (packet, cb) => {
    // As the stock store: an empty payload deletes the topic's retained message (MQTT-3.3.1-10).
    if (packet.payload.length === 0) byTopic.delete(packet.topic);
    else byTopic.set(packet.topic, { ...packet });
    return storeRetained(packet, cb);
  };
  const exact = (patterns: string[]): Readable => {
    const found: RetainedPacket[] = [];
    for (const topic of new Set(patterns)) {
      const packet = byTopic.get(topic);
      if (packet) found.push(packet);
    }
    return Readable.from(found);
  };
  store.createRetainedStreamCombi = (patterns) =>
    patterns.some((p) => WILDCARD.test(p)) ? combi(patterns) : exact(patterns);
  store.createRetainedStream = (pattern) => (WILDCARD.test(pattern) ? single(pattern) : exact([pattern]));
  return persistence;
}
