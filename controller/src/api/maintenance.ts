/**
 * Maintenance windows per site and per group ([MW-7]): `PUT/GET/DELETE /v1/sites/{site}/maintenance`
 * and `/v1/groups/{group}/maintenance`. The API takes a readable form (`days` as ISO weekday numbers
 * or names, `start`/`end` as `HH:MM` local time); the store and the wire keep the compact `mw` form.
 * A site's own policy overrides its groups'; the outbox attaches the effective one to every stack
 * command created afterwards (commands already created keep the window they were signed with).
 */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import {
  daysToMask,
  type Maintenance,
  maintenanceProblem,
  maskToDays,
  parseWeekday,
} from '../../../protocol/src/index.js';
import { ApiError, type FieldError } from '../errors.js';
import type { EffectiveMaintenance, MaintenanceEntry, MaintenanceScope } from '../store/maintenance.js';
import {
  type Actor,
  type ApiContext,
  allGroups,
  assertSitesInScope,
  audited,
  requireActor,
} from './context.js';
import { errors, GroupName, SiteParams } from './schemas.js';

const GroupParams = Type.Object({ group: GroupName }, { additionalProperties: false });

const HHMM = Type.String({ description: 'local wall-clock time HH:MM (00:00..23:59)', maxLength: 5 });
const WindowIn = Type.Object(
  {
    days: Type.Optional(
      Type.Array(Type.Union([Type.Integer(), Type.String({ maxLength: 9 })]), {
        minItems: 1,
        maxItems: 7,
        description:
          'ISO weekdays the window starts on: 1 (Monday) .. 7 (Sunday) or mon..sun; default every day',
      }),
    ),
    start: HHMM,
    end: Type.String({
      maxLength: 5,
      description: 'HH:MM; at or before start: the window ends the next day (equal: 24 hours)',
    }),
  },
  { additionalProperties: false },
);
const MaintenanceIn = Type.Object(
  {
    tz: Type.String({ maxLength: 64, description: 'IANA time zone of the site, e.g. Europe/Berlin' }),
    windows: Type.Array(WindowIn, { minItems: 1, maxItems: 8 }),
  },
  { additionalProperties: false },
);
const WindowOut = Type.Object({
  days: Type.Array(Type.Integer({ minimum: 1, maximum: 7 })),
  start: Type.String(),
  end: Type.String(),
});
const PolicyOut = Type.Object({ tz: Type.String(), windows: Type.Array(WindowOut) });
const MaintenanceView = Type.Object({
  /** `site` or `group`. */
  scope: Type.String(),
  id: Type.String(),
  policy: Type.Union([PolicyOut, Type.Null()], { description: 'this site or group’s own policy' }),
  updatedAt: Type.Optional(Type.String()),
  updatedBy: Type.Optional(Type.String()),
  effective: Type.Optional(
    Type.Union([
      Type.Intersect([
        PolicyOut,
        Type.Object({ source: Type.String({ description: 'site or group:<name>' }) }),
      ]),
      Type.Null(),
    ]),
  ),
});

type In = Static<typeof MaintenanceIn>;

/** The API form to the wire form, or a 400 naming every bad field. */
export function toWire(b: In): Maintenance {
  const problems: FieldError[] = [];
  const w = b.windows.map((x, i) => {
    let d: number | undefined;
    if (x.days) {
      const days = x.days.map(parseWeekday);
      const bad = days.indexOf(undefined);
      if (bad >= 0)
        problems.push({ path: `body.windows[${i}].days[${bad}]`, message: 'expected 1..7 or mon..sun' });
      else {
        const mask = daysToMask(days as number[]);
        if (mask !== 0x7f) d = mask;
      }
    }
    return { ...(d !== undefined ? { d } : {}), s: x.start, e: x.end };
  });
  const mw: Maintenance = { tz: b.tz, w };
  const p = maintenanceProblem(mw);
  if (p) {
    // The wire path (`/w/0/s`) in the API's terms and style (`body.windows[0].start`).
    const path = `body${p.path}`
      .replace('/w', '.windows')
      .replace(/\/(\d+)/g, '[$1]')
      .replace(/\/s$/, '.start')
      .replace(/\/e$/, '.end')
      .replace(/\/d$/, '.days')
      .replace(/\/tz$/, '.tz');
    problems.push({ path, message: p.message });
  }
  if (problems.length > 0)
    throw new ApiError(
      'invalid-request',
      `maintenance window: ${problems[0]!.path}: ${problems[0]!.message}`,
      problems,
    );
  return mw;
}

