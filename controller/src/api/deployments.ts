/** Deployments: a stack revision to explicit sites, a group or a label selector. */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { deploy, resolveTarget, type Target } from '../deploy.js';
import { ApiError } from '../errors.js';
import type { DeploymentRecord } from '../store/deployments.js';
import {
  type Actor,
  type ApiContext,
  allGroups,
  assertSitesInScope,
  audited,
  inScope,
  requireActor,
} from './context.js';
import { DeploymentView, errors, GroupName, Limit, Name, SiteId } from './schemas.js';
import { iso } from './views.js';

export const TargetSchema = Type.Object(
  {
    sites: Type.Optional(Type.Array(SiteId, { minItems: 1, maxItems: 100_000, uniqueItems: true })),
    group: Type.Optional(GroupName),
    selector: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1024,
        description: 'e.g. `region=north,tier=edge`; also `k!=v`, `k`, `!k`',
      }),
    ),
  },
  {
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 1,
    description: 'exactly one of sites, group, selector',
  },
);

const CreateBody = Type.Object(
  {
    stack: Name,
    rev: Type.Optional(Type.Integer({ minimum: 1, description: 'default: the latest revision' })),
    target: TargetSchema,
    ttlSec: Type.Optional(
      Type.Integer({
        minimum: 60,
        maximum: 365 * 86400,
        description: 'command lifetime (default outbox.commandTtlSec)',
      }),
    ),
    approve: Type.Optional(
      Type.Boolean({
        description: 'admin only: approve a critical revision with the controller approver key',
      }),
    ),
    force: Type.Optional(
      Type.Boolean({
        description:
          "emergency: sites apply at once, ignoring their maintenance window and the stack's update lock",
      }),
    ),
    approvals: Type.Optional(
      Type.Array(
        Type.String({ maxLength: 1024, description: 'base64 COSE_Sign1 approval signed elsewhere' }),
        { maxItems: 16 },
      ),
    ),
  },
  { additionalProperties: false },
);
const IdParams = Type.Object(
  { id: Type.String({ pattern: '^d-[0-9a-f]{16}$' }) },
  { additionalProperties: false },
);
const ListQuery = Type.Object({ stack: Type.Optional(Name), limit: Limit }, { additionalProperties: false });

export async function deploymentRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;

  const view = (d: DeploymentRecord) => {
    const commands = store.commands
      .byDeployment(d.id)
      .map((c) => ({ site: c.site, seq: c.seq, status: c.status }));
    const counts: Record<string, number> = {};
    for (const c of commands) counts[c.status] = (counts[c.status] ?? 0) + 1;
    return { ...d, createdAt: iso(d.createdAt), commands, counts };
  };
  const visible = (actor: Actor, d: ReturnType<typeof view>): boolean =>
    allGroups(actor) || d.commands.some((c) => inScope(actor, store.sites.groupsOf(c.site)));

  app.post(
    '/deployments',
    {
      config: { access: 'operate', action: 'deployment.create' },
      schema: {
        tags: ['deployments'],
        summary:
          'deploy a stack revision: one stack.apply command per targeted site (pinned sites are skipped)',
        description:
          'All targeted sites must be within your groups, or nothing is created (403 forbidden-scope). ' +
          'Critical revisions (privileged, host network, host mounts) need `approve: true` from an admin with an approver key configured, or `approvals`. ' +
          'Answers 201 only after the commands are durably committed (I1, I5).',
        body: CreateBody,
        response: { 201: DeploymentView, ...errors(404, 409, 422) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const b = req.body as Static<typeof CreateBody>;
      if (b.approve && actor.role !== 'admin')
        throw new ApiError('forbidden', 'only admins approve critical changes');
      const approvals = (b.approvals ?? []).map((a) => new Uint8Array(Buffer.from(a, 'base64')));
      const result = audited(ctx, actor, 'deployment.create', `${b.stack}@${b.rev ?? 'latest'}`, () => {
        const info = store.stacks.get(b.stack);
        if (!info) throw new ApiError('unknown-stack', `no stack ${b.stack}`);
        const revision = store.stacks.revision(b.stack, b.rev ?? info.latestRev);
        if (!revision) throw new ApiError('unknown-revision', `no revision ${b.rev} of ${b.stack}`);
        const sites = resolveTarget(store, b.target as Target);
        assertSitesInScope(ctx, actor, sites);
        if (revision.critical.length > 0 && b.approve && !ctx.signing.approver && approvals.length === 0) {
          throw new ApiError(
            'approval-required',
            'no approver key is configured (approver.kid); pass approvals instead',
          );
        }
        const d = deploy(
          {
            store,
            actor: actor.name,
            ttlSec: b.ttlSec ?? ctx.config.outbox.commandTtlSec,
            now: store.now(),
            approvals,
            ...(b.force ? { force: true } : {}),
            ...(b.approve && ctx.signing.approver ? { approver: ctx.signing.approver } : {}),
          },
          revision,
          sites,
          b.target as Target,
        );
        return {
          result: d,
          after: { stack: d.stack, rev: d.rev, commands: d.commands.map((c) => `${c.site}#${c.seq}`) },
          detail: { deployment: d.id, sites: d.commands.length, skipped: d.skipped.length },
        };
      });
      ctx.kick();
      return reply.code(201).send(view(store.deployments.get(result.id)!));
    },
  );

  app.get(
    '/deployments',
    {
      config: { access: 'read' },
      schema: {
        tags: ['deployments'],
        summary: 'recent deployments',
        querystring: ListQuery,
        response: { 200: Type.Object({ deployments: Type.Array(DeploymentView) }), ...errors() },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const q = req.query as Static<typeof ListQuery>;
      return {
        deployments: store.deployments
          .list({ ...(q.stack ? { stack: q.stack } : {}), limit: q.limit })
          .map(view)
          .filter((d) => visible(actor, d)),
      };
    },
  );

  app.get(
    '/deployments/:id',
    {
      config: { access: 'read' },
      schema: {
        tags: ['deployments'],
        summary: 'a deployment with per-site command status',
        params: IdParams,
        response: { 200: DeploymentView, ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { id } = req.params as Static<typeof IdParams>;
      const d = store.deployments.get(id);
      if (!d) throw new ApiError('unknown-deployment', `no deployment ${id}`);
      const v = view(d);
      assertSitesInScope(
        ctx,
        actor,
        v.commands.map((c) => c.site),
      );
      return v;
    },
  );
}
