import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../../shared/fs-atomic.js';
import { type AgentState, AgentStateSchema, initialState } from '../core/agent-state.js';

export interface StateLoad {
  state: AgentState;
  /** Set when state.json was unreadable and was moved aside (the agent starts from the disk layout). */
  recoveredFrom?: string;
}

/**
 * state.json under the state directory, written with tmp + fsync + rename + fsync(dir) so that a
 * power cut leaves either the previous state or the new one (design section 5).
 */
export class StateStore {
  readonly file: string;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'state.json');
  }

  async load(): Promise<StateLoad> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: initialState() };
      throw err;
    }
    try {
      return { state: AgentStateSchema.parse(JSON.parse(text)) };
    } catch {
      // Atomic writes make this a disk fault or a hand edit. Keep the evidence, start from what
      // is on disk (the symlinks), and let the retained desired state bring the assignment back.
      const aside = `${this.file}.corrupt-${Date.now()}`;
      await fs.rename(this.file, aside);
      return { state: initialState(), recoveredFrom: aside };
    }
  }

  async save(state: AgentState): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify(state), { mode: 0o600 });
  }
}
