/**
 * Mosquitto's command-line clients (Debian's mosquitto-clients) as the SCADA client: `mosquitto_sub`
 * and `mosquitto_pub` over TLS 1.3 against our broker, identified by a certificate or by a username
 * and password. Output is `-F '%r %q %t %x'` (retained flag, QoS, topic, payload in hex), so JSON
 * and Sparkplug protobuf payloads arrive intact. Every process is bounded and cleaned up.
 */
import { type Spawned, spawnProcess, type WaitOptions, waitFor } from '../../helpers/index.js';

export interface ScadaIdentity {
  readonly ca: string;
  readonly clientId: string;
  readonly cert?: string;
  readonly key?: string;
  readonly username?: string;
  readonly password?: string;
}

export interface SubMessage {
  readonly retained: boolean;
  readonly qos: number;
  readonly topic: string;
  readonly bytes: Buffer;
  readonly text: string;
}

export interface Sub {
  readonly proc: Spawned;
  /** Every message so far, in arrival order. */
  messages(): SubMessage[];
  /** Messages on one topic. */
  on(topic: string): SubMessage[];
  /** JSON payloads of one topic. */
  json<T = Record<string, unknown>>(topic: string): T[];
  /** Waits for a message on `topic` whose JSON satisfies `pred`; resolves with it. */
  waitJson<T = Record<string, unknown>>(
    topic: string,
    pred: (j: T) => boolean,
    opts?: WaitOptions,
  ): Promise<T>;
  stop(): Promise<void>;
}

export function connectArgs(port: number, id: ScadaIdentity): string[] {
  const args = [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-V',
    'mqttv311',
    '--cafile',
    id.ca,
    '--tls-version',
    'tlsv1.3',
  ];
  args.push('-i', id.clientId, '-k', '30');
  if (id.cert && id.key) args.push('--cert', id.cert, '--key', id.key);
  if (id.username !== undefined) args.push('-u', id.username);
  if (id.password !== undefined) args.push('-P', id.password);
  return args;
}

function parse(out: string): SubMessage[] {
  const msgs: SubMessage[] = [];
  for (const line of out.split('\n')) {
    const m = /^([01]) ([012]) (\S+) ?([0-9a-f]*)$/.exec(line);
    if (!m) continue;
    const bytes = Buffer.from(m[4]!, 'hex');
    msgs.push({
      retained: m[1] === '1',
      qos: Number(m[2]),
      topic: m[3]!,
      bytes,
      text: bytes.toString('utf8'),
    });
  }
  return msgs;
}

/** `mosquitto_sub` on `topics` (QoS 1). `extra` adds flags (e.g. `-W 5`, `--will-topic`). */
export function mosquittoSub(
  port: number,
  id: ScadaIdentity,
  topics: readonly string[],
  extra: readonly string[] = [],
): Sub {
  const args = [...connectArgs(port, id), '-q', '1', '-F', '%r %q %t %x', ...extra];
  for (const t of topics) args.push('-t', t);
  const proc = spawnProcess('mosquitto_sub', args, { name: `mosquitto_sub:${id.clientId}` });
  let cache = { len: -1, msgs: [] as SubMessage[] };
  const messages = () => {
    const out = proc.stdout();
    if (out.length !== cache.len) cache = { len: out.length, msgs: parse(out) };
    return cache.msgs;
  };
  const on = (topic: string) => messages().filter((m) => m.topic === topic);
  const json = <T>(topic: string): T[] =>
    on(topic)
      .filter((m) => m.bytes.length > 0)
      .map((m) => JSON.parse(m.text) as T);
  return {
    proc,
    messages,
    on,
    json,
    waitJson: <T>(topic: string, pred: (j: T) => boolean, opts: WaitOptions = {}) =>
      waitFor(
        () => {
          if (proc.exitInfo) throw new Error(`mosquitto_sub exited: ${proc.output()}`);
          return json<T>(topic).find(pred);
        },
        { timeoutMs: 20_000, ...opts },
      ) as Promise<T>,
    async stop() {
      await proc.kill('SIGTERM', { timeoutMs: 5000 });
    },
  };
}

export interface ClientRun {
  readonly code: number | null;
  readonly output: string;
}

/** Runs `mosquitto_pub` (QoS 1) to completion (bounded: SIGKILL after `timeoutMs`). */
export async function mosquittoPub(
  port: number,
  id: ScadaIdentity,
  topic: string,
  message: string,
  extra: readonly string[] = [],
  timeoutMs = 10_000,
): Promise<ClientRun> {
  const proc = spawnProcess(
    'mosquitto_pub',
    [...connectArgs(port, id), '-q', '1', '-t', topic, '-m', message, ...extra],
    {
      name: `mosquitto_pub:${id.clientId}`,
    },
  );
  const timer = setTimeout(() => void proc.kill('SIGKILL'), timeoutMs);
  const exit = await proc.exited;
  clearTimeout(timer);
  return { code: exit.code, output: proc.output() };
}

/** Runs `mosquitto_sub` until it exits by itself or `-W secs` ends it. */
export async function mosquittoSubRun(
  port: number,
  id: ScadaIdentity,
  topics: readonly string[],
  extra: readonly string[] = [],
  waitSec = 3,
): Promise<ClientRun & { messages: SubMessage[] }> {
  const sub = mosquittoSub(port, id, topics, ['-W', String(waitSec), ...extra]);
  const timer = setTimeout(() => void sub.proc.kill('SIGKILL'), (waitSec + 10) * 1000);
  const exit = await sub.proc.exited;
  clearTimeout(timer);
  return { code: exit.code, output: sub.proc.output(), messages: sub.messages() };
}
