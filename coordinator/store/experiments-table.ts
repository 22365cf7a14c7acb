import { OtaError } from '../../shared/errors.js';
import type { Experiment, ExperimentDevice, ExperimentStatus } from '../experiments/types.js';
import { type Db, json, parse } from './db.js';
import { groupIds, IDS_IN_JSON, jsonIds } from './target-reads.js';

/**
 * The experiments table and experiment_devices (each device's arm): persistence and constraints
 * only. Which devices may join and what is written to their desired state is the planner's rule
 * (experiments/plan-experiment.ts).
 */

interface ExperimentRow {
  id: string;
  model: string;
  control_release: string;
  candidate_release: string;
  status: ExperimentStatus;
  body: string;
  created_at: string;
  updated_at: string;
}

interface DeviceRow {
  device_id: string;
  arm: ExperimentDevice['arm'];
  previous_release_id: string | null;
}

/** The fields kept in `body` (everything but the columns). */
type Body = Omit<Experiment, 'id' | 'model' | 'status' | 'updatedAt'>;

function bodyOf(e: Experiment): Body {
  const { id: _id, model: _model, status: _status, updatedAt: _updatedAt, ...body } = e;
  return body;
}

const toExperiment = (row: ExperimentRow): Experiment => ({
  ...parse<Body>(row.body),
  id: row.id,
  model: row.model,
  status: row.status,
  updatedAt: row.updated_at,
});

export class ExperimentsTable {
  constructor(private readonly db: Db) {}

  create(e: Experiment, devices: readonly ExperimentDevice[]): void {
    this.db.transaction(() => {
      this.db.guard(
        {
          conflict: `experiment ${e.id} already exists`,
          missing: () => `release ${e.control.releaseId} or ${e.candidate.releaseId} not found (experiment ${e.id})`,
        },
        () =>
          this.db
            .q(
              `INSERT INTO experiments (id, model, control_release, candidate_release, status, body, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
            )
            .run(
              e.id,
              e.model,
              e.control.releaseId,
              e.candidate.releaseId,
              e.status,
              json(bodyOf(e)),
              e.startedAt,
              e.updatedAt,
            ),
      );
      const insert = this.db.q(
        'INSERT INTO experiment_devices (experiment_id, device_id, arm, previous_release_id) VALUES (?, ?, ?, ?)',
      );
      for (const d of devices) {
        this.db.guard({ conflict: `device ${d.deviceId} is listed twice in experiment ${e.id}` }, () =>
          insert.run(e.id, d.deviceId, d.arm, d.previousReleaseId),
        );
      }
    });
  }

  get(id: string): Experiment | null {
    const row = this.db.q<ExperimentRow>('SELECT * FROM experiments WHERE id = ?').get(id);
    return row ? toExperiment(row) : null;
  }

  /** By start, oldest first; `running: true` only the running ones. */
  list(filter: { running?: boolean } = {}): Experiment[] {
    const where = filter.running === undefined ? '' : `WHERE status ${filter.running ? '=' : '<>'} 'running'`;
    return this.db
      .q<ExperimentRow>(`SELECT * FROM experiments ${where} ORDER BY created_at, id`)
      .all()
      .map(toExperiment);
  }

  /** Writes the experiment's fields whole (patches are merged by the caller, who holds the row). */
  update(e: Experiment): void {
    const info = this.db
      .q('UPDATE experiments SET status = ?, body = ?, updated_at = ? WHERE id = ?')
      .run(e.status, json(bodyOf(e)), e.updatedAt, e.id);
    if (info.changes === 0) throw new OtaError('E_NOT_FOUND', `experiment ${e.id} not found`);
  }

  devices(experimentId: string): ExperimentDevice[] {
    return this.db
      .q<DeviceRow>('SELECT * FROM experiment_devices WHERE experiment_id = ? ORDER BY device_id')
      .all(experimentId)
      .map((r) => ({ deviceId: r.device_id, arm: r.arm, previousReleaseId: r.previous_release_id }));
  }

  /** Running experiments of `model` that include `deviceId`. */
  runningFor(deviceId: string, model: string): Experiment[] {
    return this.db
      .q<ExperimentRow>(
        `SELECT e.* FROM experiments e JOIN experiment_devices d ON d.experiment_id = e.id
          WHERE d.device_id = ? AND e.model = ? AND e.status = 'running' ORDER BY e.created_at, e.id`,
      )
      .all(deviceId, model)
      .map(toExperiment);
  }

  /**
   * Per device of `ids` in any: the ids of the running experiments of `model` it is in, in
   * runningFor's order (target-reads.ts: one statement).
   */
  runningIdsOf(ids: readonly string[], model: string): Map<string, string[]> {
    return groupIds(
      this.db
        .q<{ device_id: string; id: string }>(
          `SELECT d.device_id, e.id FROM experiments e JOIN experiment_devices d ON d.experiment_id = e.id
          WHERE d.device_id IN ${IDS_IN_JSON} AND e.model = ? AND e.status = 'running' ORDER BY e.created_at, e.id`,
        )
        .iterate(jsonIds(ids), model),
    );
  }
}
