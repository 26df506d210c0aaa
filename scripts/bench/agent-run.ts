/**
 * Agent benchmark, one run: the COMPILED agent (`dist/`, `npm run build`) as a child process with the
 * real DockerRuntime against the private engine, a real broker (aedes on loopback, plain TCP: the
 * memory of TLS is one session) and a minimal controller (signs commands with the site's trust root,
 * publishes them with QoS 1, verifies the agent's signed acks).
 *
 * RSS is read from /proc/<pid>/status (VmRSS) of the agent process itself — with the shell launcher
 * `bin/outpost-agent` that pid is node, since the launcher `exec`s it (checked: /proc/<pid>/comm).
 *
 * Phases: idle (connected, after a settle), apply (10 `stack.apply` commands of outpost-test/web:1 by
 * tag, peak RSS until every one is acked applied), soak (heartbeats every 2 s and a re-apply of a
 * few stacks now and then; the slope of RSS over time from a least-squares fit over the last three
 * quarters, KB/min).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import mqtt, { type MqttClient } from 'mqtt';
import { LABELS } from '../../agent/src/runtime/types.js';
import {
  type Ack,
  type CommandBodies,
  type CommandType,
  encodeCommand,
  encodeSpec,
  openAck,
  PROTOCOL_VERSION,
  type StackSpec,
  Topics,
} from '../../protocol/src/index.js';
import { startTestBroker } from '../../test/agent/helpers/broker.js';
import { makePki, type TestPki } from '../../test/agent/helpers/pki.js';

export const REPO = join(import.meta.dirname, '..', '..');
export const LAUNCHER = join(REPO, 'bin', 'outpost-agent');
export const MAIN = join(REPO, 'dist', 'cli', 'main.js');

export interface AgentRunConfig {
  /** `launcher`: bin/outpost-agent (the shipped settings); `plain`: node dist/cli/main.js agent. */
  readonly mode: 'launcher' | 'plain';
  readonly dockerHost: string;
  readonly image: string;
  readonly stacks: number;
  readonly idleSettleMs: number;
  readonly idleSampleMs: number;
  readonly soakMs: number;
  /**
   * The start of the soak left out of the slope and of the halves (default: the first quarter): the
   * heap and malloc settling after the 10 applies, and the first re-applies compiling their code paths.
   */
  readonly soakWarmupMs?: number;
  /** Re-apply this many stacks every `reapplyEveryMs` during the soak. */
  readonly reapply: number;
  readonly reapplyEveryMs: number;
  /** plain mode only: node flags and extra environment (to try settings one by one). */
  readonly nodeFlags?: readonly string[];
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** plain mode only: the script run as `node <flags> <main> agent …` (default dist/cli/main.js). */
  readonly main?: string;
  readonly log: (line: string) => void;
  /** Called with the agent's pid after the idle figure (diagnostics: smaps, heap). */
  readonly onIdle?: (pid: number) => void | Promise<void>;
}

export interface Sample {
  readonly t: number;
  readonly rssKb: number;
}

