import mqtt, { type MqttClient } from 'mqtt';
import type { AuditEvent, RolloutSummary } from '../../shared/messages.js';
import { OUTCOME_STATES } from '../../shared/states.js';
import { createTopics } from '../../shared/topics.js';
import { wallMs } from './common.js';

const topics = createTopics();
const TERMINAL = OUTCOME_STATES;

export interface WaveSeen {
  index: number;
  percent: number;
  devices: number;
  /** First summary showing the wave started (its assignments were published just before it). */
  startedAt: number | null;
  /** First summary showing every device of the wave terminal (or the wave completed). */
  terminalAt: number | null;
}

export interface RolloutSeen {
  id: string;
  summaries: number;
  firstAt: number;
  last: RolloutSummary;
  waves: WaveSeen[];
  haltedAt: number | null;
  completedAt: number | null;
  /** The `rollout.halted` audit event (its details name the device whose report tripped it). */
  haltEvent: AuditEvent | null;
}

/**
 * An operator's read-only view of the wire: subscribes to `ota/v1/rollouts/+` and `ota/v1/audit`
 * with the admin credentials and keeps, per rollout, when each wave was first seen started and
 * all terminal, and when `halted` / `completed` was first seen (wall-clock ms of receipt).
 * Summaries are not kept (at 10,000 devices there is one per report).
 */
export class RolloutObserver {
  readonly rollouts = new Map<string, RolloutSeen>();
  auditEvents = 0;
  private waiters: (() => void)[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      const at = wallMs();
      try {
        if (topic === topics.audit()) {
          this.auditEvents++;
          const event = JSON.parse(payload.toString('utf8')) as AuditEvent;
          if (event.action === 'rollout.halted') {
            const id = String(event.details.rolloutId);
            const seen = this.rollouts.get(id);
            if (seen) seen.haltEvent ??= event;
            else this.pendingHalts.set(id, event);
          }
        } else {
          const summary = JSON.parse(payload.toString('utf8')) as RolloutSummary;
          this.onSummary(summary, at);
        }
      } catch {
        // not ours
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  private readonly pendingHalts = new Map<string, AuditEvent>();

  static async connect(url: string, user: string, token: string): Promise<RolloutObserver> {
    const client = await mqtt.connectAsync(url, {
      clientId: `${user}@bench-watch`, // an operator's client id: name@suffix (broker/acl.ts)
      username: user,
      password: token,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 30_000,
    });
    const observer = new RolloutObserver(client);
    await client.subscribeAsync([topics.allRollouts(), topics.audit()], { qos: 1 });
    return observer;
  }

  private onSummary(s: RolloutSummary, at: number): void {
    let seen = this.rollouts.get(s.id);
    if (!seen) {
      seen = {
        id: s.id,
        summaries: 0,
        firstAt: at,
        last: s,
        waves: s.waves.map((w) => ({
          index: w.wave - 1,
          percent: w.percent,
          devices: w.devices,
          startedAt: null,
          terminalAt: null,
        })),
        haltedAt: null,
        completedAt: null,
        haltEvent: this.pendingHalts.get(s.id) ?? null,
      };
      this.rollouts.set(s.id, seen);
    }
    seen.summaries++;
    seen.last = s;
    for (const w of s.waves) {
      const ws = seen.waves[w.wave - 1];
      if (!ws) continue;
      if (ws.startedAt === null && (w.state === 'running' || w.state === 'completed')) ws.startedAt = at;
      const terminal = TERMINAL.reduce((n, k) => n + (w.counts[k] ?? 0), 0);
      if (ws.terminalAt === null && ws.startedAt !== null && (terminal >= w.devices || w.state === 'completed')) {
        ws.terminalAt = at;
      }
    }
    if (s.status === 'halted') seen.haltedAt ??= at;
    if (s.status === 'completed') seen.completedAt ??= at;
  }

  /** Resolves with the rollout once `pred` holds (checked on every message), or throws after `timeoutMs`. */
  async waitFor(id: string, pred: (r: RolloutSeen) => boolean, what: string, timeoutMs: number): Promise<RolloutSeen> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.rollouts.get(id);
      if (r && pred(r)) return r;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for rollout ${id} to be ${what} (last status ${r?.last.status ?? 'none'}, wave ${r?.last.currentWave ?? '-'}, counts ${JSON.stringify(r?.last.waves.map((w) => w.counts) ?? null)})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
