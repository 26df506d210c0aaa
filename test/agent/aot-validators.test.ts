/**
 * The agent bundle's ahead-of-time validators (protocol/src/aot.ts, docs/adr/0007-agent-bundle.md) stand in
 * for TypeBox's compiler: for every schema protocol/src/schemas.ts exports, the generated check must
 * accept and reject exactly what `TypeCompiler.Compile(schema)` does, and `check` must throw the same
 * ProtocolError (reason and message) — on valid samples, on every single-field mutation of them, and on
 * values fuzzed with fast-check (random edits anywhere in a sample — near-miss strings and numbers,
 * arbitrary JavaScript values, added and deleted keys — random messages, and arbitrary values).
 * A validator that accepts what TypeBox rejects would let malformed commands through: a security bug.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { aotCompilerModule } from '../../protocol/src/aot.js';
import * as schemas from '../../protocol/src/schemas.js';
import { REPO_ROOT } from '../helpers/index.js';
import { ackArb, cborValue, commandArb, stateArb } from '../protocol/arbitraries.js';

const SCHEMAS_TS = join(REPO_ROOT, 'protocol', 'src', 'schemas.ts');

interface AotCheck {
  Check(v: unknown): boolean;
  Errors(v: unknown): { First(): { path: string; message: string } | undefined };
}
interface AotModule {
  TypeCompiler: { Compile(schema: TSchema): AotCheck };
  aotName(schema: TSchema): string | undefined;
}

let dir: string;
let aot: AotModule;
const generated = aotCompilerModule(schemas as Record<string, unknown>, SCHEMAS_TS);

beforeAll(async () => {
  // Inside the checkout, so that the module resolves @sinclair/typebox to the instance schemas.ts uses
  // (its FormatRegistry holds the protocol's formats).
  mkdirSync(join(REPO_ROOT, '.tmp'), { recursive: true });
  dir = mkdtempSync(join(REPO_ROOT, '.tmp', 'aot-validators-'));
  const file = join(dir, 'typebox-compiler.mjs');
  writeFileSync(file, generated.source);
  aot = (await import(pathToFileURL(file).href)) as AotModule;
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const b = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

const SERVICE = {
  img: 'registry.local/acme/web',
  dig: b(32),
  tag: '1.2',
  cmd: ['httpd', '-f'],
  ep: ['/bin/sh'],
  env: { PORT: '8080', A_1: 'x' },
  ports: ['127.0.0.1:8080:80/tcp', '9090:90'],
  vols: ['data:/data', '/srv:/srv:ro'],
  hc: { test: ['CMD', 'true'], int: 5, to: 2, ret: 3, sp: 0 },
  rst: 'unless-stopped',
  mem: 64 * 1024 * 1024,
  cpu: 500,
  lbl: { team: 'ops' },
  user: '1000',
  priv: false,
  net: 'bridge',
};
const MW = {
  tz: 'Europe/Paris',
  w: [
    { d: 0x1f, s: '01:00', e: '02:30' },
    { s: '23:00', e: '01:00' },
  ],
};
const STACK_STATE = {
  name: 'web',
  rev: 2,
  want: 3,
  h: 'healthy',
  svc: [{ n: 'web', st: 'running', h: 'healthy', rs: 1 }],
};
const ALARM = { code: 'disk-full', since: 1_700_000_000, msg: 'full', stack: 'web' };

/** A valid value of each exported schema. */
const SAMPLES: Record<string, unknown> = {
  HealthcheckSchema: SERVICE.hc,
  ServiceSchema: SERVICE,
  StackSpecSchema: { svc: { web: SERVICE, 'db-1': { img: 'postgres', tag: '16' } }, vol: ['data'] },
  MaintenanceWindowSchema: MW.w[0],
  MaintenanceSchema: MW,
  StackApplyBody: { stack: 'web', rev: 3, spec: b(40), z: true, appr: [b(100)], mw: MW, force: true },
  StackRemoveBody: { stack: 'web', vols: true, appr: [b(10)], mw: MW },
  StackRestartBody: { stack: 'web', svc: ['web', 'db-1'], force: true },
  StateRequestBody: { full: true },
  HeartbeatBody: { last: 41 },
  TrustUpdateBody: { doc: b(300) },
  CommandHeaderSchema: {
    v: 1,
    site: 'pump-7',
    seq: 42,
    prev: 41,
    id: b(16),
    iat: 1_700_000_000,
    exp: 1_700_003_600,
    type: 'heartbeat',
    body: { last: 41 },
  },
  ApprovalSchema: { v: 1, stack: 'web', rev: 3, dig: b(32), sites: ['pump-7'], iat: 1_700_000_000 },
  AckSchema: {
    v: 1,
    site: 'pump-7',
    useq: 9,
    at: 1_700_000_000,
    st: 'rejected',
    seq: 42,
    id: b(16),
    ref: b(8),
    rc: 'malformed',
    msg: 'command /x: bad',
    type: 'stack.apply',
    stack: 'web',
    rev: 3,
  },
  AlarmSchema: ALARM,
  ServiceStateSchema: STACK_STATE.svc[0],
  StackStateSchema: STACK_STATE,
  StateSchema: {
    v: 1,
    site: 'pump-7',
    useq: 10,
    at: 1_700_000_000,
    full: false,
    last: 42,
    trust: 1,
    stacks: [STACK_STATE],
    gone: ['old'],
    alarms: [ALARM],
    drops: 0,
    agent: 'outpost-agent/0.1.0',
  },
  TrustKeySchema: { kid: 'online-1', pub: b(32), types: ['stack.apply', 'approve'] },
  TrustRootSchema: {
    v: 1,
    ver: 2,
    iat: 1_700_000_000,
    exp: 1_800_000_000,
    roots: [{ kid: 'root-1', pub: b(32) }],
    thr: 1,
    keys: [{ kid: 'online-1', pub: b(32), types: ['heartbeat'] }],
    crit: 2,
  },
  SiteStatusSchema: {
    v: 1,
    site: 'pump-7',
    online: true,
    ts: '2026-01-02T03:04:05.678+01:00',
    agent: 'outpost-agent/0.1.0',
    reason: 'connection-lost',
    stacks: { web: { desired: 3, running: 2, health: 'starting' } },
    alarms: [{ code: 'disk-full', since: '2026-01-02T03:04:05Z', msg: 'm', stack: 'web' }],
    controlAge: 12,
    lastSeq: 42,
  },
};

