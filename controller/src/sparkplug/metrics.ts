/**
 * The Sparkplug metrics of an edge node and of a device (= one site). Names use `/` folders, which
 * Ignition's MQTT Engine shows as tag folders. The alarm flags cover every alarm code of the protocol,
 * so a device's metric set changes only when its stacks do.
 *
 * Device (site) metrics:
 *
 * | name | type | meaning |
 * | --- | --- | --- |
 * | `online` | Boolean | the site's agent is connected (its last will clears it) |
 * | `agent_version` | String | agent version from the status |
 * | `last_contact` | DateTime | last time the controller heard from the site |
 * | `last_contact_age_s` | Int64 | seconds since then, refreshed every `ageIntervalMs` |
 * | `status_time` | DateTime | when the agent wrote its latest status |
 * | `control_age_s` | Int64 | seconds since the agent last heard the controller (as of `status_time`) |
 * | `last_seq` | Int64 | highest command seq applied at the site |
 * | `alarms/count` | UInt32 | active alarms |
 * | `alarms/<code>` | Boolean | one per alarm code (`stale-control-plane`, `disk-full`, `rolled-back`, ...) |
 * | `stacks/<name>/desired_rev` | UInt32 | revision the site converges to |
 * | `stacks/<name>/running_rev` | UInt32 | revision running (0: none) |
 * | `stacks/<name>/health` | String | healthy, unhealthy, starting, stopped, unknown |
 *
 * Edge node metrics: `bdSeq` (Int64), `Node Control/Rebirth` (Boolean, false), `Outpost/sites`,
 * `Outpost/sites_online` (UInt32) and `Outpost/primary_host_online` (Boolean).
 */
import { ALARM_CODES } from '../../../protocol/src/index.js';
import type { MetricValue, SparkplugType } from './payload.js';
import type { SiteView } from './source.js';

export interface MetricDef {
  readonly name: string;
  readonly type: SparkplugType;
  readonly value: MetricValue;
}

export const REBIRTH_METRIC = 'Node Control/Rebirth';
export const BDSEQ_METRIC = 'bdSeq';

export const AGE_METRICS: ReadonlySet<string> = new Set(['last_contact_age_s']);

export function deviceMetrics(s: SiteView, nowMs: number): MetricDef[] {
  const active = new Set(s.alarms.map((a) => a.code));
  const out: MetricDef[] = [
    { name: 'online', type: 'Boolean', value: s.online },
    { name: 'agent_version', type: 'String', value: s.agentVersion },
    { name: 'last_contact', type: 'DateTime', value: s.lastContactMs },
    {
      name: 'last_contact_age_s',
      type: 'Int64',
      value: s.lastContactMs === null ? null : Math.max(0, Math.floor((nowMs - s.lastContactMs) / 1000)),
    },
    { name: 'status_time', type: 'DateTime', value: s.statusMs },
    { name: 'control_age_s', type: 'Int64', value: s.controlAgeSec },
    { name: 'last_seq', type: 'Int64', value: s.lastSeq },
    { name: 'alarms/count', type: 'UInt32', value: s.alarms.length },
  ];
  for (const code of ALARM_CODES)
    out.push({ name: `alarms/${code}`, type: 'Boolean', value: active.has(code) });
  for (const st of s.stacks) {
    out.push(
      { name: `stacks/${st.name}/desired_rev`, type: 'UInt32', value: st.desired },
      { name: `stacks/${st.name}/running_rev`, type: 'UInt32', value: st.running },
      { name: `stacks/${st.name}/health`, type: 'String', value: st.health },
    );
  }
  return out;
}

export interface NodeFacts {
  readonly sites: number;
  readonly sitesOnline: number;
  readonly primaryHostOnline: boolean;
}

/** Node metrics besides bdSeq and the rebirth control (which every NBIRTH carries). */
export function nodeMetrics(f: NodeFacts): MetricDef[] {
  return [
    { name: 'Outpost/sites', type: 'UInt32', value: f.sites },
    { name: 'Outpost/sites_online', type: 'UInt32', value: f.sitesOnline },
    { name: 'Outpost/primary_host_online', type: 'Boolean', value: f.primaryHostOnline },
  ];
}
