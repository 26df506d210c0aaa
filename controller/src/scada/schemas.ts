/**
 * JSON Schema files for the SCADA status topics, generated from the TypeBox schemas into
 * `docs/schemas/*.json` (docs/SCADA.md). A test checks the committed files equal the generated ones.
 *
 *   node --import tsx controller/src/scada/schemas.ts            # writes docs/schemas
 *   node --import tsx controller/src/scada/schemas.ts --check    # exit 1 if a file is stale
 *
 * `SiteStatus` is the protocol's ([PAY-STATUS], protocol/src/schemas.ts). The controller's liveness
 * message has no protocol schema yet, so it is described here from what controller/src/mqtt.ts
 * publishes; the rollout status follows what the rollout engine publishes (`rolloutStatus` in
 * controller/src/rollouts/view.ts, plus `ts`; states from ROLLOUT_STATES). Tests check both.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type TSchema, Type } from '@sinclair/typebox';
import { SITE_ID_PATTERN, SiteStatusSchema } from '../../../protocol/src/index.js';
import { ROLLOUT_STATES } from '../rollouts/repo.js';

const closed = { additionalProperties: false } as const;
const Time = Type.String({ format: 'date-time', maxLength: 40 });

/** `{p}/controller/status`, retained; the controller's last will publishes `online: false`. */
export const ControllerStatusSchema = Type.Object(
  {
    v: Type.Literal(1),
    online: Type.Boolean(),
    /** ISO 8601 time the controller wrote it (for the will: when the connection it guards began). */
    ts: Time,
    /** Why offline: `connection-lost` (last will) or `shutdown` (orderly stop). */
    reason: Type.Optional(Type.String({ maxLength: 64 })),
  },
  closed,
);

const Count = Type.Integer({ minimum: 0 });

/** `{p}/rollout/{id}/status`, retained (DESIGN §6): counts only, so its size does not grow with the fleet. */
export const RolloutStatusSchema = Type.Object(
  {
    v: Type.Literal(1),
    rollout: Type.String({ pattern: SITE_ID_PATTERN.source }),
    stack: Type.String({ maxLength: 63 }),
    rev: Type.Integer({ minimum: 1, maximum: 0xffff_ffff }),
    state: Type.Union(ROLLOUT_STATES.map((s) => Type.Literal(s))),
    /** ISO 8601 time this status was written; consumers compute its age from it. */
    ts: Time,
    startedAt: Type.Optional(Time),
    finishedAt: Type.Optional(Time),
    /** Current batch (0 = canary) and the number of batches. */
    batch: Type.Object({ index: Count, count: Count }, closed),
    counts: Type.Object(
      {
        targeted: Count,
        pending: Count,
        inProgress: Count,
        applied: Count,
        healthy: Count,
        failed: Count,
        rolledBack: Count,
        deferred: Count,
        expired: Count,
      },
      closed,
    ),
    /** Why paused, aborted or failed. */
    reason: Type.Optional(Type.String({ maxLength: 256 })),
  },
  closed,
);

export interface ScadaSchema {
  readonly file: string;
  readonly title: string;
  readonly description: string;
  readonly schema: TSchema;
}

export const SCADA_SCHEMAS: readonly ScadaSchema[] = [
  {
    file: 'site-status.json',
    title: 'Outpost SiteStatus',
    description:
      'Retained UTF-8 JSON on {prefix}/site/{site}/status (protocol [PAY-STATUS]). Written by the site agent; its MQTT last will publishes online=false with reason connection-lost. Age = now - ts.',
    schema: SiteStatusSchema,
  },
  {
    file: 'controller-status.json',
    title: 'Outpost ControllerStatus',
    description:
      'Retained UTF-8 JSON on {prefix}/controller/status: controller liveness. Its MQTT last will publishes online=false with reason connection-lost; an orderly stop publishes reason shutdown.',
    schema: ControllerStatusSchema,
  },
  {
    file: 'rollout-status.json',
    title: 'Outpost RolloutStatus',
    description:
      'Retained UTF-8 JSON on {prefix}/rollout/{id}/status: progress of one rollout (state, batch, counts of sites by outcome). Written by the controller on every change. Age = now - ts.',
    schema: RolloutStatusSchema,
  },
];

/** The file's JSON Schema document: draft-07, TypeBox's symbols dropped, stable key order. */
export function schemaDocument(s: ScadaSchema): Record<string, unknown> {
  const body = JSON.parse(JSON.stringify(s.schema)) as Record<string, unknown>;
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: `urn:outpost:scada:${s.file.replace(/\.json$/, '')}:v1`,
    title: s.title,
    description: s.description,
    ...body,
  };
}

/** File name -> file text for every SCADA schema. */
export function generateSchemas(): Map<string, string> {
  return new Map(SCADA_SCHEMAS.map((s) => [s.file, `${JSON.stringify(schemaDocument(s), null, 2)}\n`]));
}

export const DEFAULT_SCHEMA_DIR = resolve(fileURLToPath(new URL('../../../docs/schemas', import.meta.url)));

export function writeSchemas(dir: string = DEFAULT_SCHEMA_DIR): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [file, text] of generateSchemas()) {
    writeFileSync(join(dir, file), text);
    written.push(join(dir, file));
  }
  return written;
}

/** Files in `dir` that are missing or differ from the generated text. */
export function staleSchemas(dir: string = DEFAULT_SCHEMA_DIR): string[] {
  const stale: string[] = [];
  for (const [file, text] of generateSchemas()) {
    let current: string | undefined;
    try {
      current = readFileSync(join(dir, file), 'utf8');
    } catch {
      current = undefined;
    }
    if (current !== text) stale.push(file);
  }
  return stale;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const dir = args.find((a) => !a.startsWith('--')) ?? DEFAULT_SCHEMA_DIR;
  if (check) {
    const stale = staleSchemas(dir);
    if (stale.length > 0) {
      process.stderr.write(`stale schema files in ${dir}: ${stale.join(', ')}\n`);
      process.exitCode = 1;
    }
  } else {
    for (const f of writeSchemas(dir)) process.stdout.write(`${f}\n`);
  }
}
