/**
 * The controller with `sparkplug.enabled`: its configuration carries the `sparkplug` settings (off by
 * default, `OUTPOST_SPARKPLUG=true` turns them on) and buildController runs the Sparkplug edge nodes
 * — births for enrolled sites, NDEATH on close. Skipped until controller/src/config.ts embeds
 * `SparkplugConfigSchema` as `sparkplug` (the wiring lines are in controller/src/sparkplug/index.ts).
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { buildController } from '../../controller/src/app.js';
import { type ConfigInput, ConfigSchema, configDocs, loadConfig } from '../../controller/src/config.js';
import { controllerSigner } from '../controller/helpers/keys.js';
import { mosquitto, tmpDir, waitFor } from '../helpers/index.js';
import { observe } from './helpers/observer.js';

const wired = 'sparkplug' in ConfigSchema.properties;
const TOKEN = 'sparkplug-wiring-admin-token-0123';
type WithSparkplug = { sparkplug: { enabled: boolean; groupId: string; nodes: string } };

describe.skipIf(!wired)('controller wiring of Sparkplug B', () => {
  it('is off by default, on with OUTPOST_SPARKPLUG=true, and documented', () => {
    expect((loadConfig() as unknown as WithSparkplug).sparkplug.enabled).toBe(false);
    expect(
      (loadConfig({ env: { OUTPOST_SPARKPLUG: 'true' } }) as unknown as WithSparkplug).sparkplug,
    ).toMatchObject({
      enabled: true,
      groupId: 'outpost',
      nodes: 'group',
    });
    expect(configDocs()).toMatch(/`sparkplug\.enabled`/);
  });

  it('buildController publishes births for enrolled sites and its NDEATH on close', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    const dir = tmpDir('spwire');
    const config = loadConfig({
      overrides: {
        dataDir: dir,
        certsDir: dir,
        adminToken: TOKEN,
        logLevel: 'silent',
        api: { port: 0 },
        mqtt: { url: broker.url },
        sparkplug: { enabled: true, pollMs: 100 },
      } as unknown as ConfigInput,
    });
    const c = await buildController({
      config,
      log: pino({ level: 'silent' }),
      signing: { signer: controllerSigner() },
    });
    let closed = false;
    try {
      await c.start({ listen: false });
      const call = (url: string, body: unknown) =>
        c.app.inject({
          method: 'POST',
          url,
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          payload: JSON.stringify(body),
        });
      expect((await call('/v1/groups', { name: 'plant' })).statusCode).toBe(201);
      const r = await call('/v1/sites', {
        id: 's1',
        uplinkKey: Buffer.alloc(32, 1).toString('base64'),
        groups: ['plant'],
      });
      expect(r.statusCode, r.body).toBe(201);
      await waitFor(() => obs.host.node('plant')?.devices.get('s1'), {
        message: 'DBIRTH of the enrolled site',
      });
      expect(obs.host.value('plant', 's1', 'online')).toBe(false); // never connected: DBIRTH + DDEATH
      await c.close();
      closed = true;
      await waitFor(() => obs.of('NDEATH', 'plant').length === 1, { message: 'NDEATH on close' });
      expect(obs.host.violations).toEqual([]);
    } finally {
      if (!closed) await c.close();
    }
  });
});
