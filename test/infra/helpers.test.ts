/** The shared test helpers themselves: waits, tmp dirs, ports, child processes, Mosquitto. */
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { ENV, REPO_ROOT } from '../helpers/env.js';
import { mosquitto, mosquittoConfig } from '../helpers/mosquitto.js';
import { freePorts, portOpen } from '../helpers/net.js';
import { killAll, runningChildren, spawnNode, spawnProcess } from '../helpers/process.js';
import { tmpDir } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const CHILD = 'test/infra/fixtures/child.ts';

/** The error a promise rejects with; fails if it resolves. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
  throw new Error('expected a rejection');
}

describe('waitFor', () => {
  it('resolves with the first truthy value', async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : null), { intervalMs: 1 });
    expect(v).toEqual({ n: 3 });
  });

  it('gives up at the deadline and quotes the last error', async () => {
    const err = await rejection(
      waitFor(
        () => {
          throw new Error('not yet');
        },
        { timeoutMs: 100, intervalMs: 10, message: 'the impossible' },
      ),
    );
    expect(err.message).toMatch(/the impossible not met within 100 ms/);
    expect(err.message).toMatch(/last error: not yet/);
  });

  it('withTimeout rejects a promise that does not settle', async () => {
    await expect(withTimeout(new Promise(() => {}), 50, 'never')).rejects.toThrow(
      /timeout after 50 ms: never/,
    );
    await expect(withTimeout(Promise.resolve(7), 50, 'fast')).resolves.toBe(7);
  });
});

describe('tmpDir', () => {
  let made = '';
  it('makes a fresh directory below the run scratch root', () => {
    made = tmpDir('probe');
    writeFileSync(join(made, 'f'), 'x');
    expect(existsSync(made)).toBe(true);
    expect(made.startsWith(process.env[ENV.tmpRoot] ?? '<no root>')).toBe(true);
    expect(made.length).toBeLessThan(60); // room for unix socket names inside
  });

  it('removes it when the test that made it finishes', () => {
    expect(made).not.toBe('');
    expect(existsSync(made)).toBe(false);
  });
});

describe('ports', () => {
  it('freePorts gives distinct loopback ports that can be bound', async () => {
    const ports = await freePorts(5);
    expect(new Set(ports).size).toBe(5);
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(ports[0], '127.0.0.1', resolve));
    expect(await portOpen(ports[0]!)).toBe(true);
    await new Promise((resolve) => srv.close(resolve));
    expect(await portOpen(ports[0]!)).toBe(false);
  });
});

describe('spawnNode', () => {
  it('runs a TypeScript entry with args and env, captures output, and signals it', async () => {
    const child = spawnNode(CHILD, ['one', 'two'], { CHILD_VALUE: 'v1' });
    await child.waitForOutput('ready');
    expect(child.stdout()).toContain('args=["one","two"]');
    expect(child.stdout()).toContain('env=v1');
    expect(child.stderr()).toContain('stderr line 42');
    expect(runningChildren()).toContain(child);
    const pidFile = join(process.env[ENV.tmpRoot]!, '.pids', String(child.pid));
    expect(existsSync(pidFile)).toBe(true);

    const exit = await child.kill('SIGTERM');
    expect(exit).toEqual({ code: 3, signal: null });
    expect(child.output()).toContain('bye');
    expect(runningChildren()).not.toContain(child);
    await waitFor(() => !existsSync(pidFile), { message: 'pid record removed' });
  });

  it('SIGKILL ends it with the signal (the crash model)', async () => {
    const child = spawnNode(CHILD);
    await child.waitForOutput(/^ready$/);
    expect(await child.kill('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    expect(child.output()).not.toContain('bye');
  });

  it('waitForOutput fails at once when the process exits first', async () => {
    const child = spawnNode(CHILD, ['--exit', '7']);
    const err = await rejection(child.waitForOutput('never printed'));
    expect(err.message).toMatch(/exited \(code 7\) before printing/);
    expect(err.message).toContain('exiting 7');
    expect((await child.exited).code).toBe(7);
  });

  it('waitForOutput is bounded', async () => {
    const child = spawnNode(CHILD);
    await expect(child.waitForOutput('never printed', { timeoutMs: 200 })).rejects.toThrow(
      /did not print never printed within 200 ms/,
    );
    await killAll();
    expect(child.exitInfo?.signal).toBe('SIGKILL');
  });

  it('a missing binary settles exited instead of hanging', async () => {
    const child = spawnProcess('/nonexistent/outpost-binary', []);
    expect(await withTimeout(child.exited, 5_000, 'exited')).toEqual({ code: null, signal: null });
  });

  let leftover: ReturnType<typeof spawnNode> | undefined;
  it('a child left running when its test ends is killed', async () => {
    leftover = spawnNode(CHILD);
    await leftover.waitForOutput('ready');
  });
  it('(previous test’s child is gone)', async () => {
    const info = await withTimeout(leftover!.exited, 10_000, 'leftover exit');
    expect(info.signal).toBe('SIGKILL');
  });
});

describe('mosquitto', () => {
  it('builds its config: user root when root, a loopback listener unless given', () => {
    expect(mosquittoConfig('allow_anonymous true', 1234, true)).toBe(
      'user root\nlistener 1234 127.0.0.1\nallow_anonymous true\n',
    );
    expect(mosquittoConfig('user nobody\nlistener 99\n', 1234, true)).toBe('user nobody\nlistener 99\n');
    expect(mosquittoConfig('allow_anonymous true', 5, false)).toBe(
      'listener 5 127.0.0.1\nallow_anonymous true\n',
    );
  });

  it('runs a loopback broker that MQTT.js and mosquitto_pub talk to (QoS 1)', async () => {
    const broker = await mosquitto();
    const client = await connectAsync(broker.url, { clientId: 'outpost-infra-test', clean: true });
    try {
      await client.subscribeAsync('outpost/infra/#', { qos: 1 });
      const got = new Promise<string>((resolve) =>
        client.on('message', (_t, payload) => resolve(payload.toString())),
      );
      const pub = spawnProcess('mosquitto_pub', [
        ...['-h', '127.0.0.1', '-p', String(broker.port), '-q', '1', '-t', 'outpost/infra/x', '-m', 'hi'],
      ]);
      expect((await pub.exited).code).toBe(0);
      expect(await withTimeout(got, 10_000, 'message via mosquitto')).toBe('hi');
    } finally {
      await client.endAsync();
    }
    await broker.stop();
    expect(await portOpen(broker.port)).toBe(false);
  });

  it('reports a config Mosquitto rejects instead of hanging', async () => {
    const err = await rejection(mosquitto({ conf: 'no_such_option 1' }));
    expect(err.message).toMatch(/exited/);
  });

  it('scripts/mosquitto.sh smoke passes (install check, start, pub/sub, stop)', async () => {
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        'bash',
        [join(REPO_ROOT, 'scripts/mosquitto.sh'), 'smoke'],
        { timeout: 60_000 },
        (err, _o, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stderr)),
      ),
    );
    expect(out).toMatch(/smoke ok/);
  });
});
