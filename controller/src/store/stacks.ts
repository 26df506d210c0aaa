/** Stacks and their immutable revisions (canonical spec bytes, digest, Compose source). */
import { cachedPrepare, type Db, type Prepare } from './db.js';

export interface RevisionRow {
  stack: string;
  rev: number;
  spec: Buffer;
  z: number;
  digest: Buffer;
  compose: string;
  compose_digest: Buffer;
  critical: string;
  allow_tags: number;
  created_by: string;
  created_at: number;
}

export interface Revision {
  readonly stack: string;
  readonly rev: number;
  /** The encoded spec exactly as carried in stack.apply (deflated when `z`). */
  readonly spec: Uint8Array;
  readonly z: boolean;
  readonly digest: Uint8Array;
  readonly composeDigest: Uint8Array;
  readonly critical: string[];
  readonly allowTags: boolean;
  readonly createdBy: string;
  readonly createdAt: number;
}

export interface StackInfo {
  readonly name: string;
  readonly latestRev: number;
  readonly createdAt: number;
  readonly createdBy: string;
}

function toRevision(r: RevisionRow): Revision {
  return {
    stack: r.stack,
    rev: r.rev,
    spec: new Uint8Array(r.spec),
    z: r.z === 1,
    digest: new Uint8Array(r.digest),
    composeDigest: new Uint8Array(r.compose_digest),
    critical: JSON.parse(r.critical) as string[],
    allowTags: r.allow_tags === 1,
    createdBy: r.created_by,
    createdAt: r.created_at,
  };
}

export class StacksRepo {
  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
  }

  get(name: string): StackInfo | undefined {
    const r = this.prepare<
      [string],
      { name: string; latest_rev: number; created_at: number; created_by: string }
    >('SELECT * FROM stacks WHERE name = ?').get(name);
    return r
      ? { name: r.name, latestRev: r.latest_rev, createdAt: r.created_at, createdBy: r.created_by }
      : undefined;
  }

  list(): StackInfo[] {
    return this.prepare<[], { name: string; latest_rev: number; created_at: number; created_by: string }>(
      'SELECT * FROM stacks ORDER BY name',
    )
      .all()
      .map((r) => ({
        name: r.name,
        latestRev: r.latest_rev,
        createdAt: r.created_at,
        createdBy: r.created_by,
      }));
  }

  revision(stack: string, rev: number): Revision | undefined {
    const r = this.prepare<[string, number], RevisionRow>(
      'SELECT * FROM stack_revisions WHERE stack = ? AND rev = ?',
    ).get(stack, rev);
    return r ? toRevision(r) : undefined;
  }

  compose(stack: string, rev: number): string | undefined {
    return this.prepare<[string, number], { compose: string }>(
      'SELECT compose FROM stack_revisions WHERE stack = ? AND rev = ?',
    ).get(stack, rev)?.compose;
  }

  revisions(stack: string): Revision[] {
    return this.prepare<[string], RevisionRow>('SELECT * FROM stack_revisions WHERE stack = ? ORDER BY rev')
      .all(stack)
      .map(toRevision);
  }

  /** Adds the next revision (creating the stack on its first push). Call inside a transaction. */
  addRevision(r: {
    stack: string;
    spec: Uint8Array;
    z: boolean;
    digest: Uint8Array;
    compose: string;
    composeDigest: Uint8Array;
    critical: string[];
    allowTags: boolean;
    actor: string;
    now: number;
  }): number {
    const info = this.get(r.stack);
    if (!info) {
      this.prepare('INSERT INTO stacks (name, latest_rev, created_at, created_by) VALUES (?, 0, ?, ?)').run(
        r.stack,
        r.now,
        r.actor,
      );
    }
    const rev = (info?.latestRev ?? 0) + 1;
    this.prepare(
      `INSERT INTO stack_revisions (stack, rev, spec, z, digest, compose, compose_digest, critical, allow_tags,
           created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      r.stack,
      rev,
      Buffer.from(r.spec),
      r.z ? 1 : 0,
      Buffer.from(r.digest),
      r.compose,
      Buffer.from(r.composeDigest),
      JSON.stringify(r.critical),
      r.allowTags ? 1 : 0,
      r.actor,
      r.now,
    );
    this.prepare('UPDATE stacks SET latest_rev = ? WHERE name = ?').run(rev, r.stack);
    return rev;
  }
}
