/** Sites, groups, per-site env overrides and pins. */
import type { SiteStatus, State } from '../../../protocol/src/index.js';
import { cachedPrepare, type Db, type Prepare } from './db.js';

export interface SiteRow {
  id: string;
  uplink_pub: Buffer;
  labels: string;
  enrolled_at: number;
  seq_alloc: number;
  seq_issued: number;
  issued_at: number | null;
  last_contact: number | null;
  online: number | null;
  status_json: string | null;
  status_at: number | null;
  state_json: string | null;
  state_at: number | null;
  state_useq: number | null;
  last_useq: number | null;
}

/** The controller's merged view of a site's reported state (snapshots replace, deltas merge). */
export type SiteState = Omit<State, 'v' | 'site' | 'gone'>;

export interface Site {
  readonly id: string;
  readonly uplinkPub: Uint8Array;
  readonly labels: Record<string, string>;
  readonly groups: string[];
  readonly enrolledAt: number;
  readonly seqAllocated: number;
  readonly seqIssued: number;
  readonly lastContact: number | null;
  readonly online: boolean | null;
  readonly status: SiteStatus | null;
  readonly statusAt: number | null;
  readonly state: SiteState | null;
  readonly stateAt: number | null;
}

export interface EnvOverride {
  /** Applied to every service of the stack. */
  readonly env: Record<string, string>;
  /** Per service, applied after `env`. */
  readonly services?: Record<string, Record<string, string>>;
}

export interface GroupInfo {
  readonly name: string;
  readonly description: string;
  readonly createdAt: number;
  readonly sites: number;
}

