/**
 * The broker's message emitter must not recurse through a backlog. mqemitter (aedes' default) holds
 * messages beyond `concurrency` in flight in a queue and starts the next one from inside the finished
 * one's callback; a backlog of messages that finish at once then recurses once per message. Closing
 * 10,000 site connections at a broker shutdown (a will and a $SYS notice each) overflowed the stack
 * with `RangeError: Maximum call stack size exceeded`. The broker runs the emitter with no queue.
 */
import { describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/index.js';
import { startBroker } from './support/harness.js';

const PLAIN = { plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true } };

interface Emitter {
  on(topic: string, fn: (message: unknown, done: () => void) => void): void;
  emit(message: { topic: string; payload: Buffer }, cb?: (err?: Error) => void): void;
  readonly length: number;
}

describe('message emitter under a backlog', () => {
  it('20,000 messages behind 150 slow deliveries all complete when those finish, without a stack overflow', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const mq = (rb.broker.aedes as unknown as { mq: Emitter }).mq;
      // 150 deliveries that take their time (a slow subscriber), then a burst with no subscriber.
      const held: Array<() => void> = [];
      mq.on('test/slow', (_m, done) => held.push(done));
      for (let i = 0; i < 150; i++) mq.emit({ topic: 'test/slow', payload: Buffer.alloc(0) });
      let completed = 0;
      const errors: Error[] = [];
      for (let i = 0; i < 20_000; i++) {
        mq.emit({ topic: 'test/nobody', payload: Buffer.alloc(0) }, (err) => {
          if (err) errors.push(err);
          completed++;
        });
      }
      // Finishing the slow deliveries must not recurse through whatever waits behind them.
      expect(() => {
        for (const done of held.splice(0)) done();
      }).not.toThrow();
      expect(completed).toBe(20_000);
      // And nothing waited: every message started when it was published.
      expect(mq.length).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await rb.close();
    }
  });
});