/** Values that break some rule somewhere: types, bounds, patterns, formats, lengths. */
const REPLACEMENTS: unknown[] = [
  null,
  true,
  0,
  -1,
  1.5,
  2 ** 53,
  Number.NaN,
  '',
  'x',
  'Bad Name',
  '25:00',
  'Not/AZone',
  '2026-13-01T00:00:00Z',
  'a'.repeat(300),
  [],
  [1],
  {},
  b(0),
  b(33),
];

const DELETE = Symbol('delete');

/** Sizes beyond this are numeric bounds (times, sequence numbers), not lengths. */
const MAX_SIZE = 200_000;

/** `v` (a string, byte string, array or number) at each of the sizes or values `near`. */
function* resized(v: unknown, near: readonly number[]): Generator<unknown> {
  for (const n of near) {
    if (typeof v === 'number') yield* [n, n + 0.5];
    if (n < 0 || n > MAX_SIZE) continue;
    if (typeof v === 'string') yield v.padEnd(n, v[0] ?? 'a').slice(0, n);
    else if (v instanceof Uint8Array) yield new Uint8Array(n).fill(v[0] ?? 1);
    else if (Array.isArray(v) && v.length > 0) yield Array.from({ length: n }, (_, i) => v[i % v.length]);
  }
}

/**
 * Every value obtained by changing one field (replace, delete; strings, byte strings, arrays and
 * numbers also to each bound of the schema and its neighbours) or adding one, anywhere in `v`.
 */
function* mutations(v: unknown, near: readonly number[]): Generator<unknown> {
  yield* resized(v, near);
  if (Array.isArray(v)) {
    yield [...v, v[0]];
    yield [];
    for (let i = 0; i < v.length; i++) {
      for (const m of [...REPLACEMENTS, ...mutations(v[i], near)]) {
        const copy = [...v];
        copy[i] = m;
        yield copy;
      }
    }
  } else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const o = v as Record<string, unknown>;
    yield { ...o, zz: 1 };
    for (const k of Object.keys(o)) {
      for (const m of [DELETE, ...REPLACEMENTS, ...mutations(o[k], near)]) {
        const copy = { ...o };
        if (m === DELETE) delete copy[k];
        else copy[k] = m;
        yield copy;
      }
    }
  }
}

/** `check` as schemas.ts throws it, from a TypeCheck-like object. */
function verdict(c: AotCheck, v: unknown): string {
  if (c.Check(v)) return 'ok';
  const first = c.Errors(v).First();
  return first ? `malformed: ${first.path || '/'}: ${first.message}` : 'malformed: invalid';
}

const exported = Object.entries(schemas).filter(
  ([, s]) => typeof s === 'object' && s !== null && Symbol.for('TypeBox.Kind') in s,
) as [string, TSchema][];

