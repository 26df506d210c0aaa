/** Deployment records (what was asked for); their per-site commands live in `commands`. */
import { cachedPrepare, type Db, type Prepare } from './db.js';

export interface DeploymentRecord {
  readonly id: string;
  readonly stack: string;
  readonly rev: number;
  readonly target: Record<string, unknown>;
  readonly skipped: { site: string; reason: string; pinnedRev?: number }[];
  readonly createdBy: string;
  readonly createdAt: number;
}

interface Row {
  id: string;
  stack: string;
  rev: number;
  target: string;
  skipped: string;
  created_by: string;
  created_at: number;
}

const toRecord = (r: Row): DeploymentRecord => ({
  id: r.id,
  stack: r.stack,
  rev: r.rev,
  target: JSON.parse(r.target) as Record<string, unknown>,
  skipped: JSON.parse(r.skipped) as DeploymentRecord['skipped'],
  createdBy: r.created_by,
  createdAt: r.created_at,
});

export class DeploymentsRepo {
  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
  }

  insert(d: DeploymentRecord): void {
    this.prepare(
      'INSERT INTO deployments (id, stack, rev, target, skipped, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ).run(
      d.id,
      d.stack,
      d.rev,
      JSON.stringify(d.target),
      JSON.stringify(d.skipped),
      d.createdBy,
      d.createdAt,
    );
  }

  get(id: string): DeploymentRecord | undefined {
    const r = this.prepare<[string], Row>('SELECT * FROM deployments WHERE id = ?').get(id);
    return r ? toRecord(r) : undefined;
  }

  list(opts: { stack?: string; limit: number }): DeploymentRecord[] {
    const rows = opts.stack
      ? this.prepare<[string, number], Row>(
          'SELECT * FROM deployments WHERE stack = ? ORDER BY created_at DESC, id LIMIT ?',
        ).all(opts.stack, opts.limit)
      : this.prepare<[number], Row>('SELECT * FROM deployments ORDER BY created_at DESC, id LIMIT ?').all(
          opts.limit,
        );
    return rows.map(toRecord);
  }
}
