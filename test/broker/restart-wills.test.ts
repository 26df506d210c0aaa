/**
 * Wills left by a broker that died (kill -9) with connections open are published when it starts
 * again, before it accepts connections — not 4 x heartbeatIntervalMs later at aedes' first will sweep,
 * and also when the broker keeps its id across restarts (aedes' sweep would never publish them then).
 * The real `outpost broker` runs as a child process on a real SQLite file.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { connectAsync, type MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { type Spawned, spawnNode, tmpDir, waitFor } from '../helpers/index.js';

const ENTRY = 'test/broker/support/broker-cli-entry.ts';
const status = (site: string) => `outpost/v1/site/${site}/status`;

async function startBroker(
  data: string,
  env: Record<string, string>,
): Promise<{ proc: Spawned; port: number }> {
  const proc = spawnNode(
    ENTRY,
    ['--no-tls', '--plain-port', '0', '--metrics-port', '0', '--insecure-trust-client-id', '--data', data],
    env,
  );
  const line = await proc.waitForOutput('broker listening', { timeoutMs: 20_000 });
  return { proc, port: (JSON.parse(line) as { plainPort: number }).plainPort };
}

function client(
  port: number,
  id: string,
  extra: Parameters<typeof connectAsync>[1] = {},
): Promise<MqttClient> {
  return connectAsync(`mqtt://127.0.0.1:${port}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    clientId: id,
    ...extra,
  });
}

/** Client ids with a will in the broker's database, as another process reads it (WAL). */
function storedWills(data: string): string[] {
  const db = new Database(join(data, 'broker.db'), { readonly: true, fileMustExist: true });
  try {
    return (
      db.prepare('SELECT client_id FROM wills ORDER BY client_id').all() as { client_id: string }[]
    ).map((r) => r.client_id);
  } finally {
    db.close();
  }
}

/** The retained status of each site, as a fresh subscriber sees it. */
async function retainedStatuses(port: number, sites: number): Promise<Map<string, string>> {
  const got = new Map<string, string>();
  const ctl = await client(port, 'controller', { username: 'controller:controller', clean: true });
  ctl.on('message', (topic, payload) => got.set(topic, payload.toString()));
  await ctl.subscribeAsync(status('+'), { qos: 1 });
  await waitFor(() => got.size >= sites, { message: `${sites} retained statuses`, timeoutMs: 10_000 });
  await ctl.endAsync();
  return got;
}

describe.each([
  ['a random broker id per run', {}],
  ['a fixed broker id (OUTPOST_BROKER_ID)', { OUTPOST_BROKER_ID: 'edge-broker-1' }],
])('wills after a broker crash, %s', (_name, env) => {
  it('are published at start-up, once, and the sites that reconnect speak for themselves', async () => {
    const data = tmpDir('data');
    let b = await startBroker(data, env);
    const sites: MqttClient[] = [];
    for (const id of ['site-a', 'site-b', 'site-c']) {
      const c = await client(b.port, id, {
        clean: false,
        will: { topic: status(id), payload: Buffer.from(`offline (${id} will)`), qos: 1, retain: true },
      });
      await c.publishAsync(status(id), `online (${id})`, { qos: 1, retain: true });
      sites.push(c);
    }
    // site-c leaves cleanly: DISCONNECT discards its will (MQTT 3.1.1 §3.14).
    await sites[2]?.endAsync();
    // Kill only once the broker has committed that (endAsync does not wait for the broker).
    await waitFor(() => storedWills(data).join() === 'site-a,site-b', {
      message: "site-c's will deleted, site-a's and site-b's stored",
      timeoutMs: 10_000,
    });
    const down = sites
      .slice(0, 2)
      .map((c) => new Promise<void>((resolve) => c.once('close', () => resolve())));
    expect((await b.proc.kill('SIGKILL')).signal).toBe('SIGKILL');
    await Promise.all(down);
    for (const c of sites) c.end(true);

    b = await startBroker(data, env);
    const log = await b.proc.waitForOutput('wills of connections the previous run lost were published', {
      timeoutMs: 10_000,
    });
    expect(JSON.parse(log)).toMatchObject({ published: 2, refused: 0, failed: 0 });
    expect(await retainedStatuses(b.port, 3)).toEqual(
      new Map([
        [status('site-a'), 'offline (site-a will)'],
        [status('site-b'), 'offline (site-b will)'],
        [status('site-c'), 'online (site-c)'],
      ]),
    );
    // site-a comes back and says so; its new will is stored again and survives a clean restart.
    const a = await client(b.port, 'site-a', {
      clean: false,
      will: {
        topic: status('site-a'),
        payload: Buffer.from('offline (site-a will 2)'),
        qos: 1,
        retain: true,
      },
    });
    await a.publishAsync(status('site-a'), 'online (site-a, again)', { qos: 1, retain: true });
    await a.endAsync(); // clean: no will
    expect((await b.proc.kill('SIGTERM')).code).toBe(0);

    // Nothing is published twice: the third run finds no stored will.
    b = await startBroker(data, env);
    expect(await retainedStatuses(b.port, 3)).toEqual(
      new Map([
        [status('site-a'), 'online (site-a, again)'],
        [status('site-b'), 'offline (site-b will)'],
        [status('site-c'), 'online (site-c)'],
      ]),
    );
    expect(b.proc.output()).not.toContain('previous run lost');
    expect((await b.proc.kill('SIGTERM')).code).toBe(0);
  });
});