export interface AgentRunResult {
  readonly mode: AgentRunConfig['mode'];
  /** What the pid runs: node (not sh) proves the launcher exec'd. */
  readonly comm: string;
  readonly execArgs: string;
  /** The script node runs (realpath of the first .cjs/.mjs/.js argument): the bundle, or dist/cli/main.js. */
  readonly entry: string;
  readonly idleKb: number;
  /** At the end of the idle phase: RssAnon and RssFile (/proc/<pid>/status), Pss (smaps_rollup). */
  readonly idleAnonKb: number;
  readonly idleFileKb: number;
  readonly idlePssKb: number;
  readonly applyPeakKb: number;
  readonly applyMs: number;
  readonly soakSlopeKbPerMin: number;
  readonly soakStartKb: number;
  readonly soakEndKb: number;
  readonly soak: readonly Sample[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A `Name:  N kB` field of a /proc file. */
function procKb(file: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(file, 'utf8'));
  return m ? Number(m[1]) : 0;
}

export function rssKb(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(s);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Least-squares slope of y over x. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** The minimal controller: signs with the PKI's online key, publishes QoS 1, collects verified acks. */
class MiniController {
  readonly acks: Ack[] = [];
  private readonly topics = new Topics();
  private seq = 0;
  private constructor(
    private readonly pki: TestPki,
    private readonly client: MqttClient,
  ) {}

  static async connect(pki: TestPki, url: string): Promise<MiniController> {
    const client = await mqtt.connectAsync(url, {
      clientId: `bench-ctl-${randomBytes(4).toString('hex')}`,
      clean: false,
      protocolVersion: 4,
    });
    const c = new MiniController(pki, client);
    client.on('message', (topic, payload) => {
      if (topic === c.topics.ack(pki.site)) c.acks.push(openAck(payload, pki.keyFor, pki.site));
    });
    await client.subscribeAsync(c.topics.ack(pki.site), { qos: 1 });
    return c;
  }

  async send<T extends CommandType>(type: T, body: CommandBodies[T]): Promise<number> {
    const seq = ++this.seq;
    const iat = Math.floor(Date.now() / 1000);
    const bytes = encodeCommand(
      {
        v: PROTOCOL_VERSION,
        site: this.pki.site,
        seq,
        prev: seq - 1,
        id: new Uint8Array(randomBytes(16)),
        iat,
        exp: iat + 3600,
        type,
        body,
      } as never,
      this.pki.signer,
    );
    await this.client.publishAsync(this.topics.cmd(this.pki.site), Buffer.from(bytes), { qos: 1 });
    return seq;
  }

  apply(stack: string, rev: number, spec: StackSpec): Promise<number> {
    return this.send('stack.apply', { stack, rev, spec: encodeSpec(spec, 'never').bytes });
  }

  heartbeat(): Promise<number> {
    return this.send('heartbeat', { last: this.seq });
  }

  /** Waits until every seq has a final ack (applied, or a failure, which throws). */
  async waitApplied(seqs: readonly number[], timeoutMs: number, tick: () => void): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const done = seqs.filter((s) => this.acks.some((a) => a.seq === s && a.st === 'applied'));
      const bad = this.acks.find(
        (a) =>
          a.seq !== undefined &&
          seqs.includes(a.seq) &&
          ['failed', 'rejected', 'superseded', 'rolled-back'].includes(a.st),
      );
      if (bad) throw new Error(`seq ${bad.seq}: ${bad.st} ${bad.rc ?? ''} ${bad.msg ?? ''}`);
      if (done.length === seqs.length) return;
      if (Date.now() > until)
        throw new Error(`only ${done.length}/${seqs.length} applied in ${timeoutMs} ms`);
      tick();
      await sleep(100);
    }
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}

function startAgent(
  c: AgentRunConfig,
  args: string[],
  env: Record<string, string>,
): { child: ChildProcess; output: () => string } {
  const [cmd, argv] =
    c.mode === 'launcher'
      ? [LAUNCHER, args]
      : [process.execPath, [...(c.nodeFlags ?? []), c.main ?? MAIN, 'agent', ...args]];
  const childEnv: Record<string, string> = { ...env, ...c.extraEnv };
  for (const k of ['PATH', 'HOME', 'LANG', 'TZ']) if (process.env[k]) childEnv[k] = process.env[k]!;
  const child = spawn(cmd, argv, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-64 * 1024);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { child, output: () => out };
}

async function waitOutput(output: () => string, needle: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!output().includes(needle)) {
    if (Date.now() > until) throw new Error(`agent did not log ${needle}:\n${output().slice(-4000)}`);
    await sleep(50);
  }
}

