/**
 * Staged rollouts: `POST /v1/rollouts`, `GET /v1/rollouts[/:id]` (progress per phase and per site),
 * `POST /v1/rollouts/:id/pause|resume|abort|approve`. Mutations need the operate role, every targeted
 * site within the caller's groups, and are audited in the same transaction as their effect.
 *
 * Registered by `app.ts` next to `registerApi` (it needs the engine): `rolloutRoutes(v1, ctx, engine)`.
 */
import { type Static, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { createRollout } from '../rollouts/create.js';
import { RolloutBodySchema } from '../rollouts/definition.js';
import type { RolloutEngine } from '../rollouts/engine.js';
import { RolloutError } from '../rollouts/errors.js';
import { ROLLOUT_STATES, type Rollout } from '../rollouts/repo.js';
import {
  type Actor,
  type ApiContext,
  allGroups,
  assertSitesInScope,
  audited,
  inScope,
  requireActor,
} from './context.js';
import { errors, Limit } from './schemas.js';

const IdParams = Type.Object(
  { id: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' }) },
  { additionalProperties: false },
);
const ListQuery = Type.Object(
  {
    stack: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    state: Type.Optional(Type.Union(ROLLOUT_STATES.map((s) => Type.Literal(s)))),
    limit: Limit,
  },
  { additionalProperties: false },
);
const ShowQuery = Type.Object(
  { sites: Type.Boolean({ default: true, description: 'include the per-site rows' }) },
  { additionalProperties: false },
);
const AbortBody = Type.Object(
  {
    reason: Type.Optional(Type.String({ maxLength: 200 })),
    rollback: Type.Optional(
      Type.Boolean({ description: 'roll touched sites back (default: the rollout’s own `rollback`)' }),
    ),
  },
  { additionalProperties: false },
);
const checkAbortBody = TypeCompiler.Compile(AbortBody);

const RolloutViewSchema = Type.Object(
  {
    id: Type.String(),
    stack: Type.String(),
    rev: Type.Integer(),
    state: Type.String({ description: ROLLOUT_STATES.join('|') }),
    reason: Type.Union([Type.String(), Type.Null()]),
    phase: Type.Integer({ description: 'current phase (0 = canary); = phaseCount when completed' }),
    phaseCount: Type.Integer(),
    total: Type.Integer(),
    failures: Type.Integer(),
    counts: Type.Record(Type.String(), Type.Integer(), {
      description:
        'sites by status: pending|offline|sent|accepted|deferred|applied|healthy|failed|skipped|cancelled|rolling-back|rolled-back|rollback-failed',
    }),
    phases: Type.Array(Type.Unknown()),
    sites: Type.Optional(Type.Array(Type.Unknown())),
  },
  { additionalProperties: true },
);

export async function rolloutRoutes(
  app: FastifyInstance,
  ctx: ApiContext,
  engine: RolloutEngine,
): Promise<void> {
  const { store } = ctx;
  const repo = engine.repo;

  const load = (actor: Actor, id: string): Rollout => {
    const r = repo.get(id);
    if (!r) throw new RolloutError('unknown-rollout', `no rollout ${id}`);
    assertSitesInScope(ctx, actor, repo.siteIds(id));
    return r;
  };
  const visible = (actor: Actor, r: Rollout): boolean =>
    allGroups(actor) || repo.siteIds(r.id).some((s) => inScope(actor, store.sites.groupsOf(s)));

  app.post(
    '/rollouts',
    {
      config: { access: 'operate', action: 'rollout.create' },
      schema: {
        tags: ['rollouts'],
        summary:
          'start a staged rollout: canary, then batches, health-gated, aborting and rolling back on failure',
        description:
          'The target is resolved now and split into phases (pinned sites are skipped). All targeted sites must be ' +
          'within your groups. Answers 201 after the rollout is committed; the engine starts the canary at once.',
        body: RolloutBodySchema,
        response: { 201: RolloutViewSchema, ...errors(404, 409, 422) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const b = req.body as Static<typeof RolloutBodySchema>;
      if (b.approve && actor.role !== 'admin')
        throw new ApiError('forbidden', 'only admins approve critical changes');
      const r = audited(ctx, actor, 'rollout.create', `${b.stack}@${b.rev ?? 'latest'}`, () => {
        const created = createRollout(store, repo, b, {
          actor: actor.name,
          defaultTtlSec: ctx.config.outbox.commandTtlSec,
          canApprove: ctx.signing.approver !== undefined,
          checkSites: (sites) => assertSitesInScope(ctx, actor, sites),
        });
        return {
          result: created,
          after: { id: created.id, stack: created.stack, rev: created.rev, def: created.def },
          detail: { rollout: created.id, phases: created.phases },
        };
      });
      engine.wake();
      return reply.code(201).send(engine.view(repo.get(r.id)!, true));
    },
  );

  app.get(
    '/rollouts',
    {
      config: { access: 'read' },
      schema: {
        tags: ['rollouts'],
        summary: 'recent rollouts with their progress counts (no per-site rows)',
        querystring: ListQuery,
        response: { 200: Type.Object({ rollouts: Type.Array(RolloutViewSchema) }), ...errors() },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const q = req.query as Static<typeof ListQuery>;
      return {
        rollouts: repo
          .list({ stack: q.stack, state: q.state, limit: q.limit })
          .filter((r) => visible(actor, r))
          .map((r) => engine.view(r, false)),
      };
    },
  );

  app.get(
    '/rollouts/:id',
    {
      config: { access: 'read' },
      schema: {
        tags: ['rollouts'],
        summary: 'a rollout: state, per-phase and per-site progress',
        params: IdParams,
        querystring: ShowQuery,
        response: { 200: RolloutViewSchema, ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { id } = req.params as Static<typeof IdParams>;
      const q = req.query as Static<typeof ShowQuery>;
      return engine.view(load(actor, id), q.sites);
    },
  );

  const action = (name: 'pause' | 'resume' | 'approve' | 'abort', summary: string): void => {
    app.post(
      `/rollouts/:id/${name}`,
      {
        config: { access: 'operate', action: `rollout.${name}` },
        schema: {
          tags: ['rollouts'],
          summary,
          params: IdParams,
          ...(name === 'abort' ? { description: 'optional JSON body: `{reason?, rollback?}`' } : {}),
          response: { 200: RolloutViewSchema, ...errors(404, 409) },
        },
      },
      async (req) => {
        const actor = requireActor(req.actor);
        const { id } = req.params as Static<typeof IdParams>;
        // The body is optional (a bodyless POST is fine); when given it must match AbortBody.
        const b = (req.body ?? {}) as Static<typeof AbortBody>;
        if (!checkAbortBody.Check(b)) {
          const e = [...checkAbortBody.Errors(b)][0];
          throw new ApiError(
            'invalid-request',
            `body${e?.path.replaceAll('/', '.') ?? ''}: ${e?.message ?? 'invalid'}`,
          );
        }
        let created = false;
        audited(ctx, actor, `rollout.${name}`, id, () => {
          const r = load(actor, id);
          const now = store.now();
          const before = r.state;
          if (name === 'pause') engine.pause(r, now);
          else if (name === 'resume') engine.resume(r, now);
          else if (name === 'approve') engine.approve(r, now);
          else
            created = engine.abort(
              r,
              `aborted by ${actor.name}${b.reason ? `: ${b.reason}` : ''}`,
              b.rollback ?? r.def.rollback,
              now,
            );
          return {
            result: undefined,
            before: { state: before },
            after: { state: repo.get(id)!.state },
            detail: { rollout: id, ...(b.reason ? { reason: b.reason } : {}) },
          };
        });
        if (created) ctx.kick();
        engine.wake();
        return engine.view(repo.get(id)!, true);
      },
    );
  };
  action('pause', 'pause: start no further phase (commands already sent go on and are still evaluated)');
  action('resume', 'resume a paused rollout');
  action('approve', 'approve the next phase of a rollout awaiting approval');
  action('abort', 'abort: cancel unsent commands and roll touched sites back to their previous revision');
}