describe('AOT validators (agent bundle)', () => {
  test('generated code for every exported schema, none left to the interpreter', () => {
    expect(generated.interpreted).toEqual([]);
    expect([...generated.compiled].sort()).toEqual(exported.map(([n]) => n).sort());
    expect(Object.keys(SAMPLES).sort()).toEqual(exported.map(([n]) => n).sort());
    for (const [name, schema] of exported) expect(aot.aotName(schema)).toBe(name);
  });

  test.each(exported)('%s: same verdicts and first errors as TypeCompiler', (name, schema) => {
    const compiled = TypeCompiler.Compile(schema);
    const ahead = aot.TypeCompiler.Compile(schema);
    const sample = SAMPLES[name];
    expect(ahead.Check(sample), `${name} sample`).toBe(true);
    let n = 0;
    let rejected = 0;
    for (const v of mutations(sample, bounds(schema))) {
      const want = verdict(compiled, v);
      expect(verdict(ahead, v)).toBe(want);
      n++;
      if (want !== 'ok') rejected++;
    }
    // The corpus is not vacuous: many mutations, most of them rejected.
    expect(n).toBeGreaterThan(20);
    expect(rejected).toBeGreaterThan(n / 2);
  });

  test('check() through the AOT compiler throws the same ProtocolError as through TypeCompiler', () => {
    const bad = { ...(SAMPLES['StackApplyBody'] as object), mw: { tz: 'Not/AZone', w: MW.w } };
    const compiled = TypeCompiler.Compile(schemas.StackApplyBody);
    const ahead = aot.TypeCompiler.Compile(schemas.StackApplyBody);
    expect(verdict(ahead, bad)).toBe(verdict(compiled, bad));
    expect(verdict(ahead, bad)).toMatch(/^malformed: \/mw\/tz: /);
    expect(() => schemas.check(schemas.StackApplyBody, bad, 'stack.apply body')).toThrow(
      `stack.apply body ${verdict(compiled, bad).slice('malformed: '.length)}`,
    );
  });

  test('a schema without generated code is checked by the interpreter', () => {
    const local = TypeCompiler.Compile(schemas.HeartbeatBody).Schema();
    const copy = { ...local } as TSchema;
    expect(aot.aotName(copy)).toBeUndefined();
    const c = aot.TypeCompiler.Compile(copy);
    expect(c.Check({ last: 1 })).toBe(true);
    expect(verdict(c, { last: -1 })).toBe(verdict(TypeCompiler.Compile(schemas.HeartbeatBody), { last: -1 }));
  });
});

// ---- fuzzing ------------------------------------------------------------------------------------

type Path = readonly (string | number)[];

/** Every path to a value inside `v` (the root included), not descending into byte strings. */
function paths(v: unknown, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(v)) for (const [i, x] of v.entries()) out.push(...paths(x, [...at, i]));
  else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array))
    for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

function get(v: unknown, path: Path): unknown {
  return path.reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], v);
}

/** A copy of `v` with `f` applied to the value at `path` (`undefined` from f: deleted). */
function edit(v: unknown, path: Path, f: (x: unknown) => unknown): unknown {
  if (path.length === 0) return f(v);
  const [k, ...rest] = path as [string | number, ...Path];
  const copy = (Array.isArray(v) ? [...v] : { ...(v as object) }) as Record<string | number, unknown>;
  const next = edit(copy[k], rest, f);
  if (next === DELETE) delete copy[k];
  else copy[k] = next;
  return copy;
}

const BOUND_KEYS = [
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minProperties',
  'maxProperties',
  'multipleOf',
];

/** Every numeric bound in a schema, and its neighbours: where off-by-one mistakes would show. */
function bounds(schema: unknown, out = new Set<number>([0, 1])): number[] {
  if (Array.isArray(schema)) for (const x of schema) bounds(x, out);
  else if (schema !== null && typeof schema === 'object')
    for (const [k, x] of Object.entries(schema)) {
      if (BOUND_KEYS.includes(k) && typeof x === 'number') for (const d of [-1, 0, 1]) out.add(x + d);
      else bounds(x, out);
    }
  return [...out].sort((a, b) => a - b);
}

