/**
 * `outpost up`: the all-in-one development and demo setup (README quick start, DESIGN §1).
 *
 * In one process: the broker (TLS with client certificates, durable SQLite persistence) and the
 * controller (REST API + outbox) with embedded defaults — certificates, keys and a trust root are
 * generated into the data folder on first run. When a Docker engine answers, a local agent (site
 * `local`) runs as a child process with its own certificate, and a sample stack is deployed to it
 * through the REST API, exactly as an operator would.
 *
 * Everything lives under the data folder (default `.data`): certs/, broker/, controller/,
 * agent-<site>/, logs/, admin.token (the admin API token, 0600) and api.url — the operator CLI
 * (`outpost sites`, `outpost status --watch`, …) finds the last two by itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { AGENT_ENV, AGENT_NODE_FLAGS, agentEntry } from '../agent/src/launch.js';

const USAGE = `usage: outpost up [options]

Runs broker + controller with embedded defaults, and a local agent when a Docker engine is reachable.

  --data DIR        data folder (default .data, or $OUTPOST_HOME)
  --host H          address the API and MQTT listen on (default 127.0.0.1)
  --api-port N      REST API port (default 8080)
  --mqtt-port N     MQTT over TLS port (default 8883)
  --site ID         the local agent's site id (default local)
  --no-agent        do not start a local agent
  --no-sample       do not deploy the sample stack
  --docker-host U   Docker engine (default $DOCKER_HOST, else unix:///var/run/docker.sock)
  --once            start, deploy the sample, wait until it is applied (or fails), then stop (smoke test)
  --timeout S       with --once: give up after S seconds (default 120)
`;

/** The sample stack: the private engine's local test image, referenced by tag (dev policy). */
const SAMPLE_COMPOSE = `services:
  web:
    image: outpost-test/web:1
    environment:
      GREETING: hello from outpost
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 2s
      retries: 3
`;
const SAMPLE_IMAGE = 'outpost-test/web:1';

type Api = (
  method: string,
  path: string,
  body?: unknown,
) => Promise<{ status: number; body: Record<string, unknown> }>;

