/** Users and tokens, audit (list, verify, export), keys and trust root, controller stats. */
import { PassThrough } from 'node:stream';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { type AuditFormat, exportAudit, verifyChain } from '../audit.js';
import { ApiError } from '../errors.js';
import { ROLES, type User } from '../store/users.js';
import { type ApiContext, audited, requireActor } from './context.js';
import { errors, GROUP } from './schemas.js';
import { iso, isoOrNull } from './views.js';

const UserName = Type.String({ pattern: '^[a-z0-9][a-z0-9_.@-]{0,62}$' });
const Role = Type.Union(ROLES.map((r) => Type.Literal(r)));
const Scope = Type.Array(Type.String({ pattern: `^(\\*|${GROUP.slice(1, -1)})$` }), {
  minItems: 1,
  maxItems: 64,
  uniqueItems: true,
  description: 'site groups in scope; ["*"] for all',
});
const UserView = Type.Object({
  name: Type.String(),
  role: Type.String(),
  groups: Type.Array(Type.String()),
  disabled: Type.Boolean(),
  createdAt: Type.String(),
  createdBy: Type.String(),
});
const TokenView = Type.Object({
  id: Type.String(),
  user: Type.String(),
  description: Type.String(),
  createdAt: Type.String(),
  createdBy: Type.String(),
  lastUsedAt: Type.Union([Type.String(), Type.Null()]),
  revokedAt: Type.Union([Type.String(), Type.Null()]),
});
const NameParams = Type.Object({ name: UserName }, { additionalProperties: false });
const AuditEntryView = Type.Object({
  seq: Type.Integer(),
  at: Type.String(),
  actor: Type.String(),
  action: Type.String(),
  target: Type.String(),
  outcome: Type.String(),
  before: Type.Union([Type.String(), Type.Null()]),
  after: Type.Union([Type.String(), Type.Null()]),
  detail: Type.Unknown(),
  prev: Type.String(),
  hash: Type.String(),
});

const userView = (u: User) => ({ ...u, createdAt: iso(u.createdAt) });
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

