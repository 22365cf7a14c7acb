/**
 * Messages between the fleet simulator's controller (scripts/fleet-sim/controller.ts) and its
 * worker processes (scripts/fleet-sim/worker.ts), over the child_process IPC channel. Every
 * request carries a `rid`; the worker answers each with exactly one reply of the same `rid`.
 */

export interface SimCredentials {
  id: string;
  token: string;
}

export interface FailPolicy {
  /** Each assignment fails (probe fails, rolled back) with this probability. */
  probability: number;
  /** Devices whose every assignment fails. */
  devices: string[];
  /** Versions that fail on every device (a bad release). */
  versions: string[];
}

export interface SimBehaviour {
  /** Mean delay between two reported transitions, ms. */
  stepMs: number;
  /** Each delay is uniform in stepMs * [1 - jitter, 1 + jitter]. */
  jitter: number;
  fail: FailPolicy;
  /** Record desired states but act on none and report nothing (isolates the coordinator's publishing). */
  silent?: boolean;
}

export interface SimOptions extends SimBehaviour {
  url: string;
  /** Brokers to spread the workers over: worker i connects to urls[i % length] (bench:fleet --edges); default `url`. */
  urls?: readonly string[];
  /** MQTT keepalive, seconds (the agent uses 30). */
  keepaliveS: number;
  /** Connections being opened at once per worker. */
  connectConcurrency: number;
  /** Per connection limit, ms. */
  connectTimeoutMs: number;
}

/** What a device did for one rollout: when it got the assignment and sent each report. */
export interface RolloutTrace {
  /** First desired state naming this rollout, received at (wall-clock ms). */
  desiredAt: number | null;
  version: string | null;
  /** State -> when its report was handed to the MQTT client (wall-clock ms). */
  sent: Record<string, number>;
  /** When the broker acknowledged (PUBACK) the terminal report. */
  terminalAckAt: number | null;
  outcome: string | null;
}

export interface SimCounters {
  devices: number;
  connected: number;
  connectFailures: number;
  /** Connections lost after they were up (each reconnects). */
  disconnects: number;
  reconnects: number;
  desiredReceived: number;
  desiredIgnored: number;
  desiredInvalid: number;
  assignments: number;
  reportsSent: number;
  reportsAcked: number;
  reportErrors: number;
  outboxPending: number;
  burstReports: number;
  firstError: string | null;
}

/** Counters before anything happened. */
export function zeroCounters(): SimCounters {
  return {
    devices: 0,
    connected: 0,
    connectFailures: 0,
    disconnects: 0,
    reconnects: 0,
    desiredReceived: 0,
    desiredIgnored: 0,
    desiredInvalid: 0,
    assignments: 0,
    reportsSent: 0,
    reportsAcked: 0,
    reportErrors: 0,
    outboxPending: 0,
    burstReports: 0,
    firstError: null,
  };
}

export type ToWorker =
  | { rid: number; type: 'init'; options: SimOptions; devices: SimCredentials[] }
  | { rid: number; type: 'connect' }
  | { rid: number; type: 'behaviour'; behaviour: Partial<SimBehaviour> }
  | { rid: number; type: 'burst'; reportsPerDevice: number }
  | { rid: number; type: 'metrics'; summariesPerDevice: number; fromMs: number; observations: number }
  | { rid: number; type: 'traces'; rolloutIds: string[] }
  | { rid: number; type: 'counters' }
  | { rid: number; type: 'idle' }
  | { rid: number; type: 'stop' };

export interface ConnectResult {
  connected: number;
  failed: number;
  firstError: string | null;
  startedAt: number;
  /** When the last device of this worker was connected, subscribed and its status acknowledged. */
  doneAt: number;
  /** Per device connect latency, ms (CONNECT sent -> status acknowledged). */
  latenciesMs: number[];
}

export interface BurstResult {
  sent: number;
  acked: number;
  /**
   * Ingest bursts: the model entries in the reports sent, summed. 0 when no rollout gave the
   * devices a model: the coordinator then has no history row to write for them (a lighter load).
   */
  models?: number;
  startedAt: number;
  doneAt: number;
}

export type TracesResult = Record<string, Record<string, RolloutTrace>>; // device -> rollout -> trace

export type FromWorker =
  | { rid: number; ok: true; result: unknown; rssMB: number; cpuSeconds: number }
  | { rid: number; ok: false; error: string };
