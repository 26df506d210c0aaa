/**
 * Building StackState from observed containers (pure, given the health readings).
 *
 * - `rev`: when the stack's known target (what apply last converged or `desired()` names) has every
 *   service running a container with its hash, that target's revision — a revision that left a
 *   service unchanged keeps the older container (and its older rev label) running; otherwise the
 *   highest rev label among the stack's containers; 0 when none.
 * - `want`: the known target's revision, else `rev`.
 * - services: one entry per service seen or wanted (`st: missing` for a wanted service without a
 *   container); when a service has several containers (transient during replacement), the one with
 *   the target's hash, else the best-running one, speaks for it.
 */
import type { Health, Service, ServiceState, StackState } from '../../../protocol/src/index.js';
import { serviceHash } from './hash.js';
import { type ContainerHealth, serviceHealth, stackHealth } from './health.js';
import type { ObservedContainer } from './plan.js';
import type { DesiredStack } from './types.js';

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const MAX_SERVICES = 64;

export interface SeenContainer {
  readonly c: ObservedContainer;
  /** Undefined when it vanished between list and inspect. */
  readonly h: ContainerHealth | undefined;
}

const RANK: Record<string, number> = { running: 0, restarting: 1, paused: 2, created: 3, exited: 4 };

export function buildStackState(
  stack: string,
  seen: readonly SeenContainer[],
  known: DesiredStack | undefined,
  nowMs: number,
  settleMs: number,
): StackState {
  const names = new Set<string>();
  for (const s of seen) if (NAME.test(s.c.service)) names.add(s.c.service);
  const wantHash = new Map<string, string>();
  if (known) {
    for (const [n, s] of Object.entries(known.spec.svc)) {
      names.add(n);
      wantHash.set(n, serviceHash(stack, n, s));
    }
  }
  const svc: ServiceState[] = [];
  let matches = known !== undefined;
  for (const n of [...names].sort().slice(0, MAX_SERVICES)) {
    const mine = seen.filter((s) => s.c.service === n && s.h !== undefined);
    const hash = wantHash.get(n);
    const pick =
      mine.find((s) => s.c.hash === hash) ??
      [...mine].sort((a, b) => (RANK[a.c.state] ?? 9) - (RANK[b.c.state] ?? 9))[0];
    if (!pick || pick.c.hash !== hash) matches = false;
    const spec: Service | undefined = known?.spec.svc[n];
    if (!pick?.h) {
      svc.push({ n, st: 'missing', h: 'stopped' });
      continue;
    }
    const h: Health = serviceHealth(pick.h, spec, nowMs, settleMs);
    svc.push({ n, st: pick.h.state, h, rs: Math.min(pick.h.restartCount, 0xffff_ffff) });
  }
  const labelled = seen.reduce((m, s) => Math.max(m, s.c.rev), 0);
  const rev = known && matches ? known.rev : Math.min(labelled, 0xffff_ffff);
  return { name: stack, rev, want: known?.rev ?? rev, h: stackHealth(svc.map((s) => s.h)), svc };
}
