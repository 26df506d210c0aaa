/**
 * The agent against the real `outpost broker` (createBroker): TLS 1.3 with the site's client
 * certificate from `outpost certs`, the broker's per-identity ACL (agent: own cmd in; ack, state and
 * retained status out; last will on its own status topic), the controller's certificate on the other
 * side, and the trust root, signing key and uplink key `outpost certs` wrote ([MQTT-2], DESIGN §5).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, expect, test } from 'vitest';
import { createAgent } from '../../agent/src/agent.js';
import { parseConfig } from '../../agent/src/config.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { createBroker } from '../../broker/src/broker.js';
import { certsLayout, initCerts, issueSiteCert } from '../../certs/src/index.js';
import { createSigner, privateKeyFromPem, publicKeyFromPem } from '../../protocol/src/index.js';
import { tmpDir, waitFor } from '../helpers/index.js';
import { spec, TestController } from './helpers/controller.js';
import { FAST } from './helpers/harness.js';

let broker: ReturnType<typeof createBroker>;
let ctl: TestController;
let agentClose: (() => Promise<void>) | undefined;

afterEach(async () => {
  await agentClose?.();
  await ctl?.close();
  await broker?.close();
});

test('over TLS with certificates and ACL: deploy through createBroker, signed acks, retained status', async () => {
  const dir = tmpDir('pki');
  const init = await initCerts(dir);
  await issueSiteCert(dir, 'site-a');
  const l = certsLayout(dir);
  broker = createBroker({
    log: pino({ level: 'silent' }),
    config: {
      certsDir: dir,
      tls: { host: '127.0.0.1', port: 0, enabled: true, watchCrlMs: 0 },
      metrics: { host: '127.0.0.1', port: 0 },
    },
  });
  const ports = await broker.start();
  const url = `mqtts://localhost:${ports.tlsPort}`;

  const signer = createSigner(
    init.controllerKid,
    privateKeyFromPem(readFileSync(l.signingKey(init.controllerKid), 'utf8')).seed,
  );
  const uplinkPub = publicKeyFromPem(readFileSync(l.siteUplinkPub('site-a'), 'utf8'));
  ctl = new TestController(
    { site: 'site-a', signer, keyFor: (s) => (s === 'site-a' ? uplinkPub : undefined) },
    url,
    undefined,
    {
      ca: readFileSync(l.caCert),
      cert: readFileSync(l.controllerCert),
      key: readFileSync(l.controllerKey),
      rejectUnauthorized: true,
      clientId: 'controller',
    },
  );
  await ctl.connect();

  const config = parseConfig({
    site: 'site-a',
    broker: url,
    certsDir: dir,
    dataDir: join(dir, '..', 'data'),
    ...FAST,
  });
  const runtime = new MemoryRuntime({ reconcileIntervalMs: 200 });
  const agent = createAgent({
    config,
    runtime,
    log: pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' }),
  });
  await agent.start();
  agentClose = () => agent.close();
  await waitFor(() => agent.status().connected, { timeoutMs: 15_000, message: 'agent connected over TLS' });

  await ctl.apply('hist', 1, spec(['web'], 1));
  await ctl.waitStatus(1, 'applied');
  expect(ctl.bad).toEqual([]);
  expect((await runtime.snapshot())[0]).toMatchObject({ name: 'hist', rev: 1 });
  await waitFor(() => ctl.latestStatus()?.stacks?.['hist']?.running === 1, { message: 'status over TLS' });
  await waitFor(() => ctl.states.some((s) => s.full), { message: 'state over TLS' });
  // the ACL refused nothing the agent did
  expect(await broker.metrics.value('outpost_broker_rejects_total', { reason: 'acl-publish' })).toBe(0);
  expect(await broker.metrics.value('outpost_broker_rejects_total', { reason: 'acl-subscribe' })).toBe(0);
}, 60_000);
