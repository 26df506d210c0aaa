/**
 * The TCP fault proxy (test/helpers/fault-proxy.ts) used by the link-fault suites (DESIGN §8).
 * Loopback only. Timing assertions are lower bounds only (a fault may never make things faster);
 * nothing asserts that something happens quickly.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createFaultProxy } from '../helpers/fault-proxy.js';
import { freePort } from '../helpers/net.js';
import { sleep, waitFor } from '../helpers/wait.js';

const KiB = 1024;
const servers: Server[] = [];
const sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

interface Peer {
  socket: Socket;
  received(): Buffer;
  /** Resolves when the peer's read side ended (FIN) or the socket closed. */
  ended: Promise<void>;
  closed: Promise<{ error: string | undefined }>;
}

/** Wraps a socket: collects what it receives, tracks end/close. */
function peer(socket: Socket): Peer {
  const chunks: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (b: Buffer) => chunks.push(b));
  socket.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code ?? e.message;
  });
  const closed = new Promise<{ error: string | undefined }>((resolve) =>
    socket.once('close', () => resolve({ error })),
  );
  const ended = new Promise<void>((resolve) => {
    socket.once('end', resolve);
    socket.once('close', () => resolve());
  });
  sockets.push(socket);
  return { socket, received: () => Buffer.concat(chunks), ended, closed };
}

/**
 * A loopback server; every accepted connection is handed to `onPeer`. Like most real peers, its
 * sockets close when the other side closes, unless `allowHalfOpen`.
 */
async function server(
  onPeer: (p: Peer) => void = () => {},
  allowHalfOpen = false,
): Promise<{ port: number; peers: Peer[] }> {
  const peers: Peer[] = [];
  const srv = createServer({ allowHalfOpen }, (s) => {
    const p = peer(s);
    peers.push(p);
    onPeer(p);
  });
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return { port: addr.port, peers };
}

const echoServer = () => server((p) => p.socket.pipe(p.socket));

