import { promises as fs } from 'node:fs';
import path from 'node:path';
import { OtaError } from '../../shared/errors.js';
import { writeFileAtomic } from '../../shared/fs-atomic.js';
import { type AcceptedTrust, type TrustEnvelope, verifyTrustSelfSigned } from '../../shared/trust.js';

/**
 * trust.json under the state directory: the trust document the agent accepted last, exactly as
 * signed (docs/security.md, "Signed trust rotation"). Written atomically (tmp + fsync + rename +
 * fsync dir) before state.json, so a crash between the two leaves the new trust in place, and
 * kept apart from state.json because state.json is recoverable (moved aside and rebuilt when
 * unreadable) while trust must never fall back silently to the config's older keys: a damaged
 * trust.json stops the agent instead (TUF 5.3.8: persist the trusted root).
 */
export class TrustStore {
  readonly file: string;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'trust.json');
  }

  /** The stored document checked against its own keys, or null when there is none. */
  async load(): Promise<AcceptedTrust | null> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new OtaError('E_CONFIG', `${this.file}: cannot read it (${(err as Error).message})`);
    }
    try {
      return verifyTrustSelfSigned(JSON.parse(text));
    } catch (err) {
      throw new OtaError(
        'E_CONFIG',
        `${this.file} is damaged (${(err as Error).message}); the agent will not fall back to the older keys of its config by itself: restore the file from a backup, or remove it deliberately (the coordinator sends the trust documents again, and the agent accepts those its config's keys lead to)`,
      );
    }
  }

  async save(envelope: TrustEnvelope): Promise<void> {
    await writeFileAtomic(this.file, `${JSON.stringify(envelope)}\n`, { mode: 0o644 });
  }
}
