/**
 * Label selectors for deployment targets and site listings: comma-separated terms, all of which must
 * match (AND). `region=north,tier=edge`, `tier!=lab`, `gpu` (label present), `!gpu` (label absent).
 */
import { ApiError } from './errors.js';

export const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/;
export const LABEL_VALUE = /^[A-Za-z0-9_.:/-]{0,128}$/;

export type Term =
  | { readonly op: 'eq' | 'ne'; readonly key: string; readonly value: string }
  | { readonly op: 'exists' | 'absent'; readonly key: string };

export function parseSelector(s: string): Term[] {
  if (s.trim() === '') throw new ApiError('bad-selector', 'the selector is empty');
  return s.split(',').map((raw) => {
    const t = raw.trim();
    const m = /^([^!=]+?)\s*(!=|==|=)\s*(.*)$/.exec(t);
    const term: Term = m
      ? { op: m[2] === '!=' ? 'ne' : 'eq', key: m[1]!.trim(), value: m[3]!.trim() }
      : t.startsWith('!')
        ? { op: 'absent', key: t.slice(1).trim() }
        : { op: 'exists', key: t };
    if (!LABEL_KEY.test(term.key))
      throw new ApiError('bad-selector', `invalid label key in ${JSON.stringify(t)}`);
    if ('value' in term && !LABEL_VALUE.test(term.value)) {
      throw new ApiError('bad-selector', `invalid label value in ${JSON.stringify(t)}`);
    }
    return term;
  });
}

export function matches(labels: Readonly<Record<string, string>>, terms: readonly Term[]): boolean {
  return terms.every((t) => {
    const has = Object.hasOwn(labels, t.key);
    if (t.op === 'eq') return has && labels[t.key] === t.value;
    if (t.op === 'ne') return !has || labels[t.key] !== t.value;
    return t.op === 'exists' ? has : !has;
  });
}