export async function adminRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;
  const userOr404 = (name: string): User => {
    const u = store.users.get(name);
    if (!u) throw new ApiError('unknown-user', `no user ${name}`);
    return u;
  };

  app.get(
    '/whoami',
    {
      config: { access: 'read' },
      schema: {
        tags: ['admin'],
        summary: 'the caller',
        response: {
          200: Type.Object({ name: Type.String(), role: Type.String(), groups: Type.Array(Type.String()) }),
          ...errors(),
        },
      },
    },
    async (req) => {
      const { name, role, groups } = requireActor(req.actor);
      return { name, role, groups };
    },
  );

  app.post(
    '/users',
    {
      config: { access: 'admin', action: 'user.create' },
      schema: {
        tags: ['admin'],
        summary: 'create a user (admin, operator or viewer) scoped to site groups',
        body: Type.Object({ name: UserName, role: Role, groups: Scope }, { additionalProperties: false }),
        response: { 201: UserView, ...errors(409) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const b = req.body as { name: string; role: User['role']; groups: string[] };
      const u = audited(ctx, actor, 'user.create', b.name, () => {
        if (store.users.get(b.name)) throw new ApiError('user-exists', `user ${b.name} exists`);
        store.users.create({ ...b, actor: actor.name, now: store.now() });
        return { result: store.users.get(b.name)!, after: b };
      });
      return reply.code(201).send(userView(u));
    },
  );

  app.get(
    '/users',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['admin'],
        summary: 'list users',
        response: { 200: Type.Object({ users: Type.Array(UserView) }), ...errors() },
      },
    },
    async () => ({ users: store.users.list().map(userView) }),
  );

  const PatchUser = Type.Object(
    { role: Type.Optional(Role), groups: Type.Optional(Scope), disabled: Type.Optional(Type.Boolean()) },
    { additionalProperties: false, minProperties: 1 },
  );
  app.patch(
    '/users/:name',
    {
      config: { access: 'admin', action: 'user.update' },
      schema: {
        tags: ['admin'],
        summary: 'change role, groups, or disable',
        params: NameParams,
        body: PatchUser,
        response: { 200: UserView, ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { name } = req.params as Static<typeof NameParams>;
      const b = req.body as Static<typeof PatchUser>;
      const u = audited(ctx, actor, 'user.update', name, () => {
        const before = userOr404(name);
        store.users.update(name, b);
        const after = store.users.get(name)!;
        return {
          result: after,
          before: { role: before.role, groups: before.groups, disabled: before.disabled },
          after: { role: after.role, groups: after.groups, disabled: after.disabled },
        };
      });
      return userView(u);
    },
  );

  app.post(
    '/users/:name/tokens',
    {
      config: { access: 'admin', action: 'token.create' },
      schema: {
        tags: ['admin'],
        summary: 'issue a bearer token (shown once; only its sha256 is stored)',
        params: NameParams,
        body: Type.Object(
          { description: Type.Optional(Type.String({ maxLength: 256 })) },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({ id: Type.String(), user: Type.String(), token: Type.String() }),
          ...errors(404),
        },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { name } = req.params as Static<typeof NameParams>;
      const { description = '' } = (req.body ?? {}) as { description?: string };
      const t = audited(ctx, actor, 'token.create', name, () => {
        userOr404(name);
        const made = store.users.addToken({ user: name, description, actor: actor.name, now: store.now() });
        return { result: made, detail: { tokenId: made.id } };
      });
      return reply.code(201).send({ id: t.id, user: name, token: t.token });
    },
  );

  app.get(
    '/users/:name/tokens',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['admin'],
        summary: "a user's tokens (no secrets)",
        params: NameParams,
        response: { 200: Type.Object({ tokens: Type.Array(TokenView) }), ...errors(404) },
      },
    },
    async (req) => {
      const { name } = req.params as Static<typeof NameParams>;
      userOr404(name);
      return {
        tokens: store.users.tokens(name).map((t) => ({
          ...t,
          createdAt: iso(t.createdAt),
          lastUsedAt: isoOrNull(t.lastUsedAt),
          revokedAt: isoOrNull(t.revokedAt),
        })),
      };
    },
  );

  const TokenParams = Type.Object(
    { id: Type.String({ pattern: '^[0-9a-f]{12}$' }) },
    { additionalProperties: false },
  );
  app.delete(
    '/tokens/:id',
    {
      config: { access: 'admin', action: 'token.revoke' },
      schema: {
        tags: ['admin'],
        summary: 'revoke a token',
        params: TokenParams,
        response: { 204: Type.Null(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { id } = req.params as Static<typeof TokenParams>;
      audited(ctx, actor, 'token.revoke', id, () => {
        if (!store.users.token(id)) throw new ApiError('unknown-token', `no token ${id}`);
        if (!store.users.revokeToken(id, store.now()))
          throw new ApiError('unknown-token', `token ${id} is already revoked`);
        return { result: undefined };
      });
      return reply.code(204).send();
    },
  );

  // ---- audit -----------------------------------------------------------------------------------

  const AuditQuery = Type.Object(
    {
      after: Type.Integer({ minimum: 0, default: 0 }),
      limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 100 }),
    },
    { additionalProperties: false },
  );
  app.get(
    '/audit',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['audit'],
        summary: 'audit entries in seq order',
        querystring: AuditQuery,
        response: { 200: Type.Object({ entries: Type.Array(AuditEntryView) }), ...errors() },
      },
    },
    async (req) => {
      const q = req.query as Static<typeof AuditQuery>;
      return { entries: store.audit.list(q.after, q.limit) };
    },
  );

  app.get(
    '/audit/verify',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['audit'],
        summary: 'verify the hash chain; names the first bad entry',
        response: {
          200: Type.Object({
            ok: Type.Boolean(),
            entries: Type.Integer(),
            head: Type.String(),
            badRow: Type.Optional(Type.Integer()),
            reason: Type.Optional(Type.String()),
          }),
          ...errors(),
        },
      },
    },
    async () => verifyChain(store.db),
  );

  const ExportQuery = Type.Object(
    { format: Type.Union([Type.Literal('jsonl'), Type.Literal('csv')], { default: 'jsonl' }) },
    { additionalProperties: false },
  );
  app.get(
    '/audit/export',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['audit'],
        summary: 'the whole log as JSON lines or CSV',
        querystring: ExportQuery,
        response: { 200: Type.String(), ...errors() },
      },
    },
    async (req, reply) => {
      const { format } = req.query as { format: AuditFormat };
      const out = new PassThrough();
      exportAudit(store.db, format, out).then(
        () => out.end(),
        (err: unknown) => out.destroy(err as Error),
      );
      return reply.type(format === 'csv' ? 'text/csv' : 'application/jsonl').send(out);
    },
  );

  // ---- keys and stats --------------------------------------------------------------------------

  app.get(
    '/keys',
    {
      config: { access: 'read' },
      schema: {
        tags: ['admin'],
        summary: 'the signing and approver keys in use, and the trust root in certsDir',
        response: { 200: Type.Unknown(), ...errors() },
      },
    },
    async () => {
      const { signer, approver } = ctx.signing;
      const root = ctx.trustRoot();
      return {
        signing: { kid: signer.kid, publicKey: b64(signer.publicKey) },
        approver: approver ? { kid: approver.kid, publicKey: b64(approver.publicKey) } : null,
        trustRoot: root
          ? {
              version: root.ver,
              issuedAt: iso(root.iat * 1000),
              expiresAt: root.exp === undefined ? null : iso(root.exp * 1000),
              threshold: root.thr,
              critical: root.crit,
              roots: root.roots.map((r) => ({ kid: r.kid, publicKey: b64(r.pub) })),
              keys: root.keys.map((k) => ({ kid: k.kid, publicKey: b64(k.pub), types: k.types })),
              signingKeyListed: root.keys.some(
                (k) => k.kid === signer.kid && Buffer.from(k.pub).equals(Buffer.from(signer.publicKey)),
              ),
            }
          : null,
      };
    },
  );

  app.get(
    '/stats',
    {
      config: { access: 'read' },
      schema: {
        tags: ['admin'],
        summary: 'outbox and ingest counters',
        response: { 200: Type.Unknown(), ...errors() },
      },
    },
    async () => ctx.stats(),
  );
}
