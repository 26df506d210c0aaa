/**
 * The Sparkplug component in a child process, for restart and crash tests:
 * `node --import tsx sparkplug-child.ts <spec.json>`. The sites come from a JSON file (re-read at every
 * poll), so the test changes them by rewriting it. SIGTERM closes cleanly (NDEATH published);
 * SIGKILL leaves the broker to publish the NDEATH will. Logs JSON lines to stdout.
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import {
  createSparkplug,
  type SiteView,
  type SparkplugConfig,
} from '../../../controller/src/sparkplug/index.js';

export interface SparkplugChildSpec {
  readonly url: string;
  readonly stateFile: string;
  readonly sitesFile: string;
  readonly config: Partial<SparkplugConfig>;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as SparkplugChildSpec;
const log = pino({ level: 'info' }, pino.destination({ dest: 1, sync: true }));
const sp = createSparkplug({
  config: spec.config,
  source: { sites: () => JSON.parse(readFileSync(spec.sitesFile, 'utf8')) as SiteView[] },
  connection: { url: spec.url },
  stateFile: spec.stateFile,
  log,
});
sp.start();
process.on('SIGTERM', () => {
  sp.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
