/** Translation of one Compose service into a protocol `Service` (see ./index.ts for the key list). */
import type { Service } from '../../../protocol/src/index.js';
import { type ServiceContext, str } from './context.js';
import { isExtension, isMap, literal, type Path, type Plain, typeName } from './issues.js';
import { eachItem, portItem, volumeItem } from './mounts.js';
import { parseBytes, parseCpus, parseDurationMs, shellSplit } from './units.js';

export type { ServiceContext };

export const SUPPORTED_SERVICE_KEYS = [
  'image',
  'command',
  'entrypoint',
  'environment',
  'ports',
  'volumes',
  'healthcheck',
  'restart',
  'mem_limit',
  'deploy',
  'labels',
  'user',
  'privileged',
  'network_mode',
] as const;

const IMG_REPO = /^[a-z0-9][a-z0-9._:/-]*$/;
const IMG_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const RESTART = ['no', 'always', 'unless-stopped', 'on-failure'] as const;

/** Scalars Compose stringifies (env and label values). */
function scalar(v: Plain | undefined, path: Path, ctx: ServiceContext, max: number): string | undefined {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return str(v, path, ctx, max);
}

export function parseImage(v: Plain | undefined, path: Path, ctx: ServiceContext): Partial<Service> {
  const ref = str(v, path, ctx, 512);
  if (ref === undefined) return {};
  let repo = ref;
  let dig: Uint8Array | undefined;
  const at = repo.indexOf('@');
  if (at >= 0) {
    const d = repo.slice(at + 1);
    repo = repo.slice(0, at);
    const m = /^sha256:([0-9a-f]{64})$/.exec(d);
    if (!m) return ctx.issues.add(path, 'digest must be sha256:<64 lowercase hex>') ?? {};
    dig = new Uint8Array(Buffer.from(m[1]!, 'hex'));
  }
  let tag: string | undefined;
  const colon = repo.lastIndexOf(':');
  if (colon > repo.lastIndexOf('/')) {
    tag = repo.slice(colon + 1);
    repo = repo.slice(0, colon);
    if (!IMG_TAG.test(tag)) return ctx.issues.add(path, `invalid tag ${JSON.stringify(tag)}`) ?? {};
  }
  if (!IMG_REPO.test(repo) || repo.length > 255) {
    return (
      ctx.issues.add(path, `invalid image repository ${JSON.stringify(repo)} (lowercase, no scheme)`) ?? {}
    );
  }
  // With a digest the tag is informational only (Docker ignores it), so it is dropped: equal digests
  // give equal specs.
  if (dig) return { img: repo, dig };
  if (!ctx.allowTags) {
    return (
      ctx.issues.add(
        path,
        'image must be pinned by digest (repo@sha256:<64 hex>); tags need allowTags and a policy that permits them',
      ) ?? {}
    );
  }
  return { img: repo, tag: tag ?? 'latest' };
}

function words(v: Plain | undefined, path: Path, ctx: ServiceContext): string[] | undefined {
  if (typeof v === 'string') {
    const lit = literal(v, path, ctx.issues);
    if (lit === undefined) return undefined;
    const w = shellSplit(lit);
    return w ?? ctx.issues.add(path, 'unterminated quote or trailing backslash');
  }
  if (!Array.isArray(v))
    return ctx.issues.add(path, `must be a string or a list of strings, not ${typeName(v)}`);
  if (v.length > 256) return ctx.issues.add(path, 'at most 256 words');
  const out: string[] = [];
  v.forEach((w, i) => {
    const s = str(w, [...path, i], ctx);
    if (s !== undefined) out.push(s);
  });
  return out.length === v.length ? out : undefined;
}

