/**
 * `createSparkplug(opts)`: Outpost's sites as Sparkplug B devices, the controller as their edge
 * node(s). Self-contained: it reads sites through a `SparkplugSource` (polled every `pollMs`, or at
 * once after `notify()`), and opens its own MQTT connections (one per edge node, because each needs
 * its own NDEATH will).
 *
 *   const sp = createSparkplug({ config, source: storeSource(store), connection, stateFile, log });
 *   sp.start();        // connects; births follow
 *   sp.notify();       // something changed (optional: the poll finds it anyway)
 *   await sp.close();  // NDEATH per node, disconnect
 *
 * Edge nodes: `nodes: group` makes one per site group (a site in several groups is a device of each;
 * a site in none belongs to `ungroupedNode`); `nodes: site` makes one per site (one connection each:
 * for small fleets). At most `maxNodes` are opened.
 */
import { createHash } from 'node:crypto';
import { type IClientOptions, type MqttClient, connect as mqttConnect } from 'mqtt';
import type { Logger } from 'pino';
import { type SparkplugConfig, sparkplugConfig } from './config.js';
import { EdgeNode, type EdgeNodeStats } from './node.js';
import type { SiteView, SparkplugSource } from './source.js';
import { SparkplugStateFile } from './state-file.js';
import { assertSparkplugId, SPARKPLUG_ID } from './topics.js';

export interface SparkplugConnection {
  readonly url: string;
  readonly ca?: string | Buffer;
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  readonly username?: string;
  readonly password?: string;
  /** Default true; loopback tests may turn it off only for plain mqtt:// anyway. */
  readonly rejectUnauthorized?: boolean;
}

export interface SparkplugOptions {
  readonly config?: Partial<SparkplugConfig>;
  readonly source: SparkplugSource;
  readonly connection: SparkplugConnection;
  /** bdSeq and alias store (JSON). */
  readonly stateFile: string;
  readonly log: Logger;
  /** Milliseconds clock (tests). */
  readonly now?: () => number;
  /** MQTT client factory (default: mqtt.connect). */
  readonly connect?: (url: string, opts: IClientOptions) => MqttClient;
}

export interface SparkplugStats {
  readonly groupId: string;
  readonly nodes: readonly EdgeNodeStats[];
  readonly skippedNodes: number;
  readonly polls: number;
  readonly pollErrors: number;
}

export interface Sparkplug {
  /** Opens the edge nodes' connections and starts polling. Idempotent. */
  start(): void;
  /** Reads the source soon (coalesced) instead of waiting for the next poll. */
  notify(): void;
  stats(): SparkplugStats;
  /** NDEATH and disconnect for every edge node; stops polling. */
  close(): Promise<void>;
}

const CLIENT_SUFFIX = /^[a-z0-9_-]{1,29}$/;

/** `<base>.sp-<node>`, or a hash of the node when it would not fit the broker's client-id rule. */
export function sparkplugClientId(base: string, group: string, node: string): string {
  if (CLIENT_SUFFIX.test(node)) return `${base}.sp-${node}`;
  return `${base}.sp-${createHash('sha256').update(`${group}/${node}`).digest('hex').slice(0, 16)}`;
}

