/**
 * Launcher for crash tests: runs `outpost controller` (controller/src/cli.ts) in a child process, so
 * OUTPOST_FAULT_POINT can SIGKILL it at a named point. Arguments are the CLI's.
 */
import { run } from '../../../controller/src/cli.js';

process.exitCode = await run(process.argv.slice(2));
