/** Commands per site (list, get with acks, cancel pending, queue remove/restart/state.request) and acks. */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { encodeApproval, removeDigest } from '../../../protocol/src/index.js';
import { ApiError } from '../errors.js';
import { createCommand } from '../outbox/create.js';
import { COMMAND_STATUSES } from '../store/commands.js';
import { type ApiContext, allGroups, assertSitesInScope, audited, requireActor } from './context.js';
import { AckView, CommandView, errors, Limit, Name, SiteId, SiteParams } from './schemas.js';
import { ackView, commandView } from './views.js';

const SeqParams = Type.Object(
  { site: SiteId, seq: Type.Integer({ minimum: 1 }) },
  { additionalProperties: false },
);
const ListQuery = Type.Object(
  {
    status: Type.Optional(Type.Union(COMMAND_STATUSES.map((s) => Type.Literal(s)))),
    type: Type.Optional(Type.String({ maxLength: 32 })),
    before: Type.Optional(Type.Integer({ minimum: 1, description: 'seq: page backwards' })),
    limit: Limit,
  },
  { additionalProperties: false },
);
const AckQuery = Type.Object(
  { before: Type.Optional(Type.Integer({ minimum: 1 })), limit: Limit },
  { additionalProperties: false },
);
const CreateBody = Type.Union(
  [
    Type.Object(
      {
        type: Type.Literal('stack.remove'),
        stack: Name,
        volumes: Type.Optional(
          Type.Boolean({ description: 'also delete named volumes: critical, admin with approve' }),
        ),
        approve: Type.Optional(Type.Boolean()),
        force: Type.Optional(
          Type.Boolean({
            description: 'emergency: run now, ignoring the maintenance window and update locks',
          }),
        ),
        ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 365 * 86400 })),
      },
      { additionalProperties: false },
    ),
    Type.Object(
      {
        type: Type.Literal('stack.restart'),
        stack: Name,
        services: Type.Optional(Type.Array(Name, { minItems: 1, maxItems: 64 })),
        force: Type.Optional(
          Type.Boolean({
            description: 'emergency: run now, ignoring the maintenance window and update locks',
          }),
        ),
        ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 365 * 86400 })),
      },
      { additionalProperties: false },
    ),
    Type.Object(
      {
        type: Type.Literal('state.request'),
        full: Type.Optional(Type.Boolean()),
        ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 365 * 86400 })),
      },
      { additionalProperties: false },
    ),
  ],
  { description: 'stack.apply is created by deployments' },
);