export function createSparkplug(opts: SparkplugOptions): Sparkplug {
  const cfg = sparkplugConfig(opts.config);
  // A logger that already names its component (the controller passes a child) is used as it is.
  const log =
    'component' in opts.log.bindings() ? opts.log : opts.log.child({ component: 'controller.sparkplug' });
  const now = opts.now ?? Date.now;
  const group = assertSparkplugId('group_id', cfg.groupId);
  const state = new SparkplugStateFile(opts.stateFile, log);
  const nodes = new Map<string, EdgeNode>();
  const factory = opts.connect ?? mqttConnect;
  const conn = opts.connection;
  const tls: IClientOptions = conn.url.startsWith('mqtts:')
    ? {
        ...(conn.ca ? { ca: conn.ca } : {}),
        ...(conn.cert ? { cert: conn.cert } : {}),
        ...(conn.key ? { key: conn.key } : {}),
        rejectUnauthorized: conn.rejectUnauthorized ?? true,
      }
    : {};
  const auth: IClientOptions = {
    ...(conn.username !== undefined ? { username: conn.username } : {}),
    ...(conn.password !== undefined ? { password: conn.password } : {}),
  };
  let timer: NodeJS.Timeout | undefined;
  let soon: NodeJS.Immediate | undefined;
  let started = false;
  let closed = false;
  let polls = 0;
  let pollErrors = 0;
  let skipped = new Set<string>();

  const nodeIdsOf = (v: SiteView): string[] => {
    if (cfg.nodes === 'site') return [v.id];
    const gs = v.groups.filter((g) => SPARKPLUG_ID.test(g));
    return gs.length > 0 ? gs : [cfg.ungroupedNode];
  };

  const makeNode = (id: string): EdgeNode =>
    new EdgeNode({
      group,
      node: id,
      clientId: sparkplugClientId(cfg.clientIdBase, group, id),
      connect: (o) => factory(conn.url, { ...o, ...tls, ...auth }),
      state,
      keepalive: cfg.keepalive,
      ...(cfg.primaryHostId ? { primaryHostId: cfg.primaryHostId } : {}),
      primaryHostWaitMs: cfg.primaryHostWaitMs,
      rebirthMinIntervalMs: cfg.rebirthMinIntervalMs,
      ageIntervalMs: cfg.ageIntervalMs,
      now,
      log: log.child({ node: id }),
    });

  const poll = (): void => {
    soon = undefined;
    if (closed) return;
    polls++;
    let views: readonly SiteView[];
    try {
      views = opts.source.sites();
    } catch (err) {
      pollErrors++;
      log.error({ err: (err as Error).message }, 'Sparkplug source failed');
      return;
    }
    const byNode = new Map<string, SiteView[]>();
    for (const v of views) {
      for (const id of nodeIdsOf(v)) {
        const list = byNode.get(id);
        if (list) list.push(v);
        else byNode.set(id, [v]);
      }
    }
    const nowSkipped = new Set<string>();
    for (const id of [...byNode.keys()].sort()) {
      if (nodes.has(id)) continue;
      if (nodes.size >= cfg.maxNodes) {
        nowSkipped.add(id);
        continue;
      }
      const n = makeNode(id);
      nodes.set(id, n);
      n.start();
    }
    if (nowSkipped.size > 0 && nowSkipped.size !== skipped.size) {
      log.error(
        { skipped: nowSkipped.size, maxNodes: cfg.maxNodes },
        'too many Sparkplug edge nodes; some left out',
      );
    }
    skipped = nowSkipped;
    for (const [id, n] of nodes) {
      const sites = byNode.get(id);
      if (sites) {
        n.update(sites);
      } else {
        nodes.delete(id);
        log.info({ node: id }, 'edge node has no sites left; NDEATH');
        n.close().catch((err: Error) => log.warn({ node: id, err: err.message }, 'edge node close failed'));
      }
    }
  };

  return {
    start() {
      if (started || closed) return;
      started = true;
      log.info({ groupId: group, nodes: cfg.nodes, url: conn.url }, 'Sparkplug B enabled');
      poll();
      timer = setInterval(poll, cfg.pollMs);
      timer.unref();
    },
    notify() {
      if (!started || closed || soon) return;
      soon = setImmediate(poll);
    },
    stats() {
      return {
        groupId: group,
        nodes: [...nodes.values()].map((n) => n.stats()),
        skippedNodes: skipped.size,
        polls,
        pollErrors,
      };
    },
    async close() {
      if (closed) return;
      closed = true;
      if (timer) clearInterval(timer);
      if (soon) clearImmediate(soon);
      await Promise.all([...nodes.values()].map((n) => n.close()));
      nodes.clear();
    },
  };
}
