/**
 * `outpost controller [--config FILE] [--data DIR] [--certs DIR] [--broker URL] [--port N] [--host H]`
 *
 * Runs the controller until SIGINT or SIGTERM, then shuts down in order (publisher, API, MQTT, DB).
 * Logs (pino, JSON) go to stderr; stdout carries only the bootstrap admin token on first start.
 * Configuration: defaults < --config file (YAML/JSON) < OUTPOST_* environment < flags (see config.ts).
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { buildController } from './app.js';
import { type ConfigInput, configDocs, loadConfig } from './config.js';
import { isApiError } from './errors.js';

const USAGE = `usage: outpost controller [--config FILE] [--data DIR] [--certs DIR] [--broker URL] [--port N] [--host H]
       outpost controller config-docs     print the configuration reference (Markdown)
`;

const OPTIONS = {
  config: { type: 'string' },
  data: { type: 'string' },
  certs: { type: 'string' },
  broker: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function run(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`outpost controller: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const { values: v, positionals } = parsed;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals[0] === 'config-docs') {
    process.stdout.write(`${configDocs()}\n`);
    return 0;
  }
  if (positionals.length > 0) {
    process.stderr.write(`outpost controller: unexpected ${positionals.join(' ')}\n${USAGE}`);
    return 64;
  }
  if (v.port !== undefined && !/^\d{1,5}$/.test(v.port)) {
    process.stderr.write(`outpost controller: --port must be a number\n`);
    return 64;
  }

  const overrides: ConfigInput = {
    ...(v.data ? { dataDir: v.data } : {}),
    ...(v.certs ? { certsDir: v.certs } : {}),
    ...(v.broker ? { mqtt: { url: v.broker } } : {}),
    ...(v.port !== undefined || v.host
      ? {
          api: {
            ...(v.port !== undefined ? { port: Number(v.port) } : {}),
            ...(v.host ? { host: v.host } : {}),
          },
        }
      : {}),
  };

  let controller: Awaited<ReturnType<typeof buildController>>;
  let log: pino.Logger;
  try {
    const config = loadConfig({ ...(v.config ? { file: v.config } : {}), env: process.env, overrides });
    log = pino({ level: config.logLevel, base: { component: 'controller' } }, pino.destination(2));
    controller = await buildController({ config, log });
  } catch (err) {
    process.stderr.write(`outpost controller: ${isApiError(err) ? err.detail : (err as Error).message}\n`);
    return isApiError(err) ? 78 : 1;
  }
  if (controller.bootstrapToken) {
    process.stdout.write(`bootstrap admin token (shown once; store it now): ${controller.bootstrapToken}\n`);
  }
  try {
    await controller.start();
  } catch (err) {
    log.error({ err }, 'start failed');
    await controller.close().catch(() => undefined);
    return 1;
  }

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  log.info({ signal }, 'shutting down');
  const force = setTimeout(() => {
    log.error('shutdown took too long; exiting');
    process.exit(1);
  }, 10_000);
  force.unref();
  await controller.close();
  clearTimeout(force);
  return 0;
}
