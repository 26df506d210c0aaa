/**
 * A Sparkplug observer on a broker: an mqtt.js client subscribed to `spBv1.0/#` that feeds every
 * message, in arrival order, to the independent decoder's `SparkplugHost`. Closed when the test ends.
 */
import { connectAsync, type MqttClient } from 'mqtt';
import { onCurrentTestFinished } from '../../helpers/index.js';
import { type Observed, SparkplugHost } from './decoder.js';

export interface Observer {
  readonly host: SparkplugHost;
  readonly client: MqttClient;
  /** Every Sparkplug message seen (decoded), in order. */
  readonly seen: Observed[];
  /** Raw STATE and other non-Sparkplug-payload messages. */
  readonly other: { topic: string; payload: Buffer }[];
  /** Messages of one type (and node) seen so far. */
  of(type: string, node?: string): Observed[];
  close(): Promise<void>;
}

let n = 0;

export async function observe(url: string, filter = 'spBv1.0/#'): Promise<Observer> {
  const client = await connectAsync(url, {
    clientId: `observer-${process.pid}-${n++}`,
    clean: true,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
  const host = new SparkplugHost();
  const other: { topic: string; payload: Buffer }[] = [];
  client.on('message', (topic, payload) => {
    if (!host.handle(topic, new Uint8Array(payload))) other.push({ topic, payload });
  });
  await client.subscribeAsync(filter, { qos: 1 });
  const o: Observer = {
    host,
    client,
    seen: host.log,
    other,
    of: (type, node) => host.log.filter((m) => m.type === type && (node === undefined || m.node === node)),
    close: async () => {
      await client.endAsync(true).catch(() => undefined);
    },
  };
  onCurrentTestFinished(() => o.close());
  return o;
}
