/** Site groups: create, list (yours), members, add and remove sites. */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { type ApiContext, allGroups, audited, requireActor } from './context.js';
import { errors, GroupName, SiteId } from './schemas.js';

const GroupParams = Type.Object({ group: GroupName }, { additionalProperties: false });
const GroupSite = Type.Object({ group: GroupName, site: SiteId }, { additionalProperties: false });

export async function groupRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;
  const siteOr404 = (id: string): void => {
    if (!store.sites.row(id)) throw new ApiError('unknown-site', `no site ${id}`);
  };

  const GroupView = Type.Object({
    name: Type.String(),
    description: Type.String(),
    createdAt: Type.String(),
    sites: Type.Integer(),
  });

  app.post(
    '/groups',
    {
      config: { access: 'admin', action: 'group.create' },
      schema: {
        tags: ['groups'],
        summary: 'create a site group',
        body: Type.Object(
          { name: GroupName, description: Type.Optional(Type.String({ maxLength: 1024 })) },
          { additionalProperties: false },
        ),
        response: { 201: GroupView, ...errors(409) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { name, description = '' } = req.body as { name: string; description?: string };
      audited(ctx, actor, 'group.create', name, () => {
        if (store.sites.groupExists(name)) throw new ApiError('group-exists', `group ${name} exists`);
        store.sites.createGroup(name, description, store.now());
        return { result: undefined, after: { name, description } };
      });
      const g = store.sites.listGroups().find((x) => x.name === name)!;
      return reply.code(201).send({ ...g, createdAt: new Date(g.createdAt).toISOString() });
    },
  );

  app.get(
    '/groups',
    {
      config: { access: 'read' },
      schema: {
        tags: ['groups'],
        summary: 'list groups (yours)',
        response: { 200: Type.Object({ groups: Type.Array(GroupView) }), ...errors() },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const groups = store.sites
        .listGroups()
        .filter((g) => allGroups(actor) || actor.groups.includes(g.name));
      return { groups: groups.map((g) => ({ ...g, createdAt: new Date(g.createdAt).toISOString() })) };
    },
  );

  app.get(
    '/groups/:group',
    {
      config: { access: 'read' },
      schema: {
        tags: ['groups'],
        summary: 'a group and its member sites',
        params: GroupParams,
        response: {
          200: Type.Intersect([GroupView, Type.Object({ members: Type.Array(Type.String()) })]),
          ...errors(404),
        },
      },
    },
    async (req) => {
      const actor = requireActor(req.actor);
      const { group } = req.params as Static<typeof GroupParams>;
      const g = store.sites.listGroups().find((x) => x.name === group);
      if (!g) throw new ApiError('unknown-group', `no group ${group}`);
      if (!allGroups(actor) && !actor.groups.includes(group))
        throw new ApiError('forbidden-scope', `group ${group} is not yours`);
      return { ...g, createdAt: new Date(g.createdAt).toISOString(), members: store.sites.members(group) };
    },
  );

  app.put(
    '/groups/:group/sites/:site',
    {
      config: { access: 'admin', action: 'group.add-site' },
      schema: {
        tags: ['groups'],
        summary: 'add a site to a group',
        params: GroupSite,
        response: { 204: Type.Null(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { group, site } = req.params as Static<typeof GroupSite>;
      audited(ctx, actor, 'group.add-site', `${group}/${site}`, () => {
        if (!store.sites.groupExists(group)) throw new ApiError('unknown-group', `no group ${group}`);
        siteOr404(site);
        store.sites.addMember(group, site);
        return { result: undefined };
      });
      return reply.code(204).send();
    },
  );

  app.delete(
    '/groups/:group/sites/:site',
    {
      config: { access: 'admin', action: 'group.remove-site' },
      schema: {
        tags: ['groups'],
        summary: 'remove a site from a group',
        params: GroupSite,
        response: { 204: Type.Null(), ...errors(404) },
      },
    },
    async (req, reply) => {
      const actor = requireActor(req.actor);
      const { group, site } = req.params as Static<typeof GroupSite>;
      audited(ctx, actor, 'group.remove-site', `${group}/${site}`, () => {
        if (!store.sites.removeMember(group, site))
          throw new ApiError('not-found', `${site} is not in ${group}`);
        return { result: undefined };
      });
      return reply.code(204).send();
    },
  );
}