export async function commandRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;
  const siteInScope = (actor: Parameters<typeof assertSitesInScope>[1], site: string): void => {
    if (!store.sites.row(site)) throw new ApiError('unknown-site', `no site ${site}`);
    assertSitesInScope(ctx, actor, [site]);
  };

  app.get(
    '/sites/:site/commands',
    {
      config: { access: 'read' },
      schema: {
        tags: ['commands'],
        summary: "a site's commands, newest first",
        params: SiteParams,
        querystring: ListQuery,
        response: { 200: Type.Object({ commands: Type.Array(CommandView) }), ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site } = req.params as Static<typeof SiteParams>;
      siteInScope(actor, site);
      const q = req.query as Static<typeof ListQuery>;
      return { commands: store.commands.list(site, q).map(commandView) };
    },
  );

  app.get(
    '/sites/:site/commands/:seq',
    {
      config: { access: 'read' },
      schema: {
        tags: ['commands'],
        summary: 'one command with the acks received for it',
        params: SeqParams,
        response: {
          200: Type.Intersect([CommandView, Type.Object({ acks: Type.Array(AckView) })]),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site, seq } = req.params as Static<typeof SeqParams>;
      siteInScope(actor, site);
      const c = store.commands.summary(site, seq);
      if (!c) throw new ApiError('unknown-command', `no command ${seq} at ${site}`);
      return { ...commandView(c), acks: store.commands.acks({ site, seq, limit: 100 }).map(ackView) };
    },
  );

  app.post(
    '/sites/:site/commands/:seq/cancel',
    {
      config: { access: 'operate', action: 'command.cancel' },
      schema: {
        tags: ['commands'],
        summary: 'cancel a pending (not yet published) command',
        params: SeqParams,
        response: { 200: CommandView, ...errors(404, 409) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site, seq } = req.params as Static<typeof SeqParams>;
      const c = audited(ctx, actor, 'command.cancel', `${site}#${seq}`, () => {
        siteInScope(actor, site);
        const before = store.commands.summary(site, seq);
        if (!before) throw new ApiError('unknown-command', `no command ${seq} at ${site}`);
        if (!store.commands.cancel(site, seq, store.now())) {
          throw new ApiError('not-cancellable', `command ${seq} at ${site} is ${before.status}`);
        }
        return {
          result: store.commands.summary(site, seq)!,
          before: { status: before.status },
          after: { status: 'cancelled' },
        };
      });
      return commandView(c);
    },
  );

  app.post(
    '/sites/:site/commands',
    {
      config: { access: 'operate', action: 'command.create' },
      schema: {
        tags: ['commands'],
        summary: 'queue stack.remove, stack.restart or state.request for a site',
        params: SiteParams,
        body: CreateBody,
        response: { 201: CommandView, ...errors(404, 409) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { site } = req.params as Static<typeof SiteParams>;
      const b = req.body as Static<typeof CreateBody>;
      const ttlSec = b.ttlSec ?? ctx.config.outbox.commandTtlSec;
      const created = audited(ctx, actor, 'command.create', site, () => {
        siteInScope(actor, site);
        const now = store.now();
        const base = { site, ttlSec, actor: actor.name };
        let c: ReturnType<typeof createCommand>;
        if (b.type === 'stack.remove') {
          let appr: Uint8Array[] | undefined;
          if (b.volumes) {
            if (!b.approve || actor.role !== 'admin' || !ctx.signing.approver) {
              throw new ApiError(
                'approval-required',
                'deleting volumes is critical: an admin must approve it, with an approver key configured',
              );
            }
            const approval = {
              v: 1 as const,
              stack: b.stack,
              rev: 0,
              dig: removeDigest(b.stack),
              sites: [site],
              iat: Math.floor(now / 1000),
            };
            appr = [encodeApproval(approval, ctx.signing.approver)];
          }
          c = createCommand(
            store,
            {
              ...base,
              type: 'stack.remove',
              body: {
                stack: b.stack,
                ...(b.volumes ? { vols: true } : {}),
                ...(appr ? { appr } : {}),
                ...(b.force ? { force: true as const } : {}),
              },
            },
            now,
          );
        } else if (b.type === 'stack.restart') {
          c = createCommand(
            store,
            {
              ...base,
              type: 'stack.restart',
              body: {
                stack: b.stack,
                ...(b.services ? { svc: b.services } : {}),
                ...(b.force ? { force: true as const } : {}),
              },
            },
            now,
          );
        } else {
          c = createCommand(
            store,
            { ...base, type: 'state.request', body: b.full === undefined ? {} : { full: b.full } },
            now,
          );
        }
        return { result: c, after: { type: b.type, seq: c.seq }, detail: { seq: c.seq, type: b.type } };
      });
      ctx.kick();
      return reply.code(201).send(commandView(store.commands.summary(site, created.seq)!));
    },
  );

  app.get(
    '/sites/:site/acks',
    {
      config: { access: 'read' },
      schema: {
        tags: ['commands'],
        summary: "a site's acks, newest first",
        params: SiteParams,
        querystring: AckQuery,
        response: { 200: Type.Object({ acks: Type.Array(AckView) }), ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site } = req.params as Static<typeof SiteParams>;
      siteInScope(actor, site);
      const q = req.query as Static<typeof AckQuery>;
      return { acks: store.commands.acks({ site, ...q }).map(ackView) };
    },
  );

  app.get(
    '/acks',
    {
      config: { access: 'read' },
      schema: {
        tags: ['commands'],
        summary: 'all acks, newest first (needs the * scope)',
        querystring: AckQuery,
        response: { 200: Type.Object({ acks: Type.Array(AckView) }), ...errors() },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      if (!allGroups(actor))
        throw new ApiError(
          'forbidden-scope',
          'listing every site needs the * scope; use /v1/sites/{site}/acks',
        );
      return { acks: store.commands.acks(req.query as Static<typeof AckQuery>).map(ackView) };
    },
  );
}
