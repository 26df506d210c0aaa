/**
 * `outpost agent`: runs the site agent with the Docker runtime until SIGTERM/SIGINT (graceful).
 * `outpost agent status`: the technician's local view, read offline from the agent's database.
 * Exit codes: 0 clean, 1 runtime failure, 64 bad usage, 78 (EX_CONFIG) bad configuration.
 *
 * Heavy modules (dockerode, the Docker runtime) are imported only when the agent runs; `status` loads
 * nothing but SQLite. The memory budget (DESIGN §7): run it through `bin/outpost-agent`, which applies
 * the V8 settings of docs/adr/0005-agent-memory.md; unused dependencies are stubbed (lean.ts).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { ConfigError, configDocs, loadConfig } from './config.js';

const USAGE = `usage: outpost agent [options]
       outpost agent status [--data DIR | --config FILE] [--json]

  --config FILE      JSON or YAML config (--help-config lists every key and its OUTPOST_AGENT_* variable)
  --site ID          site id (= certificate CN = MQTT client id)
  --broker URL       mqtts://host:port (mqtt:// only for loopback development)
  --certs DIR        certs layout root (site.crt/key, uplink.key, ca.crt, trust/trust-root.cbor)
  --data DIR         agent database folder
  --docker-socket P  Docker/Podman socket
  --allow-tags       policy: accept images referenced by tag (development sites)
  --log-level L      pino level
  --help-config      print the configuration table and exit

Signals: SIGTERM/SIGINT stop gracefully.
`;

const EX_USAGE = 64;
const EX_CONFIG = 78;

export interface RunOptions {
  /** Stops the agent when aborted (in-process callers; the CLI uses signals). */
  readonly signal?: AbortSignal;
  readonly log?: Logger;
  readonly out?: (s: string) => void;
  readonly err?: (s: string) => void;
  readonly env?: NodeJS.ProcessEnv;
}

export async function run(args: string[], io: RunOptions = {}): Promise<number> {
  const out = io.out ?? ((s) => void process.stdout.write(s));
  const err = io.err ?? ((s) => void process.stderr.write(s));
  const env = io.env ?? process.env;
  const statusMode = args[0] === 'status';
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: statusMode ? args.slice(1) : args,
      options: {
        config: { type: 'string' },
        site: { type: 'string' },
        broker: { type: 'string' },
        certs: { type: 'string' },
        data: { type: 'string' },
        'docker-socket': { type: 'string' },
        'allow-tags': { type: 'boolean' },
        'log-level': { type: 'string' },
        'help-config': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    err(`outpost agent: ${(e as Error).message}\n\n${USAGE}`);
    return EX_USAGE;
  }
  if (values['help']) {
    out(USAGE);
    return 0;
  }
  if (values['help-config']) {
    out(`${configDocs()}\n`);
    return 0;
  }
  return statusMode ? status(values, env, out, err) : runAgent(values, env, io, err);
}

async function status(
  values: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  let dataDir = values['data'] as string | undefined;
  if (!dataDir) {
    try {
      const file = values['config'] as string | undefined;
      // Only the data folder matters here: a placeholder site satisfies the schema when none is set.
      const c = await loadConfig({
        ...(file ? { file } : {}),
        env,
        overrides: { site: env['OUTPOST_AGENT_SITE'] ?? 'x' },
      });
      dataDir = c.dataDir;
    } catch (e) {
      err(`outpost agent status: ${(e as Error).message}\n`);
      return EX_CONFIG;
    }
  }
  const dbPath = join(dataDir, 'agent.db');
  if (!existsSync(dbPath)) {
    err(`outpost agent status: no agent database at ${dbPath}\n`);
    return 1;
  }
  const { readLocalView, formatLocalView } = await import('./local-view.js');
  try {
    const view = readLocalView(dbPath);
    out(values['json'] ? `${JSON.stringify(view, null, 2)}\n` : formatLocalView(view));
    return 0;
  } catch (e) {
    err(`outpost agent status: cannot read ${dbPath}: ${(e as Error).message}\n`);
    return 1;
  }
}

async function runAgent(
  values: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
  io: RunOptions,
  err: (s: string) => void,
): Promise<number> {
  let config: Awaited<ReturnType<typeof loadConfig>>;
  try {
    config = await loadConfig({
      ...(typeof values['config'] === 'string' ? { file: values['config'] } : {}),
      env,
      overrides: {
        site: values['site'],
        broker: values['broker'],
        certsDir: values['certs'],
        dataDir: values['data'],
        dockerSocket: values['docker-socket'],
        allowTags: values['allow-tags'] === true ? true : undefined,
        logLevel: values['log-level'],
      },
    });
  } catch (e) {
    err(`outpost agent: ${e instanceof ConfigError ? e.message : (e as Error).message}\n`);
    return EX_CONFIG;
  }
  // Before dockerode and MQTT.js load: keep their SSH, gRPC and browser dependencies out (lean.ts).
  if (env['OUTPOST_AGENT_FULL_DEPS'] !== '1') {
    const { installLeanRequires } = await import('./lean.js');
    installLeanRequires();
  }
  const { pino } = await import('pino');
  const log = io.log ?? pino({ level: config.logLevel });
  const [{ createAgent }, { createDockerRuntime }, dockerode] = await Promise.all([
    import('./agent.js'),
    import('./runtime/docker.js'),
    import('dockerode'),
  ]);
  // CommonJS module: its class is the default export at run time.
  const Dockerode = (dockerode as unknown as { default: typeof import('dockerode') }).default;
  const docker = new Dockerode({ socketPath: config.dockerSocket });
  const runtime = createDockerRuntime({
    docker,
    site: config.site,
    log: log.child({ component: 'agent.runtime', site: config.site }),
    policy: { allowTags: config.allowTags },
    ...(config.registryMirror ? { registryMirror: config.registryMirror } : {}),
    settleMs: config.healthRunningForMs,
    locksDir: config.locksDir,
  });
  const agent = createAgent({ config, runtime, log });
  try {
    await agent.start();
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'agent failed to start');
    await agent.close().catch(() => undefined);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    io.signal?.addEventListener('abort', stop, { once: true });
    if (!io.signal) {
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    }
  });
  await agent.close();
  return 0;
}
