import type { Logger } from '../../shared/logger.js';
import { PacedFlush } from '../paced-flush.js';
import { type Store, WRITE_BEHIND } from '../store/store.js';

export interface PresenceRecorderDeps {
  store: Store;
  now: () => Date;
  logger: Logger;
  /** Written at most this often under load (10,000 devices connect at once); next turn when quiet. */
  everyMs: number;
}

type Facts = { facts: never; agentVersion: string | null };

/**
 * Which devices are connected, kept in memory (counted here, not by scanning the devices table on
 * every connect) and written behind to the devices table (presence, last seen, facts).
 */
export class PresenceRecorder {
  private readonly online = new Set<string>();
  private readonly pending = new Map<string, { online: boolean; facts?: Facts }>();
  private readonly writer: PacedFlush;

  constructor(private readonly deps: PresenceRecorderDeps) {
    this.writer = new PacedFlush(
      () => this.write(),
      deps.everyMs,
      () => deps.now().getTime(),
    );
  }

  /** A device came or went; `status` is its status message when it sent one (facts, agent version). */
  record(deviceId: string, online: boolean, status?: { facts?: unknown; agentVersion?: string | undefined }): void {
    const previous = this.pending.get(deviceId);
    const facts: Facts | undefined = status?.facts
      ? { facts: status.facts as never, agentVersion: status.agentVersion ?? null }
      : previous?.facts;
    this.pending.set(deviceId, facts ? { online, facts } : { online });
    this.writer.schedule();
    if (online) this.online.add(deviceId);
    else this.online.delete(deviceId);
  }

  /** Drops a removed device: it is not connected (its session was ended) and nothing of it waits. */
  forget(deviceId: string): void {
    this.online.delete(deviceId);
    this.pending.delete(deviceId);
  }

  isOnline(deviceId: string): boolean {
    return this.online.has(deviceId);
  }

  get connected(): number {
    return this.online.size;
  }

  flushIfScheduled(): void {
    this.writer.runIfScheduled();
  }

  flush(): void {
    this.writer.run();
  }

  private write(): void {
    if (this.pending.size === 0) return;
    const { store, logger } = this.deps;
    const batch = [...this.pending];
    this.pending.clear();
    const ts = this.deps.now().toISOString();
    try {
      store.transaction(() => {
        for (const [deviceId, p] of batch) {
          try {
            store.setDevicePresence(deviceId, p.online, ts, p.facts);
          } catch {
            // removed meanwhile
          }
        }
      }, WRITE_BEHIND);
    } catch (err) {
      logger.error({ err: (err as Error).message, devices: batch.length }, 'recording presence failed');
    }
  }
}
