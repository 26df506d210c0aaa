/**
 * Maintenance windows per site and per group ([MW-7]). Stored in the wire form (`mw`, SPEC [MW-1]);
 * the outbox attaches the effective policy to every stack command it creates for a site: the site's
 * own, else the policy of its first group (by name) that has one, else none (always open).
 */
import type { Maintenance } from '../../../protocol/src/index.js';
import { cachedPrepare, type Db, type Prepare } from './db.js';

export interface MaintenanceEntry {
  readonly policy: Maintenance;
  readonly updatedAt: number;
  readonly updatedBy: string;
}

export type MaintenanceScope = 'site' | 'group';

export interface EffectiveMaintenance {
  readonly policy: Maintenance;
  /** `site`, or `group:<name>`. */
  readonly source: string;
}

interface Row {
  policy: string;
  updated_at: number;
  updated_by: string;
}

const TABLE: Record<MaintenanceScope, { table: string; key: string }> = {
  site: { table: 'site_maintenance', key: 'site' },
  group: { table: 'group_maintenance', key: 'grp' },
};

export class MaintenanceRepo {
  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
  }

  get(scope: MaintenanceScope, id: string): MaintenanceEntry | undefined {
    const t = TABLE[scope];
    const r = this.prepare(`SELECT policy, updated_at, updated_by FROM ${t.table} WHERE ${t.key} = ?`).get(
      id,
    ) as Row | undefined;
    return r
      ? { policy: JSON.parse(r.policy) as Maintenance, updatedAt: r.updated_at, updatedBy: r.updated_by }
      : undefined;
  }

  set(scope: MaintenanceScope, id: string, policy: Maintenance, actor: string, now: number): void {
    const t = TABLE[scope];
    this.prepare(
      `INSERT INTO ${t.table} (${t.key}, policy, updated_at, updated_by) VALUES (?, ?, ?, ?)
       ON CONFLICT(${t.key}) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at,
         updated_by = excluded.updated_by`,
    ).run(id, JSON.stringify(policy), now, actor);
  }

  delete(scope: MaintenanceScope, id: string): boolean {
    const t = TABLE[scope];
    return this.prepare(`DELETE FROM ${t.table} WHERE ${t.key} = ?`).run(id).changes > 0;
  }

  /** The policy stack commands for `site` carry: the site's own, else its first group's (by name). */
  effective(site: string): EffectiveMaintenance | undefined {
    const own = this.get('site', site);
    if (own) return { policy: own.policy, source: 'site' };
    const r = this.prepare(
      `SELECT gm.grp AS grp, gm.policy AS policy FROM site_groups sg JOIN group_maintenance gm ON gm.grp = sg.grp
       WHERE sg.site = ? ORDER BY gm.grp LIMIT 1`,
    ).get(site) as { grp: string; policy: string } | undefined;
    return r ? { policy: JSON.parse(r.policy) as Maintenance, source: `group:${r.grp}` } : undefined;
  }
}
