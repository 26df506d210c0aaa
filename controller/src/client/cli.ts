/**
 * The operator CLI over the controller's REST API: `outpost sites|stack|deploy|status|audit`.
 * `cli/main.ts` calls `run([command, ...args])`; tests call it in-process with their own streams.
 *
 *   const code = await run(['sites', '--json'], { stdout, stderr, env: { OUTPOST_API: url, OUTPOST_TOKEN: t } });
 *
 * Output is a human table by default and JSON with --json (JSON lines for --watch). Errors go to
 * stderr with the API's problem `code` and per-field paths; the exit code tells the class (see
 * GLOBAL_HELP in ./common.ts): 2 usage, 3 auth, 4 not found/invalid, 5 server/unreachable.
 */
import { ClientError, EXIT } from './api.js';
import { AUDIT_HELP, type AuditValues, audit } from './audit.js';
import { type Ctx, DEFAULT_TOKEN_FILE, GLOBAL_HELP, makeCtx, parse } from './common.js';
import { DEPLOY_HELP, type DeployValues, deploy } from './deploy.js';
import { type Io, processIo } from './io.js';
import { ROLLOUT_HELP, ROLLOUT_OPTIONS, type RolloutValues, rollout } from './rollout.js';
import { SITES_HELP, type SitesValues, sites } from './sites.js';
import { STACK_HELP, type StackValues, stack } from './stacks.js';
import { STATUS_HELP, type StatusValues, status } from './status.js';

export type { Io, Out } from './io.js';

type Values = SitesValues & StackValues & DeployValues & StatusValues & AuditValues & RolloutValues;

interface Spec {
  readonly help: string;
  readonly options: Parameters<typeof parse>[1];
  /** Takes a subcommand as its first positional. */
  readonly sub: boolean;
  readonly run: (ctx: Ctx, sub: string | undefined, v: Values, p: string[]) => Promise<number>;
}

const COMMANDS: Record<string, Spec> = {
  sites: {
    help: SITES_HELP,
    sub: true,
    options: {
      group: { type: 'string', multiple: true },
      selector: { type: 'string' },
      online: { type: 'boolean' },
      offline: { type: 'boolean' },
      'uplink-key': { type: 'string' },
      label: { type: 'string', multiple: true },
      description: { type: 'string' },
      tz: { type: 'string' },
      window: { type: 'string', multiple: true },
    },
    run: sites,
  },
  stack: {
    help: STACK_HELP,
    sub: true,
    options: { name: { type: 'string' }, 'allow-tags': { type: 'boolean' }, compose: { type: 'boolean' } },
    run: stack,
  },
  deploy: {
    help: DEPLOY_HELP,
    sub: false,
    options: {
      to: { type: 'string', multiple: true },
      watch: { type: 'boolean', short: 'w' },
      timeout: { type: 'string' },
      interval: { type: 'string' },
      ttl: { type: 'string' },
      approve: { type: 'boolean' },
    },
    run: (ctx, _sub, v, p) => deploy(ctx, v, p),
  },
  status: {
    help: STATUS_HELP,
    sub: false,
    options: {
      group: { type: 'string', multiple: true },
      limit: { type: 'string' },
      watch: { type: 'boolean', short: 'w' },
      interval: { type: 'string' },
      timeout: { type: 'string' },
    },
    run: (ctx, _sub, v, p) => status(ctx, v, p),
  },
  audit: {
    help: AUDIT_HELP,
    sub: true,
    options: { db: { type: 'string' }, format: { type: 'string' }, out: { type: 'string' } },
    run: audit,
  },
  rollout: { help: ROLLOUT_HELP, sub: true, options: ROLLOUT_OPTIONS, run: rollout },
};

const USAGE = `usage: outpost sites|stack|deploy|status|audit|rollout ... (see 'outpost <command> --help')\n`;

function wantsHelp(args: readonly string[]): boolean {
  const i = args.indexOf('--');
  const opts = i < 0 ? args : args.slice(0, i);
  return opts.includes('--help') || opts.includes('-h') || opts[0] === 'help';
}

/** Listens for Ctrl-C (and SIGTERM) while the command runs; a second Ctrl-C exits at once. */
function interrupts(io: Io): { signal: AbortSignal; dispose(): void } {
  if (io.signal) return { signal: io.signal, dispose: () => undefined };
  const ac = new AbortController();
  const onSignal = (): void => {
    if (ac.signal.aborted) process.exit(EXIT.interrupted);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: ac.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export async function run(args: string[], io: Io = processIo()): Promise<number> {
  const [cmd, ...rest] = args;
  const spec = cmd ? COMMANDS[cmd] : undefined;
  if (!cmd || !spec) {
    io.stderr.write(`${cmd ? `outpost: unknown client command '${cmd}'\n` : ''}${USAGE}`);
    return EXIT.usage;
  }
  if (wantsHelp(rest)) {
    io.stdout.write(`${spec.help}\n${GLOBAL_HELP}`);
    return EXIT.ok;
  }
  const { signal, dispose } = interrupts(io);
  let json = rest.includes('--json');
  let ctx: Ctx | undefined;
  let sub: string | undefined;
  try {
    const { values, positionals } = parse(rest, spec.options);
    json = values.json === true;
    ctx = makeCtx(io, values, signal);
    sub = spec.sub ? positionals[0] : undefined;
    return await spec.run(ctx, sub, values as Values, spec.sub ? positionals.slice(1) : positionals);
  } catch (err) {
    return report(io, json, `outpost ${cmd}${sub ? ` ${sub}` : ''}`, err, ctx, signal);
  } finally {
    dispose();
  }
}

function report(
  io: Io,
  json: boolean,
  what: string,
  err: unknown,
  ctx: Ctx | undefined,
  signal: AbortSignal,
): number {
  if (signal.aborted || (err instanceof ClientError && err.code === 'aborted')) {
    io.stderr.write(
      json ? `${JSON.stringify({ error: { code: 'interrupted' } })}\n` : `${what}: interrupted\n`,
    );
    return EXIT.interrupted;
  }
  const e =
    err instanceof ClientError
      ? err
      : new ClientError((err as Error)?.message ?? String(err), EXIT.failed, 'error');
  if (json) {
    io.stderr.write(
      `${JSON.stringify({ error: { code: e.code, status: e.status ?? null, message: e.message, errors: e.errors } })}\n`,
    );
    return e.exit;
  }
  let text =
    e.code === 'usage'
      ? `${what}: ${e.message}\n(see '${what.split(' ').slice(0, 2).join(' ')} --help')\n`
      : `${what}: ${e.code}${e.status ? ` (${e.status})` : ''}: ${e.message}\n`;
  // The detail already quotes the first field error; list them all when there are more.
  const only = e.errors.length === 1 ? e.errors[0] : undefined;
  if (!only || !e.message.includes(only.path))
    for (const f of e.errors) text += `  ${f.path}: ${f.message}\n`;
  if (e.code === 'unauthorized') {
    const source = ctx?.tokenSource() ?? 'none';
    text +=
      source === 'none'
        ? `hint: no token given: pass --token, set OUTPOST_TOKEN, or use --token-file (default ${DEFAULT_TOKEN_FILE})\n`
        : `hint: the token from ${source} was refused\n`;
  }
  if (e.code === 'unreachable' || e.code === 'timeout')
    text += 'hint: is the controller running? Point --api (or OUTPOST_API) at its REST API\n';
  io.stderr.write(text);
  return e.exit;
}
