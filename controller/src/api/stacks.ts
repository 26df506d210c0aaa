/** Stacks: push a Compose file as a new revision, list revisions, read a revision's spec and source. */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { decodeSpec, type StackSpec, sha256 } from '../../../protocol/src/index.js';
import { composeToSpec, SUPPORTED_SERVICE_KEYS, SUPPORTED_TOP_LEVEL_KEYS } from '../compose/index.js';
import { ApiError } from '../errors.js';
import { type ApiContext, audited, requireActor } from './context.js';
import { errors, Name, RevisionView } from './schemas.js';
import { iso, revisionView } from './views.js';

const StackParams = Type.Object({ name: Name }, { additionalProperties: false });
const RevParams = Type.Object(
  { name: Name, rev: Type.Integer({ minimum: 1 }) },
  { additionalProperties: false },
);
const PushBody = Type.Object(
  {
    compose: Type.String({ minLength: 1, description: 'the Compose file (YAML)' }),
    allowTags: Type.Optional(
      Type.Boolean({ description: 'accept repo:tag images (needs policy.allowTags)' }),
    ),
  },
  { additionalProperties: false },
);
const PushQuery = Type.Object({ allowTags: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const PushResult = Type.Object({ revision: RevisionView, unchanged: Type.Boolean() });

/** The spec as JSON for people: digests as `sha256:<hex>`. */
export function specJson(spec: StackSpec): unknown {
  return JSON.parse(
    JSON.stringify(spec, (k, v: unknown) =>
      k === 'dig' && v instanceof Uint8Array ? `sha256:${Buffer.from(v).toString('hex')}` : v,
    ),
  );
}

export async function stackRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;

  app.post(
    '/stacks/:name/revisions',
    {
      config: { access: 'operate', action: 'stack.push' },
      schema: {
        tags: ['stacks'],
        summary: 'push a Compose file: a new revision when its canonical spec differs from the latest',
        description:
          'Body: JSON `{compose, allowTags?}`, or the raw YAML with `Content-Type: application/yaml` (and `?allowTags=true`). ' +
          `Supported top-level keys: ${SUPPORTED_TOP_LEVEL_KEYS.join(', ')}, x-*. Supported service keys: ${SUPPORTED_SERVICE_KEYS.join(', ')}, x-*. ` +
          'Images must be pinned by digest (repo@sha256:<64 hex>) unless allowTags is asked and policy permits it. ' +
          'Variable interpolation ($VAR and its braced form) is rejected ($$ is a literal $); use per-site env overrides. ' +
          'Errors are `invalid-compose` problems listing every offending key path (`services.web.ports[1]`). ' +
          'Pushing content equal to the latest revision returns it with `unchanged: true` (200).',
        params: StackParams,
        querystring: PushQuery,
        body: PushBody,
        response: { 200: PushResult, 201: PushResult, ...errors(413, 415, 422) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { name } = req.params as Static<typeof StackParams>;
      const body = req.body as Static<typeof PushBody>;
      const allowTags = body.allowTags ?? (req.query as Static<typeof PushQuery>).allowTags ?? false;
      if (allowTags && !ctx.config.policy.allowTags) {
        throw new ApiError(
          'forbidden',
          'the controller policy does not permit tag images (policy.allowTags)',
        );
      }
      const t = composeToSpec(body.compose, { stack: name, allowTags });
      const composeDigest = sha256(new TextEncoder().encode(body.compose));
      const out = audited(ctx, actor, 'stack.push', name, () => {
        const info = store.stacks.get(name);
        const latest = info ? store.stacks.revision(name, info.latestRev) : undefined;
        if (latest && Buffer.from(latest.digest).equals(Buffer.from(t.encoded.digest))) {
          return {
            result: { rev: latest.rev, unchanged: true },
            detail: { rev: latest.rev, unchanged: true },
          };
        }
        const rev = store.stacks.addRevision({
          stack: name,
          spec: t.encoded.bytes,
          z: t.encoded.z,
          digest: t.encoded.digest,
          compose: body.compose,
          composeDigest,
          critical: t.critical,
          allowTags,
          actor: actor.name,
          now: store.now(),
        });
        return {
          result: { rev, unchanged: false },
          before: latest ? { digest: Buffer.from(latest.digest).toString('hex') } : null,
          after: { digest: Buffer.from(t.encoded.digest).toString('hex') },
          detail: { rev, critical: t.critical.length > 0 },
        };
      });
      const revision = store.stacks.revision(name, out.rev)!;
      return reply
        .code(out.unchanged ? 200 : 201)
        .send({ revision: revisionView(revision), unchanged: out.unchanged });
    },
  );

  const StackInfo = Type.Object({
    name: Type.String(),
    latestRev: Type.Integer(),
    createdAt: Type.String(),
    createdBy: Type.String(),
  });

  app.get(
    '/stacks',
    {
      config: { access: 'read' },
      schema: {
        tags: ['stacks'],
        summary: 'list stacks',
        response: { 200: Type.Object({ stacks: Type.Array(StackInfo) }), ...errors() },
      },
    },
    async () => ({ stacks: store.stacks.list().map((s) => ({ ...s, createdAt: iso(s.createdAt) })) }),
  );

  app.get(
    '/stacks/:name',
    {
      config: { access: 'read' },
      schema: {
        tags: ['stacks'],
        summary: 'a stack and its revisions',
        params: StackParams,
        response: {
          200: Type.Intersect([StackInfo, Type.Object({ revisions: Type.Array(RevisionView) })]),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const { name } = req.params as Static<typeof StackParams>;
      const s = store.stacks.get(name);
      if (!s) throw new ApiError('unknown-stack', `no stack ${name}`);
      return { ...s, createdAt: iso(s.createdAt), revisions: store.stacks.revisions(name).map(revisionView) };
    },
  );

  app.get(
    '/stacks/:name/revisions/:rev',
    {
      config: { access: 'read' },
      schema: {
        tags: ['stacks'],
        summary: 'a revision with its canonical spec',
        params: RevParams,
        response: {
          200: Type.Intersect([RevisionView, Type.Object({ spec: Type.Unknown() })]),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const { name, rev } = req.params as Static<typeof RevParams>;
      const r = store.stacks.revision(name, rev);
      if (!r) throw new ApiError('unknown-revision', `no revision ${rev} of ${name}`);
      return { ...revisionView(r), spec: specJson(decodeSpec(r.spec, r.z)) };
    },
  );

  app.get(
    '/stacks/:name/revisions/:rev/compose',
    {
      config: { access: 'read' },
      schema: {
        tags: ['stacks'],
        summary: 'the Compose source a revision was pushed from (application/yaml)',
        params: RevParams,
        response: { 200: Type.String(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const { name, rev } = req.params as Static<typeof RevParams>;
      const src = store.stacks.compose(name, rev);
      if (src === undefined) throw new ApiError('unknown-revision', `no revision ${rev} of ${name}`);
      return reply
        .type('application/yaml')
        .serializer((s) => s as string)
        .send(src);
    },
  );
}
