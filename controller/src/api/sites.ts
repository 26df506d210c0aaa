/** Sites (enrolment, listing with state), groups, per-site env overrides and pins. */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { publicKeyFromPem } from '../../../protocol/src/index.js';
import { ApiError } from '../errors.js';
import { matches, parseSelector } from '../selector.js';
import type { EnvOverride } from '../store/sites.js';
import { type ApiContext, assertSitesInScope, audited, inScope, requireActor } from './context.js';
import {
  EnvMap,
  errors,
  GroupName,
  Groups,
  Labels,
  Limit,
  Name,
  SiteId,
  SiteParams,
  SiteView,
} from './schemas.js';
import { siteView } from './views.js';

const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Accepts an SPKI PEM, or base64 of the raw 32-byte key or of its SPKI DER. */
export function parseUplinkKey(text: string): Uint8Array {
  const t = text.trim();
  if (t.startsWith('-----BEGIN')) {
    try {
      return publicKeyFromPem(t);
    } catch (err) {
      throw new ApiError('bad-key', (err as Error).message);
    }
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(t))
    throw new ApiError('bad-key', 'uplinkKey must be an SPKI PEM or base64');
  const raw = Buffer.from(t, 'base64');
  if (raw.length === 32) return new Uint8Array(raw);
  if (raw.length === 44 && raw.subarray(0, 12).equals(SPKI_PREFIX)) return new Uint8Array(raw.subarray(12));
  throw new ApiError('bad-key', `expected a 32-byte Ed25519 public key, got ${raw.length} bytes`);
}

