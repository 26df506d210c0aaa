/** Ports and volumes of a Compose service (short and long syntax). */

import { type ServiceContext, str } from './context.js';
import { isMap, type Path, type Plain, typeName } from './issues.js';

const PORT_SHORT = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;

function port(n: number, path: Path, ctx: ServiceContext): boolean {
  if (Number.isInteger(n) && n >= 1 && n <= 65535) return true;
  ctx.issues.add(path, `port ${n} is outside 1..65535`);
  return false;
}

function portSpec(ip: string | undefined, host: number, ctr: number, proto: string | undefined): string {
  return `${ip ? `${ip}:` : ''}${host}:${ctr}${proto === 'udp' ? '/udp' : ''}`;
}

export function portItem(item: Plain | undefined, p: Path, ctx: ServiceContext): string | undefined {
  if (isMap(item)) {
    for (const k of Object.keys(item)) {
      if (!['target', 'published', 'host_ip', 'protocol'].includes(k))
        ctx.issues.add([...p, k], 'unsupported key');
    }
    const target = item['target'];
    const published = typeof item['published'] === 'string' ? Number(item['published']) : item['published'];
    const proto = item['protocol'] ?? 'tcp';
    const ip = item['host_ip'];
    if (typeof target !== 'number') return ctx.issues.add([...p, 'target'], 'container port required');
    if (typeof published !== 'number' || Number.isNaN(published)) {
      return ctx.issues.add(
        [...p, 'published'],
        'host port required (sites have no dynamic port allocation)',
      );
    }
    if (proto !== 'tcp' && proto !== 'udp') return ctx.issues.add([...p, 'protocol'], 'must be tcp or udp');
    if (ip !== undefined && (typeof ip !== 'string' || !/^\d{1,3}(\.\d{1,3}){3}$/.test(ip))) {
      return ctx.issues.add([...p, 'host_ip'], 'must be an IPv4 address');
    }
    if (!port(target, [...p, 'target'], ctx) || !port(published, [...p, 'published'], ctx)) return undefined;
    return portSpec(ip as string | undefined, published, target, proto);
  }
  if (typeof item === 'number') {
    return ctx.issues.add(
      p,
      'host port required: write "HOST:CONTAINER" (sites have no dynamic port allocation)',
    );
  }
  const s = str(item, p, ctx, 64);
  if (s === undefined) return;
  if (s.includes('-')) return ctx.issues.add(p, 'port ranges are not supported');
  const m = PORT_SHORT.exec(s);
  if (!m) {
    return ctx.issues.add(
      p,
      /^\d+(\/\w+)?$/.test(s)
        ? 'host port required: write "HOST:CONTAINER" (sites have no dynamic port allocation)'
        : 'expected [IP:]HOST:CONTAINER[/tcp|/udp]',
    );
  }
  if (!port(Number(m[2]), p, ctx) || !port(Number(m[3]), p, ctx)) return undefined;
  return portSpec(m[1], Number(m[2]), Number(m[3]), m[4]);
}

/** Maps each list item with `item`, collecting the good results (problems go to ctx.issues). */
export function eachItem(
  v: Plain | undefined,
  path: Path,
  ctx: ServiceContext,
  item: (x: Plain | undefined, p: Path, ctx: ServiceContext) => string | undefined,
): string[] | undefined {
  if (!Array.isArray(v)) return ctx.issues.add(path, `must be a list, not ${typeName(v)}`);
  const out: string[] = [];
  for (const [i, x] of v.entries()) {
    const r = item(x, [...path, i], ctx);
    if (r !== undefined) out.push(r);
  }
  return out;
}

function mount(
  source: string,
  target: string,
  ro: boolean,
  p: Path,
  ctx: ServiceContext,
): string | undefined {
  if (!target.startsWith('/')) return ctx.issues.add(p, 'the container path must be absolute');
  if (source.startsWith('.') || source.startsWith('~')) {
    return ctx.issues.add(p, 'relative bind mounts are not supported: use an absolute host path');
  }
  if (!source.startsWith('/')) {
    if (!/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(source))
      return ctx.issues.add(p, `invalid volume name ${source}`);
    if (!ctx.volumes.has(source)) {
      return ctx.issues.add(p, `named volume ${source} is not declared under the top-level volumes key`);
    }
  }
  return `${source}:${target}${ro ? ':ro' : ''}`;
}

export function volumeItem(item: Plain | undefined, p: Path, ctx: ServiceContext): string | undefined {
  if (isMap(item)) {
    for (const k of Object.keys(item)) {
      if (!['type', 'source', 'target', 'read_only'].includes(k))
        ctx.issues.add([...p, k], 'unsupported key');
    }
    const { type, source, target, read_only: ro } = item;
    if (type !== 'volume' && type !== 'bind') return ctx.issues.add([...p, 'type'], 'must be volume or bind');
    if (typeof source !== 'string' || typeof target !== 'string') {
      return ctx.issues.add(
        p,
        'source and target are required strings (anonymous volumes are not supported)',
      );
    }
    if (ro !== undefined && typeof ro !== 'boolean')
      return ctx.issues.add([...p, 'read_only'], 'must be a boolean');
    if (type === 'bind' && !/^[/.~]/.test(source)) {
      return ctx.issues.add([...p, 'source'], 'bind source must be an absolute path');
    }
    if (type === 'volume' && /^[/.~]/.test(source)) {
      return ctx.issues.add([...p, 'source'], 'volume source must be a volume name');
    }
    return mount(source, target, ro === true, p, ctx);
  }
  const s = str(item, p, ctx, 1024);
  if (s === undefined) return undefined;
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3) {
    return ctx.issues.add(p, 'expected SOURCE:TARGET[:ro|rw] (anonymous volumes are not supported)');
  }
  const mode = parts[2] ?? 'rw';
  if (mode !== 'ro' && mode !== 'rw') return ctx.issues.add(p, `unsupported mount option ${mode} (ro or rw)`);
  return mount(parts[0]!, parts[1]!, mode === 'ro', p, ctx);
}
