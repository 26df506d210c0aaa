/** Runs the `outpost` CLI dispatcher (cli/main.ts) from source: `node --import tsx outpost.ts agent status ...`. */
import { main } from '../../../cli/main.js';

await main(process.argv.slice(2));
