/**
 * Strings that many devices hold alike (a rollout id, a version, a release id) kept once in
 * per-device state: JSON.parse and SQLite make a new copy of each in every report or row (36,752
 * copies of one rollout id in a heap snapshot at 50,000 devices). Bounded: past `limit` distinct
 * strings (a fleet whose every device reports a version of its own), new ones are kept as they
 * came.
 */
export class StringPool {
  private readonly strings = new Map<string, string>();

  constructor(private readonly limit = 4096) {}

  get size(): number {
    return this.strings.size;
  }

  intern(s: string): string;
  intern(s: string | null): string | null;
  intern(s: string | null): string | null {
    if (s === null) return null;
    const kept = this.strings.get(s);
    if (kept !== undefined) return kept;
    if (this.strings.size < this.limit) this.strings.set(s, s);
    return s;
  }
}
