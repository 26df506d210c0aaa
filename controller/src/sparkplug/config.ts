/**
 * Sparkplug B settings (`sparkplug.*` in the controller configuration). Off by default. The schema is
 * a TypeBox object the controller's ConfigSchema embeds as its `sparkplug` key, so it shares the
 * defaults < file < environment < flags precedence and the generated docs table.
 */
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/** A Sparkplug id: one MQTT topic level (no `/`, `+`, `#`, whitespace). */
const SparkplugId = (description: string, def?: string) =>
  Type.String({
    pattern: '^[^/+#\\s]{1,128}$',
    ...(def === undefined ? {} : { default: def }),
    description,
  });

export const SparkplugConfigSchema = Type.Object(
  {
    enabled: Type.Boolean({
      default: false,
      env: 'OUTPOST_SPARKPLUG',
      description: 'publish site status as Sparkplug B (the controller acts as edge node(s))',
    }),
    groupId: SparkplugId('Sparkplug group_id', 'outpost'),
    nodes: Type.Union([Type.Literal('group'), Type.Literal('site')], {
      default: 'group',
      description:
        'edge node per site group (sites = devices of each of their groups) or per site (one MQTT connection each)',
    }),
    ungroupedNode: SparkplugId('edge node id of sites in no group (nodes: group)', 'ungrouped'),
    primaryHostId: Type.Optional(
      SparkplugId('host_id of the primary host application whose STATE the edge nodes follow'),
    ),
    url: Type.Optional(
      Type.String({
        env: 'OUTPOST_SPARKPLUG_BROKER',
        description: 'broker URL for the Sparkplug connections (default: mqtt.url)',
      }),
    ),
    clientIdBase: Type.String({
      default: 'controller',
      pattern: '^[A-Za-z0-9_-]{1,64}$',
      description:
        'MQTT client ids are `<clientIdBase>.sp-<node>` (the identity name of the certificate or user)',
    }),
    username: Type.Optional(Type.String({ maxLength: 256, description: 'MQTT username (password login)' })),
    password: Type.Optional(
      Type.String({ maxLength: 1024, env: 'OUTPOST_SPARKPLUG_PASSWORD', description: 'MQTT password' }),
    ),
    ca: Type.Optional(Type.String({ description: 'CA certificate (default: mqtt.ca or certsDir/ca.crt)' })),
    cert: Type.Optional(
      Type.String({ description: 'client certificate (default: mqtt.cert or certsDir/controller.crt)' }),
    ),
    key: Type.Optional(
      Type.String({ description: 'client key (default: mqtt.key or certsDir/controller.key)' }),
    ),
    keepalive: Type.Integer({
      minimum: 5,
      maximum: 3600,
      default: 30,
      description: 'MQTT keepalive, seconds',
    }),
    pollMs: Type.Integer({
      minimum: 10,
      maximum: 600_000,
      default: 1000,
      description: 'how often the store is read for changes (DDATA carries only changed metrics)',
    }),
    ageIntervalMs: Type.Integer({
      minimum: 0,
      maximum: 86_400_000,
      default: 60_000,
      description:
        'refresh period of the age metrics (last_contact_age_s); 0: only when something else changes',
    }),
    primaryHostWaitMs: Type.Integer({
      minimum: 0,
      maximum: 60_000,
      default: 1000,
      description: 'after connecting, wait this long for the retained primary-host STATE before the births',
    }),
    rebirthMinIntervalMs: Type.Integer({
      minimum: 0,
      maximum: 600_000,
      default: 1000,
      description: 'rebirth requests closer together than this are coalesced into one',
    }),
    maxNodes: Type.Integer({
      minimum: 1,
      maximum: 100_000,
      default: 500,
      description: 'most edge nodes (MQTT connections) opened; further nodes are left out and logged',
    }),
    stateFile: Type.Optional(
      Type.String({ description: 'bdSeq and alias store (default: <dataDir>/sparkplug.json)' }),
    ),
  },
  { additionalProperties: false, default: {} },
);

export type SparkplugConfig = Static<typeof SparkplugConfigSchema>;

/** A complete configuration from a partial one (defaults filled in); throws on invalid input. */
export function sparkplugConfig(input: Partial<SparkplugConfig> = {}): SparkplugConfig {
  const cfg = Value.Default(SparkplugConfigSchema, structuredClone(input)) as SparkplugConfig;
  if (!Value.Check(SparkplugConfigSchema, cfg)) {
    const first = [...Value.Errors(SparkplugConfigSchema, cfg)][0];
    throw new Error(`sparkplug config ${first?.path || '/'}: ${first?.message ?? 'invalid'}`);
  }
  return cfg;
}