const EnrolBody = Type.Object(
  {
    id: SiteId,
    uplinkKey: Type.String({
      minLength: 40,
      maxLength: 1024,
      description: 'SPKI PEM or base64 of the Ed25519 uplink key',
    }),
    labels: Type.Optional(Labels),
    groups: Type.Optional(Groups),
  },
  { additionalProperties: false },
);
const PatchBody = Type.Object(
  {
    uplinkKey: Type.Optional(EnrolBody.properties.uplinkKey),
    labels: Type.Optional(Labels),
    groups: Type.Optional(Groups),
  },
  { additionalProperties: false, minProperties: 1 },
);
const ListQuery = Type.Object(
  {
    group: Type.Optional(GroupName),
    selector: Type.Optional(Type.String({ maxLength: 1024 })),
    online: Type.Optional(Type.Boolean()),
    after: Type.Optional(SiteId),
    limit: Limit,
  },
  { additionalProperties: false },
);
const OverrideBody = Type.Object(
  {
    env: Type.Optional(EnvMap),
    services: Type.Optional(
      Type.Record(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' }), EnvMap, { maxProperties: 64 }),
    ),
  },
  { additionalProperties: false },
);
const SiteStack = Type.Object({ site: SiteId, stack: Name }, { additionalProperties: false });

export async function siteRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;

  const checkGroups = (groups: readonly string[]): void => {
    const unknown = groups.filter((g) => !store.sites.groupExists(g));
    if (unknown.length > 0)
      throw new ApiError('unknown-group', `no group ${unknown.join(', ')} (create it first)`);
  };
  const siteOr404 = (id: string) => {
    const s = store.sites.get(id);
    if (!s) throw new ApiError('unknown-site', `no site ${id}`);
    return s;
  };

  app.post(
    '/sites',
    {
      config: { access: 'admin', action: 'site.enrol' },
      schema: {
        tags: ['sites'],
        summary: 'enrol a site with its uplink public key',
        body: EnrolBody,
        response: { 201: SiteView, ...errors(404, 409) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const b = req.body as Static<typeof EnrolBody>;
      const uplinkPub = parseUplinkKey(b.uplinkKey);
      const site = audited(ctx, actor, 'site.enrol', b.id, () => {
        if (store.sites.row(b.id)) throw new ApiError('site-exists', `site ${b.id} is already enrolled`);
        checkGroups(b.groups ?? []);
        store.sites.enrol({
          id: b.id,
          uplinkPub,
          labels: b.labels ?? {},
          groups: b.groups ?? [],
          now: store.now(),
        });
        const s = store.sites.get(b.id)!;
        return {
          result: s,
          after: {
            id: s.id,
            labels: s.labels,
            groups: s.groups,
            key: Buffer.from(uplinkPub).toString('hex'),
          },
        };
      });
      ctx.invalidateSite(b.id);
      return reply.code(201).send(siteView(site, store.now(), ctx.staleMs));
    },
  );

  app.get(
    '/sites',
    {
      config: { access: 'read' },
      schema: {
        tags: ['sites'],
        summary: 'list sites with their state, age and online flag (only those in your groups)',
        querystring: ListQuery,
        response: {
          200: Type.Object({ sites: Type.Array(SiteView), next: Type.Optional(Type.String()) }),
          ...errors(),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const q = req.query as Static<typeof ListQuery>;
      const terms = q.selector ? parseSelector(q.selector) : undefined;
      const now = store.now();
      const all = store.sites
        .list()
        .filter(
          (s) =>
            inScope(actor, s.groups) &&
            (q.group === undefined || s.groups.includes(q.group)) &&
            (terms === undefined || matches(s.labels, terms)) &&
            (q.after === undefined || s.id > q.after),
        )
        .map((s) => siteView(s, now, ctx.staleMs))
        .filter((v) => q.online === undefined || (v.online === true) === q.online);
      const page = all.slice(0, q.limit);
      const next = all.length > q.limit ? page[page.length - 1]?.id : undefined;
      return { sites: page, ...(next ? { next } : {}) };
    },
  );

  app.get(
    '/sites/:site',
    {
      config: { access: 'read' },
      schema: {
        tags: ['sites'],
        summary: 'one site, with its overrides and pins',
        params: SiteParams,
        response: {
          200: Type.Intersect([
            SiteView,
            Type.Object({ overrides: Type.Unknown(), pins: Type.Record(Type.String(), Type.Integer()) }),
          ]),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site } = req.params as Static<typeof SiteParams>;
      const s = siteOr404(site);
      assertSitesInScope(ctx, actor, [site]);
      return {
        ...siteView(s, store.now(), ctx.staleMs),
        overrides: store.sites.overrides(site),
        pins: store.sites.pins(site),
      };
    },
  );

  app.patch(
    '/sites/:site',
    {
      config: { access: 'admin', action: 'site.update' },
      schema: {
        tags: ['sites'],
        summary: 'change labels, groups or the uplink key',
        params: SiteParams,
        body: PatchBody,
        response: { 200: SiteView, ...errors(404) },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site } = req.params as Static<typeof SiteParams>;
      const b = req.body as Static<typeof PatchBody>;
      const uplinkPub = b.uplinkKey ? parseUplinkKey(b.uplinkKey) : undefined;
      const s = audited(ctx, actor, 'site.update', site, () => {
        const before = siteOr404(site);
        if (b.groups) checkGroups(b.groups);
        store.sites.update(site, {
          ...(uplinkPub ? { uplinkPub } : {}),
          ...(b.labels ? { labels: b.labels } : {}),
          ...(b.groups ? { groups: b.groups } : {}),
        });
        const after = store.sites.get(site)!;
        const digestable = (x: typeof after) => ({
          labels: x.labels,
          groups: x.groups,
          key: Buffer.from(x.uplinkPub).toString('hex'),
        });
        return {
          result: after,
          before: digestable(before),
          after: digestable(after),
          detail: { fields: Object.keys(b) },
        };
      });
      ctx.invalidateSite(site);
      return siteView(s, store.now(), ctx.staleMs);
    },
  );

  app.put(
    '/sites/:site/overrides/:stack',
    {
      config: { access: 'operate', action: 'site.override.set' },
      schema: {
        tags: ['sites'],
        summary: 'set per-site env values for a stack (merged into every later stack.apply for this site)',
        description:
          '`env` applies to every service of the stack, `services.<name>` to one service (after `env`).',
        params: SiteStack,
        body: OverrideBody,
        response: {
          200: Type.Object({ site: Type.String(), stack: Type.String(), override: Type.Unknown() }),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site, stack } = req.params as Static<typeof SiteStack>;
      const o = req.body as EnvOverride;
      const override: EnvOverride = { env: o.env ?? {}, ...(o.services ? { services: o.services } : {}) };
      audited(ctx, actor, 'site.override.set', `${site}/${stack}`, () => {
        siteOr404(site);
        assertSitesInScope(ctx, actor, [site]);
        const before = store.sites.override(site, stack) ?? null;
        store.sites.setOverride(site, stack, override, actor.name, store.now());
        return {
          result: undefined,
          before,
          after: override,
          detail: { keys: Object.keys(override.env).length },
        };
      });
      return { site, stack, override };
    },
  );

  app.delete(
    '/sites/:site/overrides/:stack',
    {
      config: { access: 'operate', action: 'site.override.delete' },
      schema: {
        tags: ['sites'],
        summary: 'remove per-site env values',
        params: SiteStack,
        response: { 204: Type.Null(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { site, stack } = req.params as Static<typeof SiteStack>;
      audited(ctx, actor, 'site.override.delete', `${site}/${stack}`, () => {
        siteOr404(site);
        assertSitesInScope(ctx, actor, [site]);
        const before = store.sites.override(site, stack);
        if (!before || !store.sites.deleteOverride(site, stack))
          throw new ApiError('not-found', `no override of ${stack} at ${site}`);
        return { result: undefined, before };
      });
      return reply.code(204).send();
    },
  );

  app.put(
    '/sites/:site/pins/:stack',
    {
      config: { access: 'operate', action: 'site.pin' },
      schema: {
        tags: ['sites'],
        summary: 'pin a site to a stack revision (deployments of other revisions skip it)',
        params: SiteStack,
        body: Type.Object({ rev: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
        response: {
          200: Type.Object({ site: Type.String(), stack: Type.String(), rev: Type.Integer() }),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { site, stack } = req.params as Static<typeof SiteStack>;
      const { rev } = req.body as { rev: number };
      audited(ctx, actor, 'site.pin', `${site}/${stack}`, () => {
        siteOr404(site);
        assertSitesInScope(ctx, actor, [site]);
        if (!store.stacks.revision(stack, rev))
          throw new ApiError('unknown-revision', `no revision ${rev} of ${stack}`);
        const before = store.sites.pin(site, stack) ?? null;
        store.sites.setPin(site, stack, rev, actor.name, store.now());
        return { result: undefined, before: before === null ? null : { rev: before }, after: { rev } };
      });
      return { site, stack, rev };
    },
  );

  app.delete(
    '/sites/:site/pins/:stack',
    {
      config: { access: 'operate', action: 'site.unpin' },
      schema: {
        tags: ['sites'],
        summary: 'unpin',
        params: SiteStack,
        response: { 204: Type.Null(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { site, stack } = req.params as Static<typeof SiteStack>;
      audited(ctx, actor, 'site.unpin', `${site}/${stack}`, () => {
        siteOr404(site);
        assertSitesInScope(ctx, actor, [site]);
        const before = store.sites.pin(site, stack);
        if (before === undefined || !store.sites.deletePin(site, stack))
          throw new ApiError('not-found', `${site} is not pinned for ${stack}`);
        return { result: undefined, before: { rev: before } };
      });
      return reply.code(204).send();
    },
  );
}