const fromWire = (mw: Maintenance) => ({
  tz: mw.tz,
  windows: mw.w.map((x) => ({ days: maskToDays(x.d), start: x.s, end: x.e })),
});

function view(
  scope: MaintenanceScope,
  id: string,
  e: MaintenanceEntry | undefined,
  eff?: EffectiveMaintenance | null,
) {
  return {
    scope,
    id,
    policy: e ? fromWire(e.policy) : null,
    ...(e ? { updatedAt: new Date(e.updatedAt).toISOString(), updatedBy: e.updatedBy } : {}),
    ...(eff !== undefined ? { effective: eff ? { ...fromWire(eff.policy), source: eff.source } : null } : {}),
  };
}

export async function maintenanceRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { store } = ctx;
  const siteInScope = (actor: Actor, site: string): void => {
    if (!store.sites.row(site)) throw new ApiError('unknown-site', `no site ${site}`);
    assertSitesInScope(ctx, actor, [site]);
  };
  const groupInScope = (actor: Actor, group: string): void => {
    if (!store.sites.groupExists(group)) throw new ApiError('unknown-group', `no group ${group}`);
    if (!allGroups(actor) && !actor.groups.includes(group))
      throw new ApiError('forbidden-scope', `group ${group} is not yours`);
  };

  for (const scope of ['site', 'group'] as const) {
    const path = scope === 'site' ? '/sites/:site/maintenance' : '/groups/:group/maintenance';
    const params = scope === 'site' ? SiteParams : GroupParams;
    const idOf = (p: unknown) =>
      scope === 'site' ? (p as { site: string }).site : (p as { group: string }).group;
    const assertScope = scope === 'site' ? siteInScope : groupInScope;
    const tags = [scope === 'site' ? 'sites' : 'groups'];

    app.put(
      path,
      {
        config: { access: 'operate', action: `${scope}.maintenance.set` },
        schema: {
          tags,
          summary: `set the ${scope}'s maintenance windows (carried by every later stack command)`,
          description:
            "Recurring windows in the site's local time zone. Agents defer stack commands outside them " +
            '(ack `deferred`, reason `maintenance-window`) and apply when a window opens, offline too. ' +
            "A site's own policy overrides its groups'. Commands created before the change keep their window.",
          params,
          body: MaintenanceIn,
          response: { 200: MaintenanceView, ...errors(404) },
        },
      },
      async (req) => {
        const actor = requireActor(req.actor);
        const id = idOf(req.params);
        const mw = toWire(req.body as In);
        audited(ctx, actor, `${scope}.maintenance.set`, id, () => {
          assertScope(actor, id);
          const before = store.maintenance.get(scope, id)?.policy ?? null;
          store.maintenance.set(scope, id, mw, actor.name, store.now());
          return { result: undefined, before, after: mw };
        });
        return view(scope, id, store.maintenance.get(scope, id));
      },
    );

    app.get(
      path,
      {
        config: { access: 'read' },
        schema: {
          tags,
          summary: `the ${scope}'s maintenance windows${scope === 'site' ? ' and the effective policy' : ''}`,
          params,
          response: { 200: MaintenanceView, ...errors(404) },
        },
      },
      async (req) => {
        const actor = requireActor(req.actor);
        const id = idOf(req.params);
        assertScope(actor, id);
        const eff = scope === 'site' ? (store.maintenance.effective(id) ?? null) : undefined;
        return view(scope, id, store.maintenance.get(scope, id), eff);
      },
    );

    app.delete(
      path,
      {
        config: { access: 'operate', action: `${scope}.maintenance.clear` },
        schema: {
          tags,
          summary: `remove the ${scope}'s maintenance windows`,
          params,
          response: { 204: Type.Null(), ...errors(404) },
        },
      },
      async (req, reply) => {
        const actor = requireActor(req.actor);
        const id = idOf(req.params);
        audited(ctx, actor, `${scope}.maintenance.clear`, id, () => {
          assertScope(actor, id);
          const before = store.maintenance.get(scope, id);
          if (!before || !store.maintenance.delete(scope, id))
            throw new ApiError('not-found', `no maintenance windows set for ${scope} ${id}`);
          return { result: undefined, before: before.policy };
        });
        return reply.code(204).send();
      },
    );
  }
}
