/**
 * Child-process controller for rollout crash tests (SIGKILL): buildController (rollouts included)
 * with the test keys, listening on PORT. The line `controller API listening` says it is up.
 *
 *   node --import tsx rollout-controller-main.ts DATA_DIR BROKER_URL PORT TOKEN
 */
import { pino } from 'pino';
import { buildController } from '../../../controller/src/app.js';
import { loadConfig } from '../../../controller/src/config.js';
import { controllerSigner } from './keys.js';

const [dataDir, brokerUrl, port, token] = process.argv.slice(2) as [string, string, string, string];
const config = loadConfig({
  overrides: {
    dataDir,
    certsDir: dataDir,
    adminToken: token,
    logLevel: 'warn',
    mqtt: { url: brokerUrl },
    api: { host: '127.0.0.1', port: Number(port) },
    outbox: { tickMs: 50, retryMs: 400, maxRetryMs: 2000, heartbeatSec: 0 },
  },
});
const c = await buildController({
  config,
  log: pino({ level: 'warn' }),
  signing: { signer: controllerSigner() },
});
await c.start();
process.stdout.write('controller API listening\n');
process.on('SIGTERM', () => {
  void c.close().then(() => process.exit(0));
});