export class SitesRepo {
  private readonly byId;
  private readonly groupsOfStmt;
  private readonly allGroups;

  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
    this.byId = db.prepare<[string], SiteRow>('SELECT * FROM sites WHERE id = ?');
    this.groupsOfStmt = db.prepare<[string], { grp: string }>(
      'SELECT grp FROM site_groups WHERE site = ? ORDER BY grp',
    );
    this.allGroups = db.prepare<[], { site: string; grp: string }>('SELECT site, grp FROM site_groups');
  }

  private toSite(r: SiteRow, groups: string[]): Site {
    return {
      id: r.id,
      uplinkPub: new Uint8Array(r.uplink_pub),
      labels: JSON.parse(r.labels) as Record<string, string>,
      groups,
      enrolledAt: r.enrolled_at,
      seqAllocated: r.seq_alloc,
      seqIssued: r.seq_issued,
      lastContact: r.last_contact,
      online: r.online === null ? null : r.online === 1,
      status: r.status_json ? (JSON.parse(r.status_json) as SiteStatus) : null,
      statusAt: r.status_at,
      state: r.state_json ? (JSON.parse(r.state_json) as SiteState) : null,
      stateAt: r.state_at,
    };
  }

  get(id: string): Site | undefined {
    const r = this.byId.get(id);
    return r ? this.toSite(r, this.groupsOf(id)) : undefined;
  }

  row(id: string): SiteRow | undefined {
    return this.byId.get(id);
  }

  /** The seq of the last command issued to the site: the `prev` of the next one. */
  seqIssued(id: string): number {
    return (
      this.prepare<[string], { seq_issued: number }>('SELECT seq_issued FROM sites WHERE id = ?').get(id)
        ?.seq_issued ?? 0
    );
  }

  groupsOf(id: string): string[] {
    return this.groupsOfStmt.all(id).map((g) => g.grp);
  }

  /** All sites (ordered by id), with their groups. */
  list(): Site[] {
    const groups = new Map<string, string[]>();
    for (const { site, grp } of this.allGroups.all()) {
      const g = groups.get(site);
      if (g) g.push(grp);
      else groups.set(site, [grp]);
    }
    return this.prepare<[], SiteRow>('SELECT * FROM sites ORDER BY id')
      .all()
      .map((r) => this.toSite(r, (groups.get(r.id) ?? []).sort()));
  }

  ids(): string[] {
    return this.prepare<[], { id: string }>('SELECT id FROM sites ORDER BY id')
      .all()
      .map((r) => r.id);
  }

  enrol(s: {
    id: string;
    uplinkPub: Uint8Array;
    labels: Record<string, string>;
    groups: string[];
    now: number;
  }): void {
    this.prepare(
      'INSERT INTO sites (id, uplink_pub, labels, enrolled_at, issued_at) VALUES (?, ?, ?, ?, ?)',
    ).run(s.id, Buffer.from(s.uplinkPub), JSON.stringify(s.labels), s.now, s.now);
    this.setGroups(s.id, s.groups);
  }

  update(
    id: string,
    u: { uplinkPub?: Uint8Array; labels?: Record<string, string>; groups?: string[] },
  ): void {
    if (u.uplinkPub)
      this.prepare('UPDATE sites SET uplink_pub = ? WHERE id = ?').run(Buffer.from(u.uplinkPub), id);
    if (u.labels) this.prepare('UPDATE sites SET labels = ? WHERE id = ?').run(JSON.stringify(u.labels), id);
    if (u.groups) this.setGroups(id, u.groups);
  }

  private setGroups(id: string, groups: readonly string[]): void {
    this.prepare('DELETE FROM site_groups WHERE site = ?').run(id);
    const ins = this.prepare('INSERT INTO site_groups (site, grp) VALUES (?, ?)');
    for (const g of new Set(groups)) ins.run(id, g);
  }

  // ---- uplink bookkeeping (ingest) ----------------------------------------------------------

  touch(id: string, now: number): void {
    this.prepare('UPDATE sites SET last_contact = ? WHERE id = ?').run(now, id);
  }

  /** Records the retained status; returns the previous online flag. */
  setStatus(id: string, status: SiteStatus, now: number): boolean | null {
    const prev = this.byId.get(id);
    this.prepare('UPDATE sites SET online = ?, status_json = ?, status_at = ? WHERE id = ?').run(
      status.online ? 1 : 0,
      JSON.stringify(status),
      now,
      id,
    );
    if (status.online) this.touch(id, now);
    return prev?.online === null || prev === undefined ? null : prev.online === 1;
  }

  setState(id: string, state: SiteState, now: number): void {
    this.prepare(
      'UPDATE sites SET state_json = ?, state_at = ?, state_useq = ?, last_contact = ? WHERE id = ?',
    ).run(JSON.stringify(state), now, state.useq, now, id);
  }

  // ---- groups ---------------------------------------------------------------------------------

  groupExists(name: string): boolean {
    return this.prepare('SELECT 1 FROM groups WHERE name = ?').get(name) !== undefined;
  }

  createGroup(name: string, description: string, now: number): void {
    this.prepare('INSERT INTO groups (name, description, created_at) VALUES (?, ?, ?)').run(
      name,
      description,
      now,
    );
  }

  listGroups(): GroupInfo[] {
    return this.prepare<[], { name: string; description: string; created_at: number; n: number }>(
      `SELECT g.name, g.description, g.created_at, COUNT(sg.site) AS n
         FROM groups g LEFT JOIN site_groups sg ON sg.grp = g.name GROUP BY g.name ORDER BY g.name`,
    )
      .all()
      .map((g) => ({ name: g.name, description: g.description, createdAt: g.created_at, sites: g.n }));
  }

  members(group: string): string[] {
    return this.prepare<[string], { site: string }>(
      'SELECT site FROM site_groups WHERE grp = ? ORDER BY site',
    )
      .all(group)
      .map((r) => r.site);
  }

  addMember(group: string, site: string): void {
    this.prepare('INSERT OR IGNORE INTO site_groups (site, grp) VALUES (?, ?)').run(site, group);
  }

  removeMember(group: string, site: string): boolean {
    return this.prepare('DELETE FROM site_groups WHERE site = ? AND grp = ?').run(site, group).changes > 0;
  }

  // ---- overrides and pins ---------------------------------------------------------------------

  override(site: string, stack: string): EnvOverride | undefined {
    const r = this.prepare<[string, string], { env: string }>(
      'SELECT env FROM site_overrides WHERE site = ? AND stack = ?',
    ).get(site, stack);
    return r ? (JSON.parse(r.env) as EnvOverride) : undefined;
  }

  overrides(site: string): Record<string, EnvOverride> {
    const rows = this.prepare<[string], { stack: string; env: string }>(
      'SELECT stack, env FROM site_overrides WHERE site = ? ORDER BY stack',
    ).all(site);
    return Object.fromEntries(rows.map((r) => [r.stack, JSON.parse(r.env) as EnvOverride]));
  }

  setOverride(site: string, stack: string, o: EnvOverride, actor: string, now: number): void {
    this.prepare(
      `INSERT INTO site_overrides (site, stack, env, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (site, stack) DO UPDATE SET env = excluded.env, updated_at = excluded.updated_at,
           updated_by = excluded.updated_by`,
    ).run(site, stack, JSON.stringify(o), now, actor);
  }

  deleteOverride(site: string, stack: string): boolean {
    return (
      this.prepare('DELETE FROM site_overrides WHERE site = ? AND stack = ?').run(site, stack).changes > 0
    );
  }

  pin(site: string, stack: string): number | undefined {
    return this.prepare<[string, string], { rev: number }>(
      'SELECT rev FROM site_pins WHERE site = ? AND stack = ?',
    ).get(site, stack)?.rev;
  }

  pins(site: string): Record<string, number> {
    const rows = this.prepare<[string], { stack: string; rev: number }>(
      'SELECT stack, rev FROM site_pins WHERE site = ? ORDER BY stack',
    ).all(site);
    return Object.fromEntries(rows.map((r) => [r.stack, r.rev]));
  }

  setPin(site: string, stack: string, rev: number, actor: string, now: number): void {
    this.prepare(
      `INSERT INTO site_pins (site, stack, rev, pinned_at, pinned_by) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (site, stack) DO UPDATE SET rev = excluded.rev, pinned_at = excluded.pinned_at,
           pinned_by = excluded.pinned_by`,
    ).run(site, stack, rev, now, actor);
  }

  deletePin(site: string, stack: string): boolean {
    return this.prepare('DELETE FROM site_pins WHERE site = ? AND stack = ?').run(site, stack).changes > 0;
  }
}
