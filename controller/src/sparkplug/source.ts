/**
 * What the Sparkplug component reads: a small, self-contained view of each site, so it depends on
 * nothing of the controller but this interface. `storeSource(store)` adapts the controller's store
 * (sites with their retained status and merged signed state); tests pass their own `SparkplugSource`.
 */
import type { SiteStatus } from '../../../protocol/src/index.js';
import type { SiteState } from '../store/sites.js';

export interface StackView {
  readonly name: string;
  /** Revision the site is converging to. */
  readonly desired: number;
  /** Revision running now (0: none). */
  readonly running: number;
  /** healthy | unhealthy | starting | stopped | unknown */
  readonly health: string;
}

export interface AlarmView {
  readonly code: string;
  readonly stack?: string;
}

export interface SiteView {
  readonly id: string;
  /** Site groups (edge nodes in `nodes: group` mode). */
  readonly groups: readonly string[];
  /** From the site's retained status (the agent's last will sets it false); never heard of = false. */
  readonly online: boolean;
  /** Last time the controller heard from the site, ms since the epoch. */
  readonly lastContactMs: number | null;
  /** When the agent wrote its latest status (`ts`), ms since the epoch. */
  readonly statusMs: number | null;
  readonly agentVersion: string | null;
  /** Seconds since the agent last heard from the controller, as of `statusMs`. */
  readonly controlAgeSec: number | null;
  /** Highest command seq applied at the site. */
  readonly lastSeq: number | null;
  readonly stacks: readonly StackView[];
  readonly alarms: readonly AlarmView[];
}

export interface SparkplugSource {
  /** Every enrolled site. Called once per poll; must not throw for one bad site. */
  sites(): readonly SiteView[];
}

/** The subset of the controller's Site record the adapter reads. */
export interface StoredSite {
  readonly id: string;
  readonly groups: readonly string[];
  readonly online: boolean | null;
  readonly lastContact: number | null;
  readonly status: SiteStatus | null;
  readonly state: SiteState | null;
}

function parseTime(iso: string | undefined): number | null {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

/**
 * One site's view. Stacks and alarms come from the retained status while it carries them; the
 * offline status of a last will carries neither, so then the last signed state fills in (the last
 * known values stay visible, with the device dead).
 */
export function siteView(s: StoredSite): SiteView {
  const st = s.status;
  const stacks: StackView[] = st?.stacks
    ? Object.entries(st.stacks).map(([name, v]) => ({
        name,
        desired: v.desired,
        running: v.running,
        health: v.health,
      }))
    : (s.state?.stacks ?? []).map((x) => ({ name: x.name, desired: x.want, running: x.rev, health: x.h }));
  stacks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const alarms: AlarmView[] = st?.alarms
    ? st.alarms.map((a) => ({ code: a.code, ...(a.stack ? { stack: a.stack } : {}) }))
    : (s.state?.alarms ?? []).map((a) => ({ code: a.code, ...(a.stack ? { stack: a.stack } : {}) }));
  return {
    id: s.id,
    groups: s.groups,
    online: s.online === true,
    lastContactMs: s.lastContact,
    statusMs: parseTime(st?.ts),
    agentVersion: st?.agent ?? s.state?.agent ?? null,
    controlAgeSec: st?.controlAge ?? null,
    lastSeq: st?.lastSeq ?? s.state?.last ?? null,
    stacks,
    alarms,
  };
}

/** A source over the controller's store (anything with `sites.list()`). */
export function storeSource(store: { readonly sites: { list(): readonly StoredSite[] } }): SparkplugSource {
  return { sites: () => store.sites.list().map(siteView) };
}
