/**
 * `outpost` command dispatcher. Each subcommand lives with its component and is imported lazily, so
 * `outpost agent` never loads fastify, aedes or the controller (the agent's memory budget, DESIGN §7).
 * Every module exports `run(args: string[]): Promise<number>` returning the exit code.
 */
import { pathToFileURL } from 'node:url';

type Runner = () => Promise<{ run(args: string[]): Promise<number> }>;

const client: Runner = () => import('../controller/src/client/cli.js');

const COMMANDS: Record<string, { load: Runner; help: string; client?: true }> = {
  up: {
    load: () => import('./up.js'),
    help: 'all-in-one: broker + controller (+ local agent when Docker is reachable)',
  },
  broker: { load: () => import('../broker/src/cli.js'), help: 'run the MQTT broker' },
  controller: {
    load: () => import('../controller/src/cli.js'),
    help: 'run the controller (REST API + publisher)',
  },
  agent: {
    load: () => import('../agent/src/cli.js'),
    help: 'run the site agent, or `agent status` for the local view',
  },
  certs: { load: () => import('../certs/src/cli.js'), help: 'CA, certificates, signing keys and trust root' },
  envelope: { load: () => import('./envelope.js'), help: 'inspect or sign a command envelope offline' },
  sites: { load: client, help: 'list and manage sites (API client)', client: true },
  stack: { load: client, help: 'push Compose stacks (API client)', client: true },
  deploy: { load: client, help: 'deploy a stack revision (API client)', client: true },
  status: { load: client, help: 'fleet status, --watch for live progress', client: true },
  rollout: {
    load: client,
    help: 'staged rollouts: create, watch, pause, resume, approve, abort',
    client: true,
  },
  audit: { load: client, help: 'verify or export the audit log', client: true },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(11)} ${c.help}`);
  return `usage: outpost <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n'outpost <command> --help' for details.\n`;
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage());
    process.exitCode = cmd ? 0 : 64;
    return;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    process.stderr.write(`outpost: unknown command '${cmd}'\n\n${usage()}`);
    process.exitCode = 64;
    return;
  }
  const mod = await entry.load();
  // Client commands receive their own name as the first argument (`outpost stack push F`).
  const args = entry.client ? [cmd, ...rest] : rest;
  process.exitCode = await mod.run(args);
}

// Run directly (`node dist/cli/main.js …`, `node --import tsx cli/main.ts …`, or a child started by
// `outpost up`), as opposed to being imported by bin/outpost.js.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`outpost: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(70);
  });
}
