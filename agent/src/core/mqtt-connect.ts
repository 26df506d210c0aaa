/**
 * A lean `mqtt.connect` for the agent (memory budget, docs/adr/0005-agent-memory.md): MQTT.js's client
 * class with a TCP or TLS stream builder of our own, so the agent process never loads MQTT.js's
 * protocol table (`ws`, `socks`/`ip-address`, browser transports) — only `mqtt://` and `mqtts://` are
 * agent URLs (config schema). The TLS builder does what MQTT.js's does: SNI for host names, the peer
 * must be authorized, TLS errors reach the client as 'error' and end the socket.
 */
import { createRequire } from 'node:module';
import { isIP, connect as netConnect } from 'node:net';
import { type SecureVersion, connect as tlsConnect } from 'node:tls';
import type { IClientOptions, MqttClient } from 'mqtt';

type StreamBuilder = (client: MqttClient) => import('node:stream').Duplex;
type MqttClientClass = new (builder: StreamBuilder, options: IClientOptions) => MqttClient;

let clientClass: MqttClientClass | undefined;
function MqttClientCtor(): MqttClientClass {
  // mqtt/lib/client is CommonJS with `exports.default`; loaded on first use only.
  clientClass ??= (createRequire(import.meta.url)('mqtt/lib/client') as { default: MqttClientClass }).default;
  return clientClass;
}

/** `mqtt.connect(url, opts)` for mqtt:// and mqtts:// only. */
export function leanMqttConnect(url: string, opts: IClientOptions): MqttClient {
  const u = new URL(url);
  const secure = u.protocol === 'mqtts:';
  if (!secure && u.protocol !== 'mqtt:') throw new Error(`unsupported MQTT URL scheme ${u.protocol}`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  const port = u.port ? Number(u.port) : secure ? 8883 : 1883;
  const options: IClientOptions = { ...opts, host, port, protocol: secure ? 'mqtts' : 'mqtt' };
  const build: StreamBuilder = (client) => {
    if (!secure) return netConnect({ host, port });
    const rejectUnauthorized = opts.rejectUnauthorized !== false;
    const { minVersion } = opts as { minVersion?: SecureVersion };
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...(opts.ca ? { ca: opts.ca as Buffer } : {}),
      ...(opts.cert ? { cert: opts.cert as Buffer } : {}),
      ...(opts.key ? { key: opts.key as Buffer } : {}),
      ...(minVersion ? { minVersion } : {}),
      rejectUnauthorized,
    });
    const onError = (err: Error) => {
      if (rejectUnauthorized) client.emit('error', err);
      socket.end();
    };
    socket.on('secureConnect', () => {
      if (rejectUnauthorized && !socket.authorized) socket.emit('error', new Error('TLS not authorized'));
      else socket.removeListener('error', onError);
    });
    socket.on('error', onError);
    return socket;
  };
  const client = new (MqttClientCtor())(build, options);
  // As mqtt.connect does: an 'error' without listeners must not crash the process.
  client.on('error', () => undefined);
  return client;
}