function keyValues(
  v: Plain | undefined,
  path: Path,
  ctx: ServiceContext,
  what: 'environment' | 'labels',
): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  const put = (k: string, val: string | undefined, p: Path): void => {
    if (what === 'environment' && !ENV_KEY.test(k)) {
      ctx.issues.add(p, `invalid variable name ${JSON.stringify(k)}`);
      return;
    }
    if (what === 'labels' && (k.length === 0 || k.length > 255)) {
      ctx.issues.add(p, 'label keys are 1..255 characters');
      return;
    }
    if (Object.hasOwn(out, k)) {
      ctx.issues.add(p, `duplicate key ${JSON.stringify(k)}`);
      return;
    }
    if (val !== undefined) out[k] = val;
  };
  const max = what === 'environment' ? 8192 : 1024;
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      const s = str(item, [...path, i], ctx, max + 256);
      if (s === undefined) return;
      const eq = s.indexOf('=');
      if (eq < 0) {
        if (what === 'labels') put(s, '', [...path, i]);
        else
          ctx.issues.add(
            [...path, i],
            `${s} has no value: Compose would read it from the controller's environment, which is not supported`,
          );
        return;
      }
      put(s.slice(0, eq), s.slice(eq + 1), [...path, i]);
    });
  } else if (isMap(v)) {
    for (const [k, val] of Object.entries(v)) {
      if (val === null) {
        ctx.issues.add(
          [...path, k],
          "has no value: Compose would read it from the controller's environment, which is not supported",
        );
        continue;
      }
      put(k, scalar(val, [...path, k], ctx, max), [...path, k]);
    }
  } else return ctx.issues.add(path, `must be a list of KEY=VALUE or a map, not ${typeName(v)}`);
  return out;
}

function seconds(v: Plain | undefined, path: Path, ctx: ServiceContext, min: number): number | undefined {
  if (typeof v !== 'string') return ctx.issues.add(path, 'must be a duration string such as 30s or 1m30s');
  const ms = parseDurationMs(v);
  if (ms === undefined) return ctx.issues.add(path, `invalid duration ${JSON.stringify(v)}`);
  if (ms % 1000 !== 0) return ctx.issues.add(path, 'must be a whole number of seconds');
  const s = ms / 1000;
  if (s < min || s > 86400) return ctx.issues.add(path, `must be between ${min}s and 24h`);
  return s;
}

function healthcheck(v: Plain | undefined, path: Path, ctx: ServiceContext): Service['hc'] | undefined {
  if (!isMap(v)) return ctx.issues.add(path, `must be a map, not ${typeName(v)}`);
  const known = ['test', 'interval', 'timeout', 'retries', 'start_period', 'disable'];
  for (const k of Object.keys(v)) if (!known.includes(k)) ctx.issues.add([...path, k], 'unsupported key');
  if (v['disable'] !== undefined) {
    if (v['disable'] !== true && v['disable'] !== false)
      return ctx.issues.add([...path, 'disable'], 'must be a boolean');
    if (v['disable']) return { test: ['NONE'] };
  }
  const t = v['test'];
  let test: string[] | undefined;
  if (typeof t === 'string') {
    const lit = literal(t, [...path, 'test'], ctx.issues);
    if (lit !== undefined) test = ['CMD-SHELL', lit];
  } else if (Array.isArray(t) && t.length > 0) {
    test = words(t, [...path, 'test'], ctx);
    if (test && !['CMD', 'CMD-SHELL', 'NONE'].includes(test[0]!)) {
      return ctx.issues.add([...path, 'test', 0], 'must be CMD, CMD-SHELL or NONE');
    }
  } else
    return ctx.issues.add([...path, 'test'], 'required: a string or a list starting with CMD or CMD-SHELL');
  if (!test) return undefined;
  const hc: NonNullable<Service['hc']> = { test };
  if (v['interval'] !== undefined) hc.int = seconds(v['interval'], [...path, 'interval'], ctx, 1);
  if (v['timeout'] !== undefined) hc.to = seconds(v['timeout'], [...path, 'timeout'], ctx, 1);
  if (v['start_period'] !== undefined) hc.sp = seconds(v['start_period'], [...path, 'start_period'], ctx, 0);
  const r = v['retries'];
  if (r !== undefined) {
    if (typeof r === 'number' && Number.isInteger(r) && r >= 1 && r <= 100) hc.ret = r;
    else ctx.issues.add([...path, 'retries'], 'must be an integer 1..100');
  }
  return hc;
}