async function connect(port: number): Promise<Peer> {
  const socket = createConnection({ port, host: '127.0.0.1' });
  const p = peer(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return p;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function receivedAll(p: Peer, n: number, timeoutMs = 20_000): Promise<Buffer> {
  await waitFor(() => p.received().length >= n, { timeoutMs, message: `${n} bytes received` });
  return p.received();
}

describe('fault proxy', () => {
  it('forwards both directions intact and counts TCP payload per direction', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const client = await connect(proxy.port);
    const data = randomBytes(300 * KiB);
    for (let off = 0; off < data.length; off += 7 * KiB)
      client.socket.write(data.subarray(off, off + 7 * KiB));
    const back = await receivedAll(client, data.length);
    expect(sha(back)).toBe(sha(data));
    expect(proxy.bytes).toEqual({ up: data.length, down: data.length });
    const stats = proxy.stats();
    expect(stats.up).toEqual({ received: data.length, forwarded: data.length });
    expect(stats.down).toEqual({ received: data.length, forwarded: data.length });
    expect(stats.open).toBe(1);
    expect(stats.accepted).toBe(1);
    proxy.resetStats();
    expect(proxy.bytes).toEqual({ up: 0, down: 0 });
    expect(proxy.stats().open).toBe(1);
  });

  it('passes a half-close (FIN) on after the data, in both directions', async () => {
    const srv = await server((p) => {
      p.socket.on('end', () => p.socket.end('bye'));
    }, true);
    const proxy = await createFaultProxy({ targetPort: srv.port });
    const client = await connect(proxy.port);
    client.socket.end('hello');
    await client.ended;
    expect(client.received().toString()).toBe('bye');
    expect(srv.peers[0]?.received().toString()).toBe('hello');
    await waitFor(() => proxy.stats().open === 0, { message: 'connection done after both FINs' });
  });

  it('cut() closes every current connection and keeps accepting new ones', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const a = await connect(proxy.port);
    const b = await connect(proxy.port);
    await waitFor(() => echo.peers.length === 2, { message: 'both connected to the target' });
    proxy.cut();
    await Promise.all([a.closed, b.closed, ...echo.peers.map((p) => p.closed)]);
    expect(proxy.stats().open).toBe(0);

    const c = await connect(proxy.port);
    c.socket.write('again');
    expect((await receivedAll(c, 5)).toString()).toBe('again');
  });

  it('cut({ reset: true }) resets the connections (RST)', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const client = await connect(proxy.port);
    client.socket.write('x');
    await receivedAll(client, 1);
    proxy.cut({ reset: true });
    expect((await client.closed).error).toBe('ECONNRESET');
  });

  it('blackhole holds data without closing, then delivers it intact and in order', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const client = await connect(proxy.port);
    client.socket.write('before');
    await receivedAll(client, 6);

    proxy.blackhole(true);
    const held = randomBytes(64 * KiB);
    client.socket.write(held);
    await sleep(300);
    expect(proxy.bytes.up).toBe(6);
    expect(echo.peers[0]?.received().length).toBe(6);
    expect(client.socket.destroyed).toBe(false);
    expect(proxy.stats().open).toBe(1);

    proxy.blackhole(false);
    const back = await receivedAll(client, 6 + held.length);
    expect(sha(back.subarray(6))).toBe(sha(held));
    expect(proxy.bytes.up).toBe(6 + held.length);
  });

  it('blackhole applies TCP backpressure to the sender instead of buffering without bound', async () => {
    const sink = await server();
    const proxy = await createFaultProxy({ targetPort: sink.port });
    const client = await connect(proxy.port);
    await waitFor(() => sink.peers.length === 1, { message: 'connected to the target' });
    proxy.blackhole(true);
    const data = randomBytes(8 * 1024 * KiB);
    client.socket.write(data);
    await sleep(500);
    // The proxy stopped reading at the first chunk: the rest waits in the kernel and the sender.
    expect(proxy.stats().up.received).toBeLessThanOrEqual(1024 * KiB + 256 * KiB);
    expect(proxy.bytes.up).toBe(0);

    proxy.blackhole(false);
    const got = await receivedAll(sink.peers[0]!, data.length, 30_000);
    expect(sha(got)).toBe(sha(data));
  });

  it('new connections during a blackhole are held, not connected onwards, until it lifts', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    proxy.blackhole(true);
    const client = await connect(proxy.port);
    client.socket.write('queued');
    await sleep(300);
    expect(echo.peers.length).toBe(0);
    proxy.blackhole(false);
    expect((await receivedAll(client, 6)).toString()).toBe('queued');
    expect(echo.peers.length).toBe(1);
  });

  it('delay adds one-way latency in each direction (round trip >= 2x, lower bound only)', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const client = await connect(proxy.port);
    proxy.delay(250);
    const t0 = performance.now();
    for (const part of ['a', 'b', 'c', 'd']) client.socket.write(part);
    expect((await receivedAll(client, 4)).toString()).toBe('abcd');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * 250 - 20);
    expect(() => proxy.delay(-1)).toThrow(RangeError);
  });

  it('throttle limits each direction to the rate (duration lower bound), data intact', async () => {
    const payloadUp = randomBytes(60_000);
    const payloadDown = randomBytes(40_000);
    const sink = await server();
    const source = await server((p) => p.socket.end(payloadDown));
    const up = await createFaultProxy({ targetPort: sink.port });
    const down = await createFaultProxy({ targetPort: source.port });
    const rate = 20_000; // bytes per second; burst is rate / 10 = 2,000 bytes
    up.throttle(rate);
    down.throttle(rate);

    const t0 = performance.now();
    const writer = await connect(up.port);
    writer.socket.write(payloadUp);
    const reader = await connect(down.port);
    await waitFor(() => sink.peers.length === 1, { message: 'sink connected' });
    const [gotUp, gotDown] = await Promise.all([
      receivedAll(sink.peers[0]!, payloadUp.length),
      receivedAll(reader, payloadDown.length),
    ]);
    const elapsed = performance.now() - t0;
    expect(sha(gotUp)).toBe(sha(payloadUp));
    expect(sha(gotDown)).toBe(sha(payloadDown));
    // (60,000 - 2,000 burst) / 20,000 B/s = 2.9 s at least; allow for timer rounding.
    expect(elapsed).toBeGreaterThanOrEqual(2_700);

    // Lifting the throttle lets the rest through (no upper-bound timing asserted).
    up.throttle(null);
    const more = randomBytes(200 * KiB);
    writer.socket.write(more);
    await receivedAll(sink.peers[0]!, payloadUp.length + more.length);
    expect(up.bytes.up).toBe(payloadUp.length + more.length);
  });

  it('a throttled direction stops reading its sender beyond the high-water mark', async () => {
    const sink = await server();
    const proxy = await createFaultProxy({ targetPort: sink.port });
    proxy.throttle(100 * KiB);
    const client = await connect(proxy.port);
    client.socket.write(randomBytes(6 * 1024 * KiB));
    await sleep(1_000);
    const s = proxy.stats();
    expect(s.up.received - s.up.forwarded).toBeLessThanOrEqual(1024 * KiB + 256 * KiB);
    expect(s.up.received).toBeLessThan(6 * 1024 * KiB);
  });

  it('resetRandom(1) resets a connection on its next chunk; resetRandom(0) forwards', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const victim = await connect(proxy.port);
    await waitFor(() => echo.peers.length === 1, { message: 'connected to the target' });
    proxy.resetRandom(1);
    victim.socket.write('doomed');
    expect((await victim.closed).error).toBe('ECONNRESET');
    await echo.peers[0]!.closed;
    expect(echo.peers[0]!.received().length).toBe(0);
    expect(proxy.stats().resets).toBe(1);

    proxy.resetRandom(0);
    const ok = await connect(proxy.port);
    ok.socket.write('fine');
    expect((await receivedAll(ok, 4)).toString()).toBe('fine');
    expect(() => proxy.resetRandom(2)).toThrow(RangeError);
  });

  it('resetRandom(p) follows the given random source', async () => {
    const echo = await echoServer();
    // One draw per chunk received, in either direction: 'a' up, 'a' echoed down, 'b' up, 'b' down.
    const draws = [0.9, 0.9, 0.9, 0.9, 0.1];
    const proxy = await createFaultProxy({ targetPort: echo.port, random: () => draws.shift() ?? 1 });
    proxy.resetRandom(0.5);
    const client = await connect(proxy.port);
    client.socket.write('a');
    await receivedAll(client, 1);
    client.socket.write('b');
    await receivedAll(client, 2);
    client.socket.write('c'); // third draw 0.1 < 0.5: reset
    expect((await client.closed).error).toBe('ECONNRESET');
    expect(client.received().toString()).toBe('ab');
  });

  it('truncate(n) forwards exactly n more bytes, then closes the connection', async () => {
    const sink = await server();
    const proxy = await createFaultProxy({ targetPort: sink.port });
    const client = await connect(proxy.port);
    client.socket.write('0123456789');
    await waitFor(() => sink.peers[0]?.received().length === 10, { message: 'first 10 bytes' });
    proxy.truncate(100);
    const data = randomBytes(1000);
    client.socket.write(data);
    await sink.peers[0]!.ended;
    await client.closed;
    const got = sink.peers[0]!.received();
    expect(got.length).toBe(110);
    expect(got.subarray(10).equals(data.subarray(0, 100))).toBe(true);
    expect(proxy.stats().truncations).toBe(1);
    expect(proxy.bytes.up).toBe(110);
  });

  it('refuse(true) resets new connections while existing ones keep working', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const existing = await connect(proxy.port);
    proxy.refuse(true);
    const refused = peer(createConnection({ port: proxy.port, host: '127.0.0.1' }));
    expect((await refused.closed).error).toBe('ECONNRESET');
    existing.socket.write('still');
    expect((await receivedAll(existing, 5)).toString()).toBe('still');
    expect(proxy.stats().refused).toBe(1);
    proxy.refuse(false);
    const back = await connect(proxy.port);
    back.socket.write('ok');
    expect((await receivedAll(back, 2)).toString()).toBe('ok');
  });

  it('a target that is down resets the client connection', async () => {
    const deadPort = await freePort();
    const proxy = await createFaultProxy({ targetPort: deadPort });
    const client = peer(createConnection({ port: proxy.port, host: '127.0.0.1' }));
    const { error } = await client.closed;
    expect(error).toBe('ECONNRESET');
    expect(proxy.stats().open).toBe(0);
  });

  it('close() closes connections and stops listening', async () => {
    const echo = await echoServer();
    const proxy = await createFaultProxy({ targetPort: echo.port });
    const client = await connect(proxy.port);
    await proxy.close();
    await client.closed;
    await proxy.close(); // idempotent
    const late = peer(createConnection({ port: proxy.port, host: '127.0.0.1' }));
    expect((await late.closed).error).toBe('ECONNREFUSED');
  });
});
