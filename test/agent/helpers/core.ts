/**
 * The agent core without MQTT: store, journal, sequencer, executor and outbox wired as createAgent
 * wires them, over a real SQLite file and a MemoryRuntime, for state-machine (property) tests that
 * drive `intake()` directly with any delivery order.
 */
import { join } from 'node:path';
import pino from 'pino';
import { Alarms } from '../../../agent/src/core/alarms.js';
import { openAgentDb } from '../../../agent/src/core/db.js';
import { Executor } from '../../../agent/src/core/executor.js';
import { Journal } from '../../../agent/src/core/journal.js';
import { Outbox } from '../../../agent/src/core/outbox.js';
import { Sequencer } from '../../../agent/src/core/sequencer.js';
import { AgentStore } from '../../../agent/src/core/store.js';
import { PinnedTrust } from '../../../agent/src/core/trust.js';
import { Uplink } from '../../../agent/src/core/uplink.js';
import { MemoryRuntime } from '../../../agent/src/runtime/memory.js';
import { certsLayout } from '../../../certs/src/layout.js';
import { systemClock, Topics, TrustedTime } from '../../../protocol/src/index.js';
import type { TestPki } from './pki.js';

export interface Core {
  readonly store: AgentStore;
  readonly journal: Journal;
  readonly sequencer: Sequencer;
  readonly runtime: MemoryRuntime;
  /** Intake + sequencing, as the transport does it. Returns whether it would PUBACK. */
  deliver(bytes: Uint8Array): boolean;
  close(): Promise<void>;
}

export function makeCore(
  dir: string,
  pki: TestPki,
  opts: { settleMs?: number; gapHoldMs?: number; journalKeep?: number } = {},
): Core {
  const log = pino({ level: 'silent' });
  const { db } = openAgentDb(join(dir, 'agent.db'), log);
  const store = new AgentStore(db);
  const alarms = new Alarms(store, systemClock, log);
  const trust = PinnedTrust.load(store, certsLayout(pki.certsDir).trustRoot, log);
  const time = new TrustedTime(systemClock, 0);
  const outbox = new Outbox(store, alarms, { maxBytes: 1 << 20 }, systemClock, log);
  const uplink = new Uplink(pki.site, pki.uplink, store, outbox, new Topics(), () => time.nowSec());
  const runtime = new MemoryRuntime();
  let sequencer: Sequencer | undefined;
  const executor = new Executor(
    store,
    runtime,
    uplink,
    alarms,
    { deadlineMs: 1000, runningForMs: 0 },
    { desiredChanged: () => undefined, finished: () => sequencer?.finished() },
    () => Date.now(),
    log,
  );
  sequencer = new Sequencer(
    store,
    executor,
    alarms,
    {
      gapHoldMs: opts.gapHoldMs ?? 60_000,
      settleMs: opts.settleMs ?? 0,
      journalKeep: opts.journalKeep ?? 1000,
    },
    () => performance.now(),
    log,
  );
  const seq = sequencer;
  const journal = new Journal(
    { site: pki.site, maxEnvelopeBytes: 256 * 1024, allowTags: false },
    store,
    outbox,
    uplink,
    trust,
    time,
    alarms,
    {
      onHeartbeat: (last) => seq.heartbeat(last),
      onStateRequest: () => undefined,
      onTrustChanged: () => undefined,
    },
    () => Date.now(),
    log,
  );
  seq.start();
  return {
    store,
    journal,
    sequencer: seq,
    runtime,
    deliver(bytes) {
      const r = journal.intake(bytes);
      if (r.kind === 'journalled') seq.journalled();
      return r.kind !== 'hold';
    },
    async close() {
      await seq.close();
      outbox.close();
      await runtime.close();
      db.close();
    },
  };
}
