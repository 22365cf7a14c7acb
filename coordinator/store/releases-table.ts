import { OtaError } from '../../shared/errors.js';
import { releaseIdOf } from '../../shared/release-id.js';
import { type Db, json, parse } from './db.js';
import type { ChannelRecord, ReleaseRecord } from './records.js';

/**
 * The releases table (one row per published model version, its signed envelope as JSON text) and
 * the channels table (which release a model's channel points to): persistence and constraints only.
 */

interface ReleaseRow {
  id: string;
  model: string;
  version: string;
  counter: number;
  sha256: string;
  size: number;
  envelope: string;
  published_by: string;
  published_at: string;
}

interface ChannelRow {
  model: string;
  channel: string;
  release_id: string;
  updated_at: string;
}

const toRelease = (row: ReleaseRow): ReleaseRecord => ({
  id: row.id,
  model: row.model,
  version: row.version,
  counter: row.counter,
  sha256: row.sha256,
  size: row.size,
  envelope: parse(row.envelope),
  publishedBy: row.published_by,
  publishedAt: row.published_at,
});

const toChannel = (row: ChannelRow): ChannelRecord => ({
  model: row.model,
  channel: row.channel,
  releaseId: row.release_id,
  updatedAt: row.updated_at,
});

/**
 * E_NOT_FOUND when the release does not exist, E_CONFLICT when it belongs to another model
 * (a row that points to a release of model M must be of model M: channels, desired entries).
 */
export function checkReleaseOf(db: Db, releaseId: string, model: string, where: string): void {
  const row = db.q<{ model: string }>('SELECT model FROM releases WHERE id = ?').get(releaseId);
  if (!row) throw new OtaError('E_NOT_FOUND', `release ${releaseId} not found (for ${where})`);
  if (row.model !== model) {
    throw new OtaError(
      'E_CONFLICT',
      `release ${releaseId} is a release of model ${row.model}, not ${model} (${where})`,
    );
  }
}

export class ReleasesTable {
  constructor(private readonly db: Db) {}

  add(release: ReleaseRecord): ReleaseRecord {
    const expected = releaseIdOf(release.model, release.version);
    if (release.id !== expected) {
      throw new OtaError('E_INTERNAL', `release id ${release.id} must be ${expected}`);
    }
    this.db.guard({ conflict: `release ${release.id} already exists` }, () =>
      this.db
        .q(
          `INSERT INTO releases (id, model, version, counter, sha256, size, envelope, published_by, published_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          release.id,
          release.model,
          release.version,
          release.counter,
          release.sha256,
          release.size,
          json(release.envelope),
          release.publishedBy,
          release.publishedAt,
        ),
    );
    return this.get(release.id) as ReleaseRecord;
  }

  get(id: string): ReleaseRecord | null {
    const row = this.db.q<ReleaseRow>('SELECT * FROM releases WHERE id = ?').get(id);
    return row ? toRelease(row) : null;
  }

  /** Ordered by model, then counter (publication order within a model). */
  list(model?: string): ReleaseRecord[] {
    const rows =
      model === undefined
        ? this.db.q<ReleaseRow>('SELECT * FROM releases ORDER BY model, counter, published_at, version').all()
        : this.db
            .q<ReleaseRow>('SELECT * FROM releases WHERE model = ? ORDER BY counter, published_at, version')
            .all(model);
    return rows.map(toRelease);
  }

  // ---- channels ----

  setChannel(channel: { model: string; channel: string; releaseId: string; now: string }): ChannelRecord {
    checkReleaseOf(this.db, channel.releaseId, channel.model, `channel ${channel.model}/${channel.channel}`);
    this.db.guard({ missing: () => `release ${channel.releaseId} not found` }, () =>
      this.db
        .q(
          `INSERT INTO channels (model, channel, release_id, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (model, channel) DO UPDATE SET release_id = excluded.release_id, updated_at = excluded.updated_at`,
        )
        .run(channel.model, channel.channel, channel.releaseId, channel.now),
    );
    return { model: channel.model, channel: channel.channel, releaseId: channel.releaseId, updatedAt: channel.now };
  }

  getChannel(model: string, channel: string): ChannelRecord | null {
    const row = this.db.q<ChannelRow>('SELECT * FROM channels WHERE model = ? AND channel = ?').get(model, channel);
    return row ? toChannel(row) : null;
  }

  listChannels(): ChannelRecord[] {
    return this.db.q<ChannelRow>('SELECT * FROM channels ORDER BY model, channel').all().map(toChannel);
  }
}