function deploy(v: Plain | undefined, path: Path, ctx: ServiceContext): { mem?: number; cpu?: number } {
  if (!isMap(v)) return ctx.issues.add(path, `must be a map, not ${typeName(v)}`) ?? {};
  for (const k of Object.keys(v))
    if (k !== 'resources') ctx.issues.add([...path, k], 'unsupported key (only resources.limits)');
  const res = v['resources'];
  if (res === undefined) return {};
  if (!isMap(res)) return ctx.issues.add([...path, 'resources'], 'must be a map') ?? {};
  for (const k of Object.keys(res))
    if (k !== 'limits') ctx.issues.add([...path, 'resources', k], 'unsupported key (only limits)');
  const lim = res['limits'];
  if (lim === undefined) return {};
  const lp = [...path, 'resources', 'limits'];
  if (!isMap(lim)) return ctx.issues.add(lp, 'must be a map') ?? {};
  const out: { mem?: number; cpu?: number } = {};
  for (const [k, val] of Object.entries(lim)) {
    if (k === 'memory') {
      const b = typeof val === 'string' || typeof val === 'number' ? parseBytes(val) : undefined;
      if (b === undefined) ctx.issues.add([...lp, k], 'must be a size such as 64m or 1g');
      else out.mem = b;
    } else if (k === 'cpus') {
      const c = typeof val === 'string' || typeof val === 'number' ? parseCpus(val) : undefined;
      if (c === undefined) ctx.issues.add([...lp, k], 'must be a number of CPUs such as 0.5');
      else out.cpu = c;
    } else ctx.issues.add([...lp, k], 'unsupported key (memory, cpus)');
  }
  return out;
}

export function translateService(v: Plain | undefined, path: Path, ctx: ServiceContext): Service | undefined {
  if (!isMap(v)) return ctx.issues.add(path, `must be a map, not ${typeName(v)}`);
  const before = ctx.issues.list.length;
  const out: Partial<Service> = {};
  for (const [key, val] of Object.entries(v)) {
    const p = [...path, key];
    switch (key) {
      case 'image':
        Object.assign(out, parseImage(val, p, ctx));
        break;
      case 'command':
        out.cmd = words(val, p, ctx);
        break;
      case 'entrypoint':
        out.ep = words(val, p, ctx);
        break;
      case 'environment': {
        const env = keyValues(val, p, ctx, 'environment');
        if (env && Object.keys(env).length > 0) out.env = env;
        break;
      }
      case 'labels': {
        const lbl = keyValues(val, p, ctx, 'labels');
        if (lbl && Object.keys(lbl).length > 0) out.lbl = lbl;
        break;
      }
      case 'ports': {
        const ps = eachItem(val, p, ctx, portItem);
        if (ps && ps.length > 0) out.ports = ps;
        break;
      }
      case 'volumes': {
        const vs = eachItem(val, p, ctx, volumeItem);
        if (vs && vs.length > 0) out.vols = vs;
        break;
      }
      case 'healthcheck':
        out.hc = healthcheck(val, p, ctx);
        break;
      case 'restart':
        if (typeof val === 'string' && (RESTART as readonly string[]).includes(val))
          out.rst = val as Service['rst'];
        else
          ctx.issues.add(
            p,
            `must be one of ${RESTART.join(', ')} (quote "no"; on-failure:N is not supported)`,
          );
        break;
      case 'mem_limit': {
        const b = typeof val === 'string' || typeof val === 'number' ? parseBytes(val) : undefined;
        if (b === undefined) ctx.issues.add(p, 'must be a size such as 64m or 1g');
        else out.mem = b;
        break;
      }
      case 'deploy': {
        const d = deploy(val, p, ctx);
        if (d.mem !== undefined) {
          if (out.mem !== undefined && out.mem !== d.mem)
            ctx.issues.add(p, 'memory limit differs from mem_limit');
          out.mem = d.mem;
        }
        if (d.cpu !== undefined) out.cpu = d.cpu;
        break;
      }
      case 'user':
        if (typeof val === 'number' && Number.isInteger(val) && val >= 0) out.user = String(val);
        else out.user = str(val, p, ctx, 64);
        break;
      case 'privileged':
        if (typeof val === 'boolean') {
          if (val) out.priv = true;
        } else ctx.issues.add(p, 'must be a boolean');
        break;
      case 'network_mode':
        if (val === 'bridge' || val === 'host' || val === 'none') out.net = val;
        else ctx.issues.add(p, 'must be bridge, host or none');
        break;
      default:
        if (!isExtension(key)) {
          ctx.issues.add(p, `unsupported key (supported: ${SUPPORTED_SERVICE_KEYS.join(', ')})`);
        }
    }
  }
  if (out.img === undefined && v['image'] === undefined) ctx.issues.add([...path, 'image'], 'required');
  if (ctx.issues.list.length !== before) return undefined;
  for (const k of Object.keys(out) as (keyof Service)[]) if (out[k] === undefined) delete out[k];
  return out as Service;
}
