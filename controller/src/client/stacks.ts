/** `outpost stack`: push a Compose file as a new revision, list stacks, show a stack or a revision. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Revision, type StackInfo, usageError } from './api.js';
import { type Ctx, positionals } from './common.js';
import { json, listText, table } from './io.js';

export const STACK_HELP = `usage: outpost stack push FILE --name STACK [--allow-tags]
       outpost stack list
       outpost stack show STACK[@REV] [--compose]

push   upload a Compose file; the controller translates it into a signed stack spec and stores a
       new revision when it differs from the latest (prints the revision and its spec digest).
       Images must be pinned by digest (repo@sha256:...) unless --allow-tags and the controller's
       policy.allowTags permit tags. An invalid file is refused with the path of every offending
       key (services.web.ports[1]: ...).
list   stacks and their latest revision
show   a stack's revisions, or one revision's services (STACK@REV, STACK@latest);
       --compose prints the Compose source the revision was pushed from

examples:
  outpost stack push historian.compose.yml --name historian
  outpost stack list
  outpost stack show historian
  outpost stack show historian@3 --json
  outpost stack show historian@latest --compose > historian.yml
`;

export interface StackValues {
  name?: string | undefined;
  'allow-tags'?: boolean | undefined;
  compose?: boolean | undefined;
}

/** `web@3` → { stack: 'web', rev: 3 }; `web` → rev undefined; `web@latest` → rev 'latest'. */
export function stackRef(text: string): { stack: string; rev: number | 'latest' | undefined } {
  const m = /^([a-z0-9][a-z0-9_.-]{0,62})(?:@([1-9]\d{0,9}|latest))?$/.exec(text);
  if (!m) throw usageError(`expected STACK or STACK@REV (e.g. web@3), got '${text}'`);
  const rev = m[2] === undefined ? undefined : m[2] === 'latest' ? 'latest' : Number(m[2]);
  return { stack: m[1]!, rev };
}

const shortDigest = (hex: string): string => `sha256:${hex.slice(0, 16)}…`;

export async function stack(ctx: Ctx, sub: string | undefined, v: StackValues, p: string[]): Promise<number> {
  switch (sub) {
    case 'push':
      return push(ctx, v, positionals(p, 1, 1, 'the Compose FILE')[0]!);
    case 'list':
    case 'ls':
      positionals(p, 0, 0, '');
      return list(ctx);
    case 'show':
      return show(ctx, v, positionals(p, 1, 1, 'STACK[@REV]')[0]!);
    case undefined:
      throw usageError('missing subcommand: push, list or show');
    default:
      throw usageError(`unknown subcommand 'stack ${sub}'`);
  }
}

async function push(ctx: Ctx, v: StackValues, file: string): Promise<number> {
  if (!v.name) throw usageError('stack push needs --name STACK');
  const name = stackRef(v.name);
  if (name.rev !== undefined) throw usageError('--name takes a stack name, without @REV');
  const path = resolve(ctx.io.cwd ?? process.cwd(), file);
  let compose: string;
  try {
    compose = readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`cannot read ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
  const r = await ctx
    .api()
    .post<{ revision: Revision; unchanged: boolean }>(`/stacks/${name.stack}/revisions`, {
      compose,
      ...(v['allow-tags'] ? { allowTags: true } : {}),
    });
  if (ctx.json) {
    ctx.out(json(r));
    return 0;
  }
  const rev = r.revision;
  ctx.out(
    r.unchanged
      ? `${rev.stack}: unchanged, the latest revision ${rev.rev} has the same spec (digest sha256:${rev.digest})\n`
      : `${rev.stack}: revision ${rev.rev} (digest sha256:${rev.digest}, ${rev.specBytes} bytes)\n`,
  );
  if (rev.critical.length > 0)
    ctx.out(`critical (deploying needs an admin's approval): ${rev.critical.join('; ')}\n`);
  return 0;
}

async function list(ctx: Ctx): Promise<number> {
  const r = await ctx.api().get<{ stacks: StackInfo[] }>('/stacks');
  if (ctx.json) ctx.out(json(r));
  else if (r.stacks.length === 0) ctx.out('no stacks\n');
  else
    ctx.out(
      table(
        ['STACK', 'LATEST', 'CREATED', 'BY'],
        r.stacks.map((s) => [s.name, String(s.latestRev), s.createdAt, s.createdBy]),
      ),
    );
  return 0;
}

interface SpecService {
  img: string;
  dig?: string;
  tag?: string;
  ports?: string[];
  vols?: string[];
  env?: Record<string, string>;
}

async function show(ctx: Ctx, v: StackValues, ref: string): Promise<number> {
  const { stack: name, rev } = stackRef(ref);
  const api = ctx.api();
  if (rev === undefined && !v.compose) {
    const s = await api.get<StackInfo & { revisions: Revision[] }>(`/stacks/${name}`);
    if (ctx.json) {
      ctx.out(json(s));
      return 0;
    }
    ctx.out(`stack ${s.name}: latest revision ${s.latestRev}\n`);
    ctx.out(
      table(
        ['REV', 'DIGEST', 'BYTES', 'CREATED', 'BY', 'CRITICAL'],
        [...s.revisions]
          .sort((a, b) => b.rev - a.rev)
          .map((r) => [
            String(r.rev),
            shortDigest(r.digest),
            String(r.specBytes),
            r.createdAt,
            r.createdBy,
            r.critical.length > 0 ? r.critical.join('; ') : '-',
          ]),
      ),
    );
    return 0;
  }
  const n = typeof rev === 'number' ? rev : (await api.get<StackInfo>(`/stacks/${name}`)).latestRev;
  if (v.compose) {
    await api.download(`/stacks/${name}/revisions/${n}/compose`, {}, async (chunk) => {
      ctx.out(Buffer.from(chunk).toString('utf8'));
    });
    return 0;
  }
  const r = await api.get<Revision & { spec: { svc: Record<string, SpecService>; vol?: string[] } }>(
    `/stacks/${name}/revisions/${n}`,
  );
  if (ctx.json) {
    ctx.out(json(r));
    return 0;
  }
  ctx.out(
    `${r.stack}@${r.rev}  digest sha256:${r.digest}  ${r.specBytes} bytes${r.compressed ? ' (deflated)' : ''}\n` +
      `created ${r.createdAt} by ${r.createdBy}${r.allowTags ? ', tags allowed' : ''}\n` +
      (r.critical.length > 0 ? `critical: ${r.critical.join('; ')}\n` : '') +
      `volumes: ${listText(r.spec.vol ?? [])}\n\n`,
  );
  ctx.out(
    table(
      ['SERVICE', 'IMAGE', 'PORTS', 'VOLUMES', 'ENV'],
      Object.entries(r.spec.svc).map(([svc, s]) => [
        svc,
        s.dig ? `${s.img}@${s.dig}` : `${s.img}:${s.tag ?? 'latest'}`,
        listText(s.ports ?? []),
        listText(s.vols ?? []),
        listText(Object.keys(s.env ?? {})),
      ]),
    ),
  );
  return 0;
}
