/**
 * A controller built in-process over a temp data dir, with test keys and a known admin token. The API
 * is driven with fastify `inject()`; `start()` (only when a broker URL is given) connects MQTT and
 * runs the publisher. Closed automatically when the test finishes.
 */
import { pino } from 'pino';
import { buildController, type Controller } from '../../../controller/src/app.js';
import { type ConfigInput, loadConfig } from '../../../controller/src/config.js';
import type { Signer } from '../../../protocol/src/index.js';
import { onCurrentTestFinished, tmpDir } from '../../helpers/index.js';
import { ADMIN_TOKEN, approverSigner, controllerSigner, siteSigner } from './keys.js';

export interface Fixture {
  readonly controller: Controller;
  readonly dataDir: string;
  readonly signer: Signer;
  /** Enrols a site (uplink key from its SimSite signer) into groups; returns nothing, throws on failure. */
  enrol(id: string, groups?: string[], labels?: Record<string, string>): Promise<void>;
  /** Pushes a Compose file as a new revision of `stack`; returns the revision number. */
  push(stack: string, compose: string): Promise<number>;
  /** Calls the API; JSON bodies are serialised, strings are sent as they are. */
  call(
    method: string,
    url: string,
    body?: unknown,
    opts?: { token?: string | null; contentType?: string },
  ): Promise<Res>;
  close(): Promise<void>;
}

export interface Res {
  readonly status: number;
  readonly contentType: string;
  // biome-ignore lint/suspicious/noExplicitAny: test convenience over JSON bodies
  readonly json: any;
  readonly text: string;
}

export interface FixtureOptions {
  readonly brokerUrl?: string;
  readonly config?: ConfigInput;
  readonly approver?: boolean;
  readonly dataDir?: string;
  /** Milliseconds clock. */
  readonly now?: () => number;
}

export async function makeController(o: FixtureOptions = {}): Promise<Fixture> {
  const dataDir = o.dataDir ?? tmpDir('ctl');
  const base: ConfigInput = {
    dataDir,
    certsDir: dataDir,
    adminToken: ADMIN_TOKEN,
    logLevel: 'silent',
    mqtt: { url: o.brokerUrl ?? 'mqtt://127.0.0.1:9' },
    api: { port: 0 },
    outbox: { tickMs: 50, retryMs: 400, maxRetryMs: 2000, heartbeatSec: 0 },
  };
  const config = loadConfig({
    overrides: {
      ...base,
      ...o.config,
      outbox: { ...base.outbox, ...o.config?.outbox },
      api: { ...base.api, ...o.config?.api },
      mqtt: { ...base.mqtt, ...o.config?.mqtt },
    } as ConfigInput,
  });
  const signer = controllerSigner();
  const controller = await buildController({
    config,
    log: pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' }),
    signing: o.approver ? { signer, approver: approverSigner() } : { signer },
    ...(o.now ? { now: o.now } : {}),
  });
  if (o.brokerUrl) await controller.start({ listen: false });
  let closed = false;
  const fixture: Fixture = {
    controller,
    dataDir,
    signer,
    async call(method, url, body, opts = {}) {
      const token = opts.token === undefined ? ADMIN_TOKEN : opts.token;
      const headers: Record<string, string> = {};
      if (token !== null) headers['authorization'] = `Bearer ${token}`;
      let payload: string | undefined;
      if (body !== undefined) {
        payload = typeof body === 'string' ? body : JSON.stringify(body);
        headers['content-type'] = opts.contentType ?? 'application/json';
      }
      const r = await controller.app.inject({
        method: method as 'GET',
        url,
        headers,
        ...(payload !== undefined ? { payload } : {}),
      });
      const contentType = String(r.headers['content-type'] ?? '');
      let json: unknown;
      if (contentType.includes('json') && !contentType.includes('jsonl')) json = r.json();
      return { status: r.statusCode, contentType, json, text: r.body };
    },
    async enrol(id, groups = [], labels = {}) {
      for (const g of groups) {
        if (!controller.store.sites.groupExists(g)) await fixture.call('POST', '/v1/groups', { name: g });
      }
      const key = Buffer.from(siteSigner(id).publicKey).toString('base64');
      const r = await fixture.call('POST', '/v1/sites', { id, uplinkKey: key, groups, labels });
      if (r.status !== 201) throw new Error(`enrol ${id}: ${r.text}`);
    },
    async push(stack, compose) {
      const r = await fixture.call('POST', `/v1/stacks/${stack}/revisions`, { compose });
      if (r.status !== 201 && r.status !== 200) throw new Error(`push ${stack}: ${r.text}`);
      return r.json.revision.rev as number;
    },
    async close() {
      if (closed) return;
      closed = true;
      await controller.close();
    },
  };
  onCurrentTestFinished(() => fixture.close());
  return fixture;
}
