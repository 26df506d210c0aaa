/** The translation context shared by the service translators. */
import { type Issues, literal, type Path, type Plain, typeName } from './issues.js';

export interface ServiceContext {
  readonly issues: Issues;
  readonly allowTags: boolean;
  /** Named volumes declared at the top level. */
  readonly volumes: ReadonlySet<string>;
}

/** A string value (interpolation rejected, `$$` unescaped), or undefined after recording the problem. */
export function str(v: Plain | undefined, path: Path, ctx: ServiceContext, max = 4096): string | undefined {
  if (typeof v !== 'string') return ctx.issues.add(path, `must be a string, not ${typeName(v)}`);
  if (v.length > max) return ctx.issues.add(path, `must be at most ${max} characters`);
  return literal(v, path, ctx.issues);
}
