/** `outpost broker` as a child process for the CLI tests: node --import tsx this-file [args]. */
import { run } from '../../../broker/src/cli.js';

process.exitCode = await run(process.argv.slice(2));
