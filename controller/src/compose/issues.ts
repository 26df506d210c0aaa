/** Error collection for the Compose translator: every problem is reported with the path of its key. */
import type { FieldError } from '../errors.js';

export type Path = readonly (string | number)[];

/** `services.web.ports[1]`; keys that are not plain identifiers are quoted: `services["a.b"]`. */
export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out || '(root)';
}

export const MAX_ISSUES = 50;

export class Issues {
  readonly list: FieldError[] = [];
  add(path: Path, message: string): undefined {
    if (this.list.length < MAX_ISSUES) this.list.push({ path: formatPath(path), message });
    return undefined;
  }
  get empty(): boolean {
    return this.list.length === 0;
  }
}

export type Plain = string | number | boolean | null | Plain[] | { [k: string]: Plain };

export function isMap(v: unknown): v is Record<string, Plain> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (isMap(v)) return 'a map';
  return `a ${typeof v}`;
}

/** Compose extension fields (`x-*`) are accepted and ignored, as the Compose spec says. */
export function isExtension(key: string): boolean {
  return key.startsWith('x-');
}

/**
 * Rejects variable interpolation (`$VAR`, `${VAR}`): the controller does not interpolate, because the
 * result would depend on the controller's environment rather than on the file. `$$` is a literal `$`
 * (Compose's escape) and is unescaped. Per-site values belong in per-site env overrides.
 */
export function literal(s: string, path: Path, issues: Issues): string | undefined {
  if (!s.includes('$')) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '$') {
      out += c;
      continue;
    }
    const n = s[i + 1];
    if (n === '$') {
      out += '$';
      i++;
    } else if (n === '{' || (n !== undefined && /[A-Za-z_]/.test(n))) {
      return issues.add(
        path,
        'variable interpolation is not supported (use per-site env overrides); write $$ for a literal $',
      );
    } else out += c;
  }
  return out;
}
