/**
 * The REST API under `/v1`: OpenAPI 3.1 at `/docs` (JSON at `/docs/json`), TypeBox request schemas
 * (closed objects: unknown fields are errors), bearer-token authentication, role and group-scope
 * checks, and `application/problem+json` for every error. Every mutating call and every refusal is
 * audited (see ./context.ts `audited` and the error handler below).
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, type FieldError, problemType, toProblem } from '../errors.js';
import { adminRoutes } from './admin.js';
import { commandRoutes } from './commands.js';
import { type ApiContext, allows } from './context.js';
import { deploymentRoutes } from './deployments.js';
import { groupRoutes } from './groups.js';
import { maintenanceRoutes } from './maintenance.js';
import { Problem } from './schemas.js';
import { siteRoutes } from './sites.js';
import { stackRoutes } from './stacks.js';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Fastify's own errors → [status, code, title]. */
const FASTIFY_ERRORS: Record<string, [number, string, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'too-large', 'The request body is too large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported-media-type', 'Unsupported content type'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'malformed-json', 'The request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'malformed-json', 'The request body is not valid JSON'],
};

/** `/target/sites/0` in body → `body.target.sites[0]`. */
function fieldPath(part: string, pointer: string): string {
  const segs = pointer.split('/').slice(1);
  return segs.reduce(
    (acc, s) =>
      /^\d+$/.test(s) ? `${acc}[${s}]` : `${acc}.${s.replaceAll('~1', '/').replaceAll('~0', '~')}`,
    part,
  );
}

/** Validation with TypeBox: bodies exactly as sent; params and query strings converted from text first. */
function validatorCompiler({ schema, httpPart }: { schema: TSchema; httpPart?: string }) {
  const check = TypeCompiler.Compile(schema);
  const part = httpPart === 'querystring' ? 'query' : (httpPart ?? 'body');
  return (data: unknown) => {
    const value = part === 'body' ? data : Value.Default(schema, Value.Convert(schema, data));
    if (check.Check(value)) return { value };
    const errs: FieldError[] = [];
    for (const e of check.Errors(value)) {
      errs.push({ path: fieldPath(part, e.path), message: e.message });
      if (errs.length >= 20) break;
    }
    const first = errs[0];
    return {
      error: new ApiError(
        'invalid-request',
        first ? `${first.path}: ${first.message}` : `invalid ${part}`,
        errs,
      ),
    };
  };
}

function send(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).type('application/problem+json').send(body);
}

export async function registerApi(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.setValidatorCompiler(validatorCompiler);
  // Responses are plain JSON.stringify: response schemas document, they never strip or reshape.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.addSchema(Problem);

  // Compose files may be pushed raw: `Content-Type: application/yaml` (see POST /v1/stacks/{name}/revisions).
  app.addContentTypeParser(
    ['application/yaml', 'application/x-yaml', 'text/yaml'],
    { parseAs: 'string' },
    (_req, body, done) => done(null, { compose: body }),
  );

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Outpost controller API',
        version: '1',
        description:
          'Sites, groups, stacks (Compose → signed stack specs), deployments, commands, acks, audit and keys. ' +
          'Errors are application/problem+json with a stable `code`. Authenticate with `Authorization: Bearer <token>`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
      tags: ['sites', 'groups', 'stacks', 'deployments', 'commands', 'audit', 'admin'].map((name) => ({
        name,
      })),
    },
    // Shared schemas keep their $id as the component name (`#/components/schemas/Problem`).
    refResolver: {
      buildLocalReference: (json, _base, _fragment, i) =>
        typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`,
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onRequest', async (req) => {
    const access = req.routeOptions.config.access;
    if (access === undefined || access === 'public') return;
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!m) throw new ApiError('unauthorized', 'send Authorization: Bearer <token>');
    const user = ctx.store.users.authenticate(m[1]!);
    if (!user) throw new ApiError('unauthorized', 'the token is unknown, revoked, or its user is disabled');
    req.actor = { name: user.name, role: user.role, groups: user.groups, tokenId: user.tokenId };
    if (!allows(user.role, access)) {
      throw new ApiError(
        'forbidden',
        `role ${user.role} may not ${access === 'admin' ? 'administer' : 'change'} this`,
      );
    }
  });

  app.setNotFoundHandler((req, reply) => {
    send(reply, 404, {
      type: problemType('not-found'),
      title: 'No such resource',
      status: 404,
      detail: `no route ${req.method} ${req.url.split('?')[0]}`,
      code: 'not-found',
    });
  });

  app.setErrorHandler((err: FastifyError | ApiError, req: FastifyRequest, reply: FastifyReply) => {
    let problem = toProblem(err);
    if (problem.code === 'internal') {
      const fe = err as FastifyError;
      const hit = fe.code ? FASTIFY_ERRORS[fe.code] : undefined;
      if (hit)
        problem = {
          type: problemType(hit[1]),
          title: hit[2],
          status: hit[0],
          detail: fe.message,
          code: hit[1],
        };
      else if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
        problem = {
          type: problemType('invalid-request'),
          title: 'Bad request',
          status: fe.statusCode,
          detail: fe.message,
          code: 'invalid-request',
        };
      }
    }
    if (problem.status >= 500) req.log.error({ err }, 'request failed');
    const refused = problem.status === 401 || problem.status === 403;
    if (refused || (MUTATING.has(req.method) && problem.status >= 400)) {
      try {
        ctx.store.audit.append({
          actor: req.actor?.name ?? 'anonymous',
          action: req.routeOptions.config.action ?? `${req.method} ${req.routeOptions.url ?? '?'}`,
          target: JSON.stringify(req.params ?? {}),
          outcome: `${refused ? 'denied' : 'failed'}:${problem.code}`,
          detail: req.actor ? { token: req.actor.tokenId } : null,
        });
      } catch (auditErr) {
        req.log.error({ err: auditErr }, 'audit append failed');
      }
    }
    send(reply, problem.status, problem);
  });

  await app.register(
    async (v1) => {
      v1.get(
        '/health',
        { config: { access: 'public' }, schema: { tags: ['admin'], summary: 'liveness', security: [] } },
        async () => ({ ok: true }),
      );
      await siteRoutes(v1, ctx);
      await groupRoutes(v1, ctx);
      await maintenanceRoutes(v1, ctx);
      await stackRoutes(v1, ctx);
      await deploymentRoutes(v1, ctx);
      await commandRoutes(v1, ctx);
      await adminRoutes(v1, ctx);
    },
    { prefix: '/v1' },
  );
}