function makeApi(base: string, token: string): Api {
  return async (method, path, body) => {
    const res = await fetch(`${base}/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
}

function readOrCreateToken(file: string): string {
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const token = `opt_${randomBytes(24).toString('base64url')}`;
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

/** Is a Docker engine reachable, and does it have the sample image? */
async function probeDocker(dockerHost: string): Promise<{ ok: boolean; sample: boolean; why?: string }> {
  const socketPath = dockerHost.replace(/^unix:\/\//, '');
  if (!dockerHost.startsWith('unix://') || !existsSync(socketPath)) {
    return { ok: false, sample: false, why: `no Docker socket at ${dockerHost}` };
  }
  const mod = (await import('dockerode')) as unknown as { default: typeof import('dockerode') };
  const Docker = mod.default;
  const docker = new Docker({ socketPath, timeout: 5000 });
  try {
    await docker.ping();
  } catch (err) {
    return {
      ok: false,
      sample: false,
      why: `Docker at ${dockerHost} does not answer: ${(err as Error).message}`,
    };
  }
  const sample = await docker
    .getImage(SAMPLE_IMAGE)
    .inspect()
    .then(() => true)
    .catch(() => false);
  return { ok: true, sample };
}

/**
 * The command line of the local agent, with the agent's shipped memory settings (launch.ts,
 * docs/adr/0005-agent-memory.md, 0007-agent-bundle.md). Compiled (`npm start`, bin/outpost.js): the
 * entry point bin/outpost-agent runs — the one-file bundle dist/outpost-agent.cjs, or dist/cli/main.js
 * with a warning when the bundle is missing or stale. From source (`node --import tsx cli/main.ts up`,
 * the tests): this same CLI's `agent` command, so that the agent runs the code under test.
 * `self`: this file (tests).
 */
export function localAgentCommand(
  args: readonly string[],
  self: string = fileURLToPath(import.meta.url),
): { cmd: string; args: string[]; warning?: string } {
  if (extname(self) === '.ts') {
    const main = join(self, '..', 'main.ts');
    return {
      cmd: process.execPath,
      args: [...AGENT_NODE_FLAGS, ...process.execArgv, main, 'agent', ...args],
    };
  }
  const entry = agentEntry(args);
  return {
    cmd: process.execPath,
    args: [...AGENT_NODE_FLAGS, entry.script, ...entry.args],
    ...(entry.warning ? { warning: entry.warning } : {}),
  };
}

async function waitApplied(
  api: Api,
  deploymentId: string,
  timeoutMs: number,
  say: (s: string) => void,
): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const r = await api('GET', `/deployments/${deploymentId}`);
    const cmds = (r.body.commands as { site: string; status: string }[] | undefined) ?? [];
    const line = cmds.map((c) => `${c.site}: ${c.status}`).join(', ');
    if (line && line !== last) {
      say(`  sample deployment: ${line}`);
      last = line;
    }
    if (cmds.length > 0 && cmds.every((c) => c.status === 'applied')) return true;
    if (cmds.some((c) => ['failed', 'rejected', 'rolled-back', 'expired', 'cancelled'].includes(c.status))) {
      return false;
    }
    await new Promise((r2) => setTimeout(r2, 500));
  }
  say('  sample deployment: still not applied, giving up waiting');
  return false;
}

export async function run(args: string[]): Promise<number> {
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args,
      options: {
        data: { type: 'string' },
        host: { type: 'string' },
        'api-port': { type: 'string' },
        'mqtt-port': { type: 'string' },
        site: { type: 'string' },
        'no-agent': { type: 'boolean' },
        'no-sample': { type: 'boolean' },
        'docker-host': { type: 'string' },
        once: { type: 'boolean' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`outpost up: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const say = (s: string) => void process.stdout.write(`${s}\n`);
  const num = (name: string, def: number): number => {
    const raw = v[name];
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number`);
    return n;
  };
  let apiPort: number;
  let mqttPort: number;
  try {
    apiPort = num('api-port', 8080);
    mqttPort = num('mqtt-port', 8883);
  } catch (err) {
    process.stderr.write(`outpost up: ${(err as Error).message}\n`);
    return 64;
  }
  const host = (v.host as string | undefined) ?? '127.0.0.1';
  const site = (v.site as string | undefined) ?? 'local';
  const data = resolve((v.data as string | undefined) ?? process.env.OUTPOST_HOME ?? '.data');
  const certsDir = join(data, 'certs');
  const logsDir = join(data, 'logs');
  mkdirSync(logsDir, { recursive: true, mode: 0o700 });
  const logFile = join(logsDir, 'outpost.log');
  const log = pino(
    { level: process.env.OUTPOST_LOG_LEVEL ?? 'info' },
    pino.destination({ dest: logFile, sync: false }),
  );

  // 1. Certificates, keys and the trust root (first run only).
  const certs = await import('../certs/src/index.js');
  const layout = certs.certsLayout(certsDir);
  if (!existsSync(layout.trustRoot)) {
    say(
      `outpost up: first run — generating a CA, certificates, signing keys and a trust root in ${certsDir}`,
    );
    await certs.initCerts(certsDir, {});
  }
  const token = readOrCreateToken(join(data, 'admin.token'));
  // `certs init` makes one command-signing key (ctl-N) and one approver key (approver-N).
  const keyKids = readdirSync(join(certsDir, 'signing'))
    .filter((f) => f.endsWith('.key'))
    .map((f) => f.slice(0, -4));
  const signingKid = keyKids.find((k) => k.startsWith('ctl-'));
  const approverKid = keyKids.find((k) => k.startsWith('approver-'));

  // 2. Broker.
  const { createBroker } = await import('../broker/src/index.js');
  const broker = createBroker({
    config: {
      dataDir: join(data, 'broker'),
      certsDir,
      tls: { enabled: true, host, port: mqttPort },
      plain: { enabled: false },
      metrics: { enabled: true, host: '127.0.0.1', port: 0 },
    },
    log: log.child({ component: 'broker' }),
  });
  const ports = await broker.start();
  const tlsPort = ports.tlsPort ?? ports.mqttPort;

  // 3. Controller.
  const { buildController } = await import('../controller/src/app.js');
  const { loadConfig } = await import('../controller/src/config.js');
  const config = loadConfig({
    env: process.env,
    overrides: {
      dataDir: join(data, 'controller'),
      certsDir,
      adminToken: token,
      api: { host, port: apiPort },
      mqtt: { url: `mqtts://127.0.0.1:${tlsPort}` },
      policy: { allowTags: true },
      ...(signingKid ? { signing: { kid: signingKid } } : {}),
      ...(approverKid ? { approver: { kid: approverKid } } : {}),
    },
  });
  const controller = await buildController({ config, log: log.child({ component: 'controller' }) });
  const started = await controller.start();
  const apiUrl = started.url ?? `http://${host}:${apiPort}`;
  writeFileSync(join(data, 'api.url'), `${apiUrl}\n`);
  const api = makeApi(apiUrl, token);

  say('');
  say('Outpost is up.');
  say(`  REST API      ${apiUrl}/v1   (OpenAPI docs: ${apiUrl}/docs)`);
  say(`  admin token   ${join(data, 'admin.token')}`);
  say(`  MQTT (TLS)    mqtts://${host}:${tlsPort}   (client certificates in ${certsDir})`);
  if (ports.metricsPort) say(`  metrics       http://127.0.0.1:${ports.metricsPort}/metrics`);
  say(`  logs          ${logsDir}`);

  // 4. Local agent and sample stack, when Docker answers.
  let agent: ChildProcess | undefined;
  let stopping = false;
  let sampleOk: boolean | undefined;
  const dockerHost =
    (v['docker-host'] as string | undefined) ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  if (!v['no-agent']) {
    const probe = await probeDocker(dockerHost);
    if (!probe.ok) {
      say(
        `  local agent   not started: ${probe.why} (start one with: eval "$(bash scripts/docker-engine.sh)")`,
      );
    } else {
      if (!existsSync(layout.siteCert(site))) await certs.issueSiteCert(certsDir, site);
      const groups = await api('GET', '/groups');
      const haveGroup = ((groups.body.groups ?? groups.body.items ?? []) as { name: string }[]).some(
        (g) => g.name === 'local',
      );
      if (!haveGroup) await api('POST', '/groups', { name: 'local', description: 'sites run by outpost up' });
      const existing = await api('GET', `/sites/${site}`);
      if (existing.status === 404) {
        const r = await api('POST', '/sites', {
          id: site,
          uplinkKey: readFileSync(layout.siteUplinkPub(site), 'utf8'),
          groups: ['local'],
          labels: { env: 'dev' },
        });
        if (r.status !== 201) throw new Error(`enrolling ${site} failed: ${JSON.stringify(r.body)}`);
      }
      const agentLog = createWriteStream(join(logsDir, `agent-${site}.log`), { flags: 'a' });
      const cmd = localAgentCommand([
        '--site',
        site,
        '--broker',
        `mqtts://127.0.0.1:${tlsPort}`,
        '--certs',
        certsDir,
        '--data',
        join(data, `agent-${site}`),
        '--docker-socket',
        dockerHost.replace(/^unix:\/\//, ''),
        '--allow-tags',
      ]);
      if (cmd.warning) say(`  local agent   warning: ${cmd.warning}`);
      agent = spawn(cmd.cmd, cmd.args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...AGENT_ENV, ...process.env },
      });
      agent.stdout?.pipe(agentLog);
      agent.stderr?.pipe(agentLog);
      agent.on('exit', (code, signal) => {
        if (!stopping)
          say(`  local agent   exited (${signal ?? code}); see ${join(logsDir, `agent-${site}.log`)}`);
      });
      say(`  local agent   site ${site}, Docker at ${dockerHost}`);

      if (!v['no-sample']) {
        if (!probe.sample) {
          say(
            `  sample stack  skipped: image ${SAMPLE_IMAGE} is not in this engine (scripts/docker-engine.sh builds it)`,
          );
        } else {
          const push = await api('POST', '/stacks/hello/revisions', {
            compose: SAMPLE_COMPOSE,
            allowTags: true,
          });
          if (push.status >= 300)
            throw new Error(`pushing the sample stack failed: ${JSON.stringify(push.body)}`);
          const dep = await api('POST', '/deployments', { stack: 'hello', target: { sites: [site] } });
          if (dep.status !== 201)
            throw new Error(`deploying the sample stack failed: ${JSON.stringify(dep.body)}`);
          say(`  sample stack  'hello' deployed to ${site}; follow it with: npx outpost status --watch`);
          const timeoutMs = Number(v.timeout ?? 120) * 1000;
          sampleOk = await waitApplied(api, String(dep.body.id), timeoutMs, say);
          say(
            sampleOk
              ? `  sample stack  running and healthy at site ${site}`
              : '  sample stack  did not apply; see the logs',
          );
        }
      }
    }
  }

  const stop = async (): Promise<void> => {
    stopping = true;
    if (agent && agent.exitCode === null) {
      agent.kill('SIGTERM');
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          agent?.kill('SIGKILL');
          r();
        }, 10_000);
        agent?.once('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    }
    await controller.close();
    await broker.close();
    log.flush();
  };

  if (v.once) {
    await stop();
    return sampleOk === false ? 1 : 0;
  }
  say('');
  say('Press Ctrl-C to stop.');
  await new Promise<void>((r) => {
    process.once('SIGINT', () => r());
    process.once('SIGTERM', () => r());
  });
  say('outpost up: stopping');
  await stop();
  return 0;
}
