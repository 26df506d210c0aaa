/**
 * Sparkplug B for SCADA (docs/SCADA.md). Optional, off by default (`sparkplug.enabled`).
 *
 * Wiring into the controller (test/scada/wiring.test.ts runs once it is in):
 *
 *   // config.ts: import { SparkplugConfigSchema } from './sparkplug/config.js';
 *   //            ConfigSchema properties:  sparkplug: SparkplugConfigSchema,
 *   // app.ts:    import { createControllerSparkplug } from './sparkplug/index.js';
 *   const sparkplug = config.sparkplug.enabled ? createControllerSparkplug({ config, store, log }) : undefined;
 *   // start(), after publisher.start():           sparkplug?.start();
 *   // close(), after `if (mqtt) await mqtt.close()`: await sparkplug?.close();   (before db.close())
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { certsLayout } from '../../../certs/src/layout.js';
import type { SparkplugConfig } from './config.js';
import { type StoredSite, storeSource } from './source.js';
import { createSparkplug, type Sparkplug, type SparkplugConnection } from './sparkplug.js';

export { type SparkplugConfig, SparkplugConfigSchema, sparkplugConfig } from './config.js';
export { BDSEQ_METRIC, deviceMetrics, nodeMetrics, REBIRTH_METRIC } from './metrics.js';
export type { EdgeNodeStats } from './node.js';
export type { AlarmView, SiteView, SparkplugSource, StackView, StoredSite } from './source.js';
export { siteView, storeSource } from './source.js';
export {
  createSparkplug,
  type Sparkplug,
  type SparkplugConnection,
  type SparkplugOptions,
  type SparkplugStats,
  sparkplugClientId,
} from './sparkplug.js';
export { deviceTopic, NAMESPACE, nodeTopic, stateTopic } from './topics.js';

/** The parts of the controller's configuration the Sparkplug component reads. */
export interface ControllerSparkplugConfig {
  readonly dataDir: string;
  readonly certsDir: string;
  readonly mqtt: {
    readonly url: string;
    readonly ca?: string;
    readonly cert?: string;
    readonly key?: string;
  };
  readonly sparkplug: Partial<SparkplugConfig>;
}

/**
 * The connection settings: `sparkplug.url` (default `mqtt.url`); for mqtts:// the CA and client
 * certificate from `sparkplug.*`, else `mqtt.*`, else the controller's files in `certsDir`.
 */
export function sparkplugConnection(config: ControllerSparkplugConfig): SparkplugConnection {
  const sp = config.sparkplug;
  const url = sp.url ?? config.mqtt.url;
  const auth = {
    ...(sp.username !== undefined ? { username: sp.username } : {}),
    ...(sp.password !== undefined ? { password: sp.password } : {}),
  };
  if (!url.startsWith('mqtts:')) return { url, ...auth };
  const layout = certsLayout(config.certsDir);
  const cert = sp.cert ?? config.mqtt.cert ?? layout.controllerCert;
  const key = sp.key ?? config.mqtt.key ?? layout.controllerKey;
  const withCert = sp.cert !== undefined || sp.username === undefined;
  return {
    url,
    ca: readFileSync(sp.ca ?? config.mqtt.ca ?? layout.caCert),
    ...(withCert ? { cert: readFileSync(cert), key: readFileSync(key) } : {}),
    ...auth,
  };
}

/** The component over the controller's store, configured from the controller's configuration. */
export function createControllerSparkplug(opts: {
  readonly config: ControllerSparkplugConfig;
  readonly store: { readonly sites: { list(): readonly StoredSite[] } };
  readonly log: Logger;
  readonly now?: () => number;
}): Sparkplug {
  const { config } = opts;
  return createSparkplug({
    config: config.sparkplug,
    source: storeSource(opts.store),
    connection: sparkplugConnection(config),
    stateFile: config.sparkplug.stateFile ?? join(config.dataDir, 'sparkplug.json'),
    log: opts.log,
    ...(opts.now ? { now: opts.now } : {}),
  });
}