export async function runAgentOnce(c: AgentRunConfig): Promise<AgentRunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-bench-agent-'));
  const site = `bench-${randomBytes(3).toString('hex')}`;
  const pki = makePki(join(dir, 'certs'), site);
  const broker = await startTestBroker();
  const ctl = await MiniController.connect(pki, broker.url);
  const docker = new Docker({ socketPath: c.dockerHost.replace(/^unix:\/\//, '') });
  const [img = '', tag = ''] = c.image.split(':');
  const spec = (rev: number): StackSpec => ({
    svc: { web: { img, tag, env: { REV: String(rev) }, rst: 'unless-stopped' } },
  });
  const agent = startAgent(c, ['--site', site, '--broker', broker.url, '--certs', pki.certsDir], {
    OUTPOST_AGENT_DATA_DIR: join(dir, 'data'),
    OUTPOST_AGENT_DOCKER_SOCKET: c.dockerHost.replace(/^unix:\/\//, ''),
    OUTPOST_AGENT_ALLOW_TAGS: 'true',
    OUTPOST_AGENT_HEALTH_RUNNING_FOR_MS: '1000',
    OUTPOST_AGENT_DISK_MIN_FREE_BYTES: '0',
    OUTPOST_AGENT_LOG_LEVEL: 'info',
  });
  const pid = agent.child.pid!;
  try {
    await waitOutput(agent.output, '"msg":"subscribed"', 60_000);
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const execArgs = cmdline
      .filter((a) => a.startsWith('--'))
      .filter((a) => !['--site', '--broker', '--certs'].includes(a))
      .join(' ');
    const script = cmdline.slice(1).find((a) => /\.(c|m)?js$/.test(a));
    const entry = script ? realpathSync(script) : '';

    // Idle: connected, nothing to do.
    await sleep(c.idleSettleMs);
    const idle: number[] = [];
    for (let t = 0; t < c.idleSampleMs; t += 500) {
      idle.push(rssKb(pid));
      await sleep(500);
    }
    const idleKb = idle.sort((a, b) => a - b)[idle.length >> 1]!;
    const idleAnonKb = procKb(`/proc/${pid}/status`, 'RssAnon');
    const idleFileKb = procKb(`/proc/${pid}/status`, 'RssFile');
    const idlePssKb = procKb(`/proc/${pid}/smaps_rollup`, 'Pss');
    c.log(
      `    ${c.mode}: ${comm} ${execArgs} ${entry.slice(REPO.length + 1)} idle ${Math.round(idleKb / 1024)} MB (anon ${Math.round(idleAnonKb / 1024)}, file ${Math.round(idleFileKb / 1024)})`,
    );
    await c.onIdle?.(pid);

    // Apply N stacks.
    let peak = rssKb(pid);
    const sample = () => {
      peak = Math.max(peak, rssKb(pid));
    };
    const t0 = Date.now();
    const seqs: number[] = [];
    for (let i = 0; i < c.stacks; i++) seqs.push(await ctl.apply(`s${i}`, 1, spec(1)));
    await ctl.waitApplied(seqs, 300_000, sample);
    const applyMs = Date.now() - t0;
    for (let i = 0; i < 10; i++) {
      sample();
      await sleep(100);
    }
    c.log(`    ${c.mode}: ${c.stacks} stacks applied in ${applyMs} ms, peak ${Math.round(peak / 1024)} MB`);

    // Soak: heartbeats, and now and then a re-apply of a few stacks.
    const soak: Sample[] = [];
    const s0 = Date.now();
    let rev = 1;
    let nextReapply = s0 + c.reapplyEveryMs;
    let nextBeat = s0;
    while (Date.now() - s0 < c.soakMs) {
      const now = Date.now();
      if (now >= nextBeat) {
        await ctl.heartbeat();
        nextBeat = now + 2000;
      }
      if (now >= nextReapply) {
        rev++;
        const re: number[] = [];
        for (let i = 0; i < c.reapply; i++)
          re.push(await ctl.apply(`s${(rev + i) % c.stacks}`, rev, spec(rev)));
        await ctl.waitApplied(re, 120_000, () => undefined);
        nextReapply = Date.now() + c.reapplyEveryMs;
      }
      soak.push({ t: (Date.now() - s0) / 60_000, rssKb: rssKb(pid) });
      await sleep(1000);
    }
    // The warm-up settles what the 10 applies left behind (GC shrinking the heap, the first re-applies
    // compiling their code paths): a falling or rising start would hide or fake growth, so the fit and
    // the halves cover the rest.
    const warmupMin = (c.soakWarmupMs ?? c.soakMs / 4) / 60_000;
    const fitted = soak.filter((s) => s.t >= warmupMin);
    const soakSlope = slope(
      fitted.map((s) => s.t),
      fitted.map((s) => s.rssKb),
    );
    const half = fitted.length >> 1;
    const med = (xs: Sample[]) => xs.map((s) => s.rssKb).sort((a, b) => a - b)[xs.length >> 1] ?? 0;
    c.log(
      `    ${c.mode}: soak ${soak.length} samples (${fitted.length} after the warm-up), slope ${soakSlope.toFixed(0)} KB/min`,
    );
    return {
      mode: c.mode,
      comm,
      execArgs,
      entry,
      idleKb,
      idleAnonKb,
      idleFileKb,
      idlePssKb,
      applyPeakKb: peak,
      applyMs,
      soakSlopeKbPerMin: soakSlope,
      soakStartKb: med(fitted.slice(0, half)),
      soakEndKb: med(fitted.slice(half)),
      soak,
    };
  } finally {
    agent.child.kill('SIGTERM');
    await new Promise<void>((r) => {
      if (agent.child.exitCode !== null || agent.child.signalCode !== null) r();
      else agent.child.once('exit', () => r());
      setTimeout(() => {
        agent.child.kill('SIGKILL');
        r();
      }, 15_000).unref();
    });
    await ctl.close().catch(() => undefined);
    await broker.close().catch(() => undefined);
    const left = await docker.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } });
    await Promise.all(
      left.map((x) =>
        docker
          .getContainer(x.Id)
          .remove({ force: true })
          .catch(() => undefined),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  }
}
