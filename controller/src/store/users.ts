/**
 * API users and bearer tokens. A token is `opt_<id>_<secret>` (32 random bytes, base64url); only its
 * sha256 is stored, so the database never holds a usable token.
 */
import { randomBytes } from 'node:crypto';
import { sha256Hex } from '../canonical-json.js';
import { cachedPrepare, type Db, type Prepare } from './db.js';

export const ROLES = ['admin', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export interface User {
  readonly name: string;
  readonly role: Role;
  /** Site groups in scope; `*` means all. */
  readonly groups: string[];
  readonly disabled: boolean;
  readonly createdAt: number;
  readonly createdBy: string;
}

export interface TokenInfo {
  readonly id: string;
  readonly user: string;
  readonly description: string;
  readonly createdAt: number;
  readonly createdBy: string;
  readonly lastUsedAt: number | null;
  readonly revokedAt: number | null;
}

interface UserRow {
  name: string;
  role: Role;
  groups: string;
  disabled: number;
  created_at: number;
  created_by: string;
}

interface TokenRow {
  id: string;
  user: string;
  description: string;
  created_at: number;
  created_by: string;
  last_used_at: number | null;
  revoked_at: number | null;
}

const toUser = (r: UserRow): User => ({
  name: r.name,
  role: r.role,
  groups: JSON.parse(r.groups) as string[],
  disabled: r.disabled === 1,
  createdAt: r.created_at,
  createdBy: r.created_by,
});

const toToken = (r: TokenRow): TokenInfo => ({
  id: r.id,
  user: r.user,
  description: r.description,
  createdAt: r.created_at,
  createdBy: r.created_by,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});

export function hashToken(token: string): string {
  return sha256Hex(token);
}

export function newToken(): { id: string; token: string } {
  const id = randomBytes(6).toString('hex');
  return { id, token: `opt_${id}_${randomBytes(32).toString('base64url')}` };
}

export class UsersRepo {
  private readonly byHash;
  private readonly touchStmt;

  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
    this.byHash = db.prepare<[string], UserRow & { token_id: string }>(
      `SELECT u.*, t.id AS token_id FROM tokens t JOIN users u ON u.name = t.user
       WHERE t.hash = ? AND t.revoked_at IS NULL AND u.disabled = 0`,
    );
    this.touchStmt = db.prepare('UPDATE tokens SET last_used_at = ? WHERE id = ?');
  }

  count(): number {
    return (this.prepare('SELECT COUNT(*) AS n FROM users').get() as { n: number }).n;
  }

  get(name: string): User | undefined {
    const r = this.prepare<[string], UserRow>('SELECT * FROM users WHERE name = ?').get(name);
    return r ? toUser(r) : undefined;
  }

  list(): User[] {
    return this.prepare<[], UserRow>('SELECT * FROM users ORDER BY name').all().map(toUser);
  }

  create(u: { name: string; role: Role; groups: string[]; actor: string; now: number }): void {
    this.prepare('INSERT INTO users (name, role, groups, created_at, created_by) VALUES (?, ?, ?, ?, ?)').run(
      u.name,
      u.role,
      JSON.stringify(u.groups),
      u.now,
      u.actor,
    );
  }

  update(name: string, u: { role?: Role; groups?: string[]; disabled?: boolean }): void {
    if (u.role) this.prepare('UPDATE users SET role = ? WHERE name = ?').run(u.role, name);
    if (u.groups)
      this.prepare('UPDATE users SET groups = ? WHERE name = ?').run(JSON.stringify(u.groups), name);
    if (u.disabled !== undefined) {
      this.prepare('UPDATE users SET disabled = ? WHERE name = ?').run(u.disabled ? 1 : 0, name);
    }
  }

  /** Registers a token (a new random one unless `token` is given). Returns the secret once. */
  addToken(t: { user: string; description: string; actor: string; now: number; token?: string }): {
    id: string;
    token: string;
  } {
    const made = t.token ? { id: hashToken(t.token).slice(0, 12), token: t.token } : newToken();
    this.prepare(
      'INSERT INTO tokens (id, user, hash, description, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)',
    ).run(made.id, t.user, hashToken(made.token), t.description, t.now, t.actor);
    return made;
  }

  hasTokenHash(hash: string): boolean {
    return this.prepare('SELECT 1 FROM tokens WHERE hash = ?').get(hash) !== undefined;
  }

  /** The user a presented token belongs to (active token, enabled user), or undefined. */
  authenticate(token: string): (User & { tokenId: string }) | undefined {
    const r = this.byHash.get(hashToken(token));
    return r ? { ...toUser(r), tokenId: r.token_id } : undefined;
  }

  touchToken(id: string, now: number): void {
    this.touchStmt.run(now, id);
  }

  tokens(user: string): TokenInfo[] {
    return this.prepare<[string], TokenRow>(
      'SELECT id, user, description, created_at, created_by, last_used_at, revoked_at FROM tokens WHERE user = ? ORDER BY created_at',
    )
      .all(user)
      .map(toToken);
  }

  token(id: string): TokenInfo | undefined {
    const r = this.prepare<[string], TokenRow>(
      'SELECT id, user, description, created_at, created_by, last_used_at, revoked_at FROM tokens WHERE id = ?',
    ).get(id);
    return r ? toToken(r) : undefined;
  }

  /** Revokes the tokens registered from an earlier `adminToken` setting (description `bootstrap (config)`). */
  revokeConfigTokensExcept(hash: string, now: number): number {
    return this.prepare(
      `UPDATE tokens SET revoked_at = ? WHERE description = 'bootstrap (config)' AND hash != ? AND revoked_at IS NULL`,
    ).run(now, hash).changes;
  }

  revokeToken(id: string, now: number): boolean {
    return (
      this.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id)
        .changes > 0
    );
  }
}
