/**
 * Runs `outpost <args>` as a child process from the TypeScript sources, the way bin/outpost.js runs
 * the built CLI: `node --import tsx -e "import('cli/main.ts').then(m => m.main(argv))" <args>`.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = pathToFileURL(`${REPO}cli/main.ts`).href;
const LAUNCH = `import(${JSON.stringify(MAIN)}).then((m) => m.main(process.argv.slice(1))).catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(70); })`;

export interface CliResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  out: string;
}

// Each child costs ~1 s of CPU (tsx + the protocol modules): run at most a few at once, so a loaded
// machine slows the suite down instead of timing children out.
const MAX_CHILDREN = 3;
let running = 0;
const waiting: (() => void)[] = [];

async function slot<T>(fn: () => Promise<T>): Promise<T> {
  if (running < MAX_CHILDREN) running++;
  else await new Promise<void>((r) => waiting.push(r)); // the finishing child hands its slot over
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

export function runCli(args: string[], input?: Uint8Array | string, timeoutMs = 60_000): Promise<CliResult> {
  return slot(() => spawnCli(args, input, timeoutMs));
}

function spawnCli(
  args: string[],
  input: Uint8Array | string | undefined,
  timeoutMs: number,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', LAUNCH, ...args], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: timeoutMs,
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out);
      resolve({ code, stdout, stderr: Buffer.concat(err).toString('utf8'), out: stdout.toString('utf8') });
    });
    child.stdin.end(input === undefined ? undefined : Buffer.from(input));
  });
}
