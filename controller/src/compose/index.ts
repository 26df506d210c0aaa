/**
 * Compose → canonical StackSpec (DESIGN §3, SPEC [PAY-SPEC-1]).
 *
 * Supported Compose keys (anything else is an error naming the key's path, e.g.
 * `services.web.ports[1]: expected [IP:]HOST:CONTAINER[/tcp|/udp]`):
 *
 * - top level: `services` (required), `volumes` (named volume declarations with no options), `name`
 *   (must equal the stack name), `version` (obsolete, ignored), `x-*` extensions (ignored).
 * - per service: `image` (pinned `repo@sha256:<64 hex>`; a tag only with `allowTags` and a controller
 *   policy that permits tags), `command`, `entrypoint` (string, split like a shell without expansion,
 *   or list), `environment` (list of `K=V` or map), `ports` (`[ip:]host:container[/tcp|udp]` or long
 *   syntax with target/published/host_ip/protocol; a host port is required), `volumes` (`name:/path[:ro]`
 *   for declared named volumes, `/abs/host:/path[:ro]` bind mounts, or long syntax type/source/target/
 *   read_only), `healthcheck` (test, interval, timeout, retries, start_period, disable; durations like
 *   `1m30s`, whole seconds), `restart` (no, always, unless-stopped, on-failure), `mem_limit` or
 *   `deploy.resources.limits.memory` / `.cpus`, `labels`, `user`, `privileged`, `network_mode`
 *   (bridge, host, none), `x-*` extensions.
 *
 * Decisions:
 * - Variable interpolation (`$VAR`, `${VAR}`) is rejected rather than performed: the controller's
 *   environment must not leak into a fleet-wide spec. `$$` is a literal `$`. Per-site values are per-site
 *   env overrides, merged when a command is built.
 * - Environment entries without a value (`- FOO`) are rejected for the same reason.
 * - YAML anchors and merge keys (`<<`) work; aliases are capped (billion-laughs), duplicate keys are errors.
 * - The output is `canonicalSpec` (sorted keys), so the same Compose content always yields the same spec
 *   bytes and digest, whatever the key order or formatting of the file.
 */
import { parseDocument } from 'yaml';
import {
  canonicalSpec,
  check,
  criticalReasons,
  type EncodedSpec,
  encodeSpec,
  isProtocolError,
  type Service,
  StackApplyBody,
  type StackSpec,
  StackSpecSchema,
} from '../../../protocol/src/index.js';
import { ApiError, type FieldError } from '../errors.js';
import { Issues, isExtension, isMap, type Plain, typeName } from './issues.js';
import { SUPPORTED_SERVICE_KEYS, translateService } from './service.js';

export { SUPPORTED_SERVICE_KEYS };
export const SUPPORTED_TOP_LEVEL_KEYS = ['services', 'volumes', 'name', 'version'] as const;
export const MAX_COMPOSE_BYTES = 256 * 1024;
const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const MAX_SPEC_BYTES = StackApplyBody.properties.spec.maxByteLength ?? 192 * 1024;

export interface ComposeOptions {
  /** The stack this file is pushed as; a `name:` key must match it. */
  readonly stack: string;
  /** Accept `repo:tag` images (the caller has checked that policy permits it). */
  readonly allowTags?: boolean;
}

export interface TranslatedStack {
  readonly spec: StackSpec;
  readonly encoded: EncodedSpec;
  /** Why the spec is critical (privileged, host network, host mounts); empty when it is not. */
  readonly critical: string[];
}

function fail(errors: readonly FieldError[]): never {
  const first = errors[0];
  const detail = first ? `${first.path}: ${first.message}` : 'invalid Compose file';
  throw new ApiError(
    'invalid-compose',
    errors.length > 1 ? `${detail} (and ${errors.length - 1} more)` : detail,
    errors,
  );
}

/** Parses YAML strictly into plain data. */
export function parseYaml(source: string): Plain {
  if (Buffer.byteLength(source) > MAX_COMPOSE_BYTES) {
    fail([{ path: '(root)', message: `the file exceeds ${MAX_COMPOSE_BYTES} bytes` }]);
  }
  const doc = parseDocument(source, { merge: true, uniqueKeys: true, prettyErrors: true, version: '1.2' });
  if (doc.errors.length > 0) {
    fail(
      doc.errors.slice(0, 10).map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)',
        message: e.message.split('\n')[0] ?? e.message,
      })),
    );
  }
  try {
    return doc.toJS({ maxAliasCount: 100 }) as Plain;
  } catch (err) {
    return fail([{ path: '(yaml)', message: (err as Error).message }]);
  }
}

/** Translates a Compose file into the canonical spec, or throws ApiError('invalid-compose') listing every problem. */
export function composeToSpec(source: string, opts: ComposeOptions): TranslatedStack {
  const root = parseYaml(source);
  const issues = new Issues();
  if (!isMap(root)) fail([{ path: '(root)', message: `must be a map, not ${typeName(root)}` }]);

  for (const key of Object.keys(root)) {
    if (!(SUPPORTED_TOP_LEVEL_KEYS as readonly string[]).includes(key) && !isExtension(key)) {
      issues.add([key], `unsupported key (supported: ${SUPPORTED_TOP_LEVEL_KEYS.join(', ')})`);
    }
  }
  if (root['name'] !== undefined && root['name'] !== opts.stack) {
    issues.add(['name'], `is ${JSON.stringify(root['name'])} but the file is pushed as stack ${opts.stack}`);
  }

  const vols = new Set<string>();
  const rv = root['volumes'];
  if (rv !== undefined && rv !== null) {
    if (!isMap(rv)) issues.add(['volumes'], `must be a map, not ${typeName(rv)}`);
    else {
      for (const [name, def] of Object.entries(rv)) {
        if (!NAME.test(name)) issues.add(['volumes', name], 'invalid volume name (lowercase, digits, _ . -)');
        else if (def !== null && !(isMap(def) && Object.keys(def).length === 0)) {
          issues.add(['volumes', name], 'volume options (driver, external, ...) are not supported');
        } else vols.add(name);
      }
    }
  }

  const services = root['services'];
  const svc: Record<string, Service> = {};
  if (!isMap(services) || Object.keys(services).length === 0) {
    issues.add(['services'], 'required: a map of at least one service');
  } else {
    if (Object.keys(services).length > 64) issues.add(['services'], 'at most 64 services');
    for (const [name, def] of Object.entries(services)) {
      if (!NAME.test(name)) {
        issues.add(['services', name], 'invalid service name (lowercase letters, digits, _ . -; max 63)');
        continue;
      }
      const s = translateService(def, ['services', name], {
        issues,
        allowTags: opts.allowTags ?? false,
        volumes: vols,
      });
      if (s) svc[name] = s;
    }
  }
  if (!issues.empty) fail(issues.list);

  const spec = canonicalSpec(vols.size > 0 ? { svc, vol: [...vols] } : { svc });
  try {
    check(StackSpecSchema, spec, 'stack spec');
  } catch (err) {
    if (isProtocolError(err)) fail([{ path: '(spec)', message: err.message }]);
    throw err;
  }
  const encoded = encodeSpec(spec);
  if (encoded.bytes.length > MAX_SPEC_BYTES) {
    fail([
      {
        path: '(spec)',
        message: `the encoded spec is ${encoded.bytes.length} bytes, over ${MAX_SPEC_BYTES}`,
      },
    ]);
  }
  return { spec, encoded, critical: criticalReasons(spec) };
}
