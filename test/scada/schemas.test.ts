/**
 * The SCADA JSON Schema files (docs/schemas) are exactly what controller/src/scada/schemas.ts
 * generates from the TypeBox schemas, they work in a standard validator (Ajv, draft-07, with
 * formats), and every example in docs/SCADA.md marked `<!-- example: <schema> -->` is valid — as are
 * the statuses the agent's own builder writes ([PAY-STATUS]).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildSiteStatus } from '../../agent/src/core/status.js';
import { ROLLOUT_STATES } from '../../controller/src/rollouts/repo.js';
import { type RolloutView, rolloutStatus } from '../../controller/src/rollouts/view.js';
import {
  DEFAULT_SCHEMA_DIR,
  generateSchemas,
  SCADA_SCHEMAS,
  staleSchemas,
} from '../../controller/src/scada/schemas.js';
import { check } from '../../protocol/src/index.js';
import { REPO_ROOT } from '../helpers/index.js';

// Ajv comes with fastify (a dependency of the controller); loaded untyped, described minimally.
interface Validate {
  (data: unknown): boolean;
  errors?: unknown;
}
interface AjvLike {
  compile(schema: unknown): Validate;
}
const requireHere = createRequire(import.meta.url);
const AjvClass = (requireHere('ajv') as { default: new (o: object) => AjvLike }).default;
const addFormats = (requireHere('ajv-formats') as { default: (a: AjvLike) => void }).default;

function validator(file: string): Validate {
  const ajv = new AjvClass({ strict: true, allErrors: true });
  addFormats(ajv);
  return ajv.compile(JSON.parse(readFileSync(join(DEFAULT_SCHEMA_DIR, file), 'utf8')));
}

/** `<!-- example: site-status -->` followed by a ```json block. */
function docExamples(): { schema: string; json: unknown; text: string }[] {
  const md = readFileSync(join(REPO_ROOT, 'docs/SCADA.md'), 'utf8');
  const re = /<!-- example: ([a-z-]+) -->\s*```json\n([\s\S]*?)```/g;
  const out: { schema: string; json: unknown; text: string }[] = [];
  for (const m of md.matchAll(re)) out.push({ schema: m[1]!, json: JSON.parse(m[2]!), text: m[2]! });
  return out;
}

describe('SCADA JSON Schemas', () => {
  it('docs/schemas/*.json are the generated files (run `node --import tsx controller/src/scada/schemas.ts` after a schema change)', () => {
    expect(DEFAULT_SCHEMA_DIR).toBe(join(REPO_ROOT, 'docs/schemas'));
    expect(staleSchemas()).toEqual([]);
    expect([...generateSchemas().keys()].sort()).toEqual([
      'controller-status.json',
      'rollout-status.json',
      'site-status.json',
    ]);
  });

  it('compile in Ajv (strict, draft-07) and reject what the protocol rejects', () => {
    const site = validator('site-status.json');
    const ok = { v: 1, site: 'site-a', online: true, ts: '2026-01-01T12:00:00.000Z' };
    expect(site(ok)).toBe(true);
    expect(site({ ...ok, extra: 1 })).toBe(false);
    expect(site({ ...ok, site: 'Bad/Site' })).toBe(false);
    expect(site({ ...ok, ts: 'yesterday' })).toBe(false);
    expect(site({ ...ok, stacks: { web: { desired: 1, running: 1, health: 'fine' } } })).toBe(false);
    const ctl = validator('controller-status.json');
    expect(ctl({ v: 1, online: false, ts: '2026-01-01T12:00:00.000Z', reason: 'connection-lost' })).toBe(
      true,
    );
    expect(ctl({ v: 1, online: 'yes', ts: '2026-01-01T12:00:00.000Z' })).toBe(false);
    validator('rollout-status.json');
  });

  it('every example in docs/SCADA.md is valid (Ajv on the file, TypeBox on the source schema)', () => {
    const examples = docExamples();
    const names = new Set(examples.map((e) => e.schema));
    expect([...names].sort()).toEqual(['controller-status', 'rollout-status', 'site-status']);
    expect(examples.length).toBeGreaterThanOrEqual(6);
    for (const e of examples) {
      const v = validator(`${e.schema}.json`);
      expect(v(e.json), `${e.schema}: ${e.text}\n${JSON.stringify(v.errors)}`).toBe(true);
      const src = SCADA_SCHEMAS.find((s) => s.file === `${e.schema}.json`)!;
      expect(() => check(src.schema, e.json, e.schema)).not.toThrow();
    }
  });

  it("the rollout engine's retained status (rolloutStatus + ts) is valid in every state", () => {
    const v = validator('rollout-status.json');
    for (const state of ROLLOUT_STATES) {
      const view = {
        id: 'r-5f0c2a9e1b7d3c44',
        stack: 'telemetry',
        rev: 6,
        state,
        reason: state === 'aborted' ? 'x'.repeat(400) : null,
        phase: 1,
        phaseCount: 5,
        startedAt: state === 'pending' ? null : '2026-03-02T10:45:00.000Z',
        finishedAt: state === 'completed' ? '2026-03-02T11:45:00.000Z' : null,
        total: 12,
        expired: 1,
        counts: { pending: 3, cancelled: 1, sent: 2, offline: 1, healthy: 2, failed: 1, 'rolled-back': 1 },
      } as unknown as RolloutView;
      const status = { ...rolloutStatus(view), ts: '2026-03-02T11:00:00.000Z' };
      expect(v(status), `${state}: ${JSON.stringify(v.errors)}`).toBe(true);
    }
  });

  it("the agent's status builder writes valid statuses (live, last will, with alarms)", () => {
    const site = validator('site-status.json');
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const live = buildSiteStatus({
      site: 'site-a',
      online: true,
      nowMs: now,
      agent: '0.1.0',
      stacks: [{ name: 'web', rev: 1, want: 2, h: 'unhealthy', svc: [] }],
      alarms: [{ code: 'rolled-back', since: now / 1000 - 60, msg: 'rev 2: health-timeout', stack: 'web' }],
      lastContactMs: now - 30_000,
      lastSeq: 4,
    });
    expect(site(live), JSON.stringify(site.errors)).toBe(true);
    const will = buildSiteStatus({ site: 'site-a', online: false, nowMs: now, reason: 'connection-lost' });
    expect(site(will), JSON.stringify(site.errors)).toBe(true);
  });
});