/** What an edit puts in place of a value: a near miss of it (sizes at the schema's bounds), or anything. */
const replacement = (old: unknown, near: readonly number[]): fc.Arbitrary<unknown> => {
  const size = fc.oneof(
    { arbitrary: fc.constantFrom(...near.filter((n) => n >= 0 && n <= MAX_SIZE)), weight: 3 },
    { arbitrary: fc.nat({ max: 300 }), weight: 1 },
  );
  return fc.oneof(
    // Near misses: one character inserted, replaced or removed; numbers nudged or at bounds; strings,
    // byte strings and arrays resized to lengths at the bounds.
    typeof old === 'string'
      ? fc
          .tuple(
            fc.nat({ max: old.length }),
            fc.string({ unit: 'binary', minLength: 0, maxLength: 1 }),
            fc.boolean(),
          )
          .map(([i, c, drop]) => old.slice(0, i) + c + old.slice(drop ? i + 1 : i))
      : fc.constant(old),
    typeof old === 'string' ? size.map((n) => old.padEnd(n, old[0] ?? 'a').slice(0, n)) : fc.constant(old),
    typeof old === 'number'
      ? fc.oneof(
          fc.integer({ min: -3, max: 3 }).map((d) => old + d),
          fc.constantFrom(...near, ...near.map((n) => n + 0.5), -old, old * 2 ** 20, 2 ** 32, 2 ** 53, -0),
        )
      : fc.constant(old),
    old instanceof Uint8Array ? size.map((n) => new Uint8Array(n).fill(7)) : fc.constant(old),
    Array.isArray(old) && old.length > 0
      ? size.map((n) => Array.from({ length: n }, (_, i) => old[i % old.length]))
      : fc.constant(old),
    fc.constantFrom(...REPLACEMENTS, DELETE, undefined, Infinity, -Infinity, Number.MAX_VALUE),
    fc.stringMatching(/^[a-zA-Z0-9:./_@+-]{0,70}$/),
    fc.string({ unit: 'binary', maxLength: 40 }),
    cborValue,
    fc.anything({
      withBigInt: true,
      withBoxedValues: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withNullPrototype: true,
      withObjectString: true,
      withSparseArray: true,
      withTypedArray: true,
      withUnicodeString: true,
    }),
  );
};

/** A sample with 1–4 random edits: replace or delete a value, or add a key to an object. */
function fuzzed(sample: unknown, near: readonly number[]): fc.Arbitrary<unknown> {
  const step = (v: unknown): fc.Arbitrary<unknown> => {
    const ps = paths(v);
    return fc.nat({ max: ps.length - 1 }).chain((i) => {
      const path = ps[i]!;
      const old = get(v, path);
      const addKey =
        old !== null && typeof old === 'object' && !Array.isArray(old) && !(old instanceof Uint8Array)
          ? [
              fc
                .tuple(fc.string({ maxLength: 8 }), cborValue)
                .map(([k, x]) => edit(v, path, (o) => ({ ...(o as object), [k]: x }))),
            ]
          : [];
      return fc.oneof(
        replacement(old, near).map((x) => edit(v, path, () => x)),
        ...addKey,
      );
    });
  };
  return fc.integer({ min: 1, max: 4 }).chain((n) => {
    let arb: fc.Arbitrary<unknown> = fc.constant(sample);
    for (let i = 0; i < n; i++) arb = arb.chain(step);
    return arb;
  });
}

/** Valid messages from the protocol's own generators, for the schemas they are valid against. */
const GENERATED: Record<string, fc.Arbitrary<unknown>> = {
  CommandHeaderSchema: commandArb,
  AckSchema: ackArb,
  StateSchema: stateArb,
};

describe('AOT validators, fuzzed (fast-check)', () => {
  test.each(exported)(
    '%s: same verdicts and first errors as TypeCompiler on fuzzed values',
    (name, schema) => {
      const compiled = TypeCompiler.Compile(schema);
      const ahead = aot.TypeCompiler.Compile(schema);
      const seen = { ok: 0, rejected: 0 };
      const generated = GENERATED[name];
      const near = bounds(schema);
      const values = fc.oneof(
        { arbitrary: fuzzed(SAMPLES[name], near), weight: 6 },
        ...(generated
          ? [
              { arbitrary: generated, weight: 2 },
              { arbitrary: generated.chain((g) => fuzzed(g, near)), weight: 3 },
            ]
          : []),
        { arbitrary: cborValue, weight: 1 },
      );
      fc.assert(
        fc.property(values, (v) => {
          const want = verdict(compiled, v);
          expect(verdict(ahead, v)).toBe(want);
          seen[want === 'ok' ? 'ok' : 'rejected']++;
        }),
        { numRuns: 600 },
      );
      // Both sides of the boundary were exercised.
      expect(seen.rejected).toBeGreaterThan(50);
      expect(seen.ok).toBeGreaterThan(0);
    },
  );
});
