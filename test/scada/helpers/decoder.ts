/**
 * The INDEPENDENT Sparkplug B decoder of the SCADA tests: protobufjs 7 loading the schema written
 * from the Sparkplug 3.0 specification (test/fixtures/sparkplug/sparkplug_b.proto). Nothing here
 * uses the `sparkplug-payload` package that produced the bytes.
 *
 * `SparkplugHost` is a minimal host application over it: it follows births, data and deaths of every
 * edge node in arrival order, resolves aliases, keeps the current value of every metric, and records
 * each Sparkplug rule it sees broken (seq continuity, seq 0 on NBIRTH, names and aliases in births,
 * alias-only data, NDEATH = bdSeq only and equal to the session's NBIRTH bdSeq, ...).
 */
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { REPO_ROOT } from '../../helpers/index.js';

export const PROTO_FILE = join(REPO_ROOT, 'test/fixtures/sparkplug/sparkplug_b.proto');

const root = protobuf.loadSync(PROTO_FILE);
const PayloadType = root.lookupType('org.eclipse.tahu.protobuf.Payload');
const DataTypeEnum = root.lookupEnum('org.eclipse.tahu.protobuf.DataType');

export type Value = number | bigint | boolean | string | Uint8Array | null;

export interface DecodedMetric {
  readonly name?: string;
  readonly alias?: number;
  readonly timestamp?: number;
  /** DataType enum name (`Int64`, `Boolean`, ...). */
  readonly datatype?: string;
  readonly isNull: boolean;
  /** The protobuf oneof field that carried the value (`longValue`, ...), if any. */
  readonly field?: string;
  readonly value: Value;
}

export interface Decoded {
  readonly timestamp?: number;
  readonly seq?: number;
  readonly metrics: readonly DecodedMetric[];
}

interface RawMetric {
  name?: string;
  alias?: string;
  timestamp?: string;
  datatype?: number;
  isNull?: boolean;
  value?: string;
  intValue?: number;
  longValue?: string;
  floatValue?: number;
  doubleValue?: number;
  booleanValue?: boolean;
  stringValue?: string;
  bytesValue?: Uint8Array;
}

const num = (s: string | undefined): number | undefined => (s === undefined ? undefined : Number(s));

function metricValue(m: RawMetric, datatype: string | undefined): Value {
  if (m.isNull) return null;
  switch (m.value) {
    case 'intValue': {
      const v = m.intValue ?? 0;
      if (datatype === 'Int8') return (v << 24) >> 24;
      if (datatype === 'Int16') return (v << 16) >> 16;
      if (datatype === 'Int32') return v | 0;
      return v >>> 0;
    }
    case 'longValue': {
      const u = BigInt(m.longValue ?? '0');
      const v = datatype === 'Int64' ? BigInt.asIntN(64, u) : u;
      return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 'floatValue':
      return m.floatValue ?? 0;
    case 'doubleValue':
      return m.doubleValue ?? 0;
    case 'booleanValue':
      return m.booleanValue ?? false;
    case 'stringValue':
      return m.stringValue ?? '';
    case 'bytesValue':
      return m.bytesValue ?? new Uint8Array();
    default:
      return null;
  }
}

export function decodeSparkplug(bytes: Uint8Array): Decoded {
  const msg = PayloadType.decode(bytes);
  const o = PayloadType.toObject(msg, { longs: String, oneofs: true, bytes: Uint8Array }) as {
    timestamp?: string;
    seq?: string;
    metrics?: RawMetric[];
  };
  return {
    ...(o.timestamp !== undefined ? { timestamp: Number(o.timestamp) } : {}),
    ...(o.seq !== undefined ? { seq: Number(o.seq) } : {}),
    metrics: (o.metrics ?? []).map((m) => {
      const datatype = m.datatype === undefined ? undefined : DataTypeEnum.valuesById[m.datatype];
      return {
        ...(m.name !== undefined ? { name: m.name } : {}),
        ...(m.alias !== undefined ? { alias: num(m.alias)! } : {}),
        ...(m.timestamp !== undefined ? { timestamp: num(m.timestamp)! } : {}),
        ...(datatype !== undefined ? { datatype } : {}),
        isNull: m.isNull === true,
        ...(m.value !== undefined ? { field: m.value } : {}),
        value: metricValue(m, datatype),
      };
    }),
  };
}

/** Encodes a host's NCMD with the independent schema (e.g. `Node Control/Rebirth` = true). */
export function encodeNcmd(
  metrics: { name?: string; alias?: number; boolean: boolean }[],
  timestamp: number,
): Uint8Array {
  const msg = PayloadType.fromObject({
    timestamp,
    metrics: metrics.map((m) => ({
      ...(m.name !== undefined ? { name: m.name } : {}),
      ...(m.alias !== undefined ? { alias: m.alias } : {}),
      timestamp,
      datatype: DataTypeEnum.values['Boolean'],
      booleanValue: m.boolean,
    })),
  });
  return PayloadType.encode(msg).finish();
}

// ---- a minimal host application ----------------------------------------------------------------

export interface Observed {
  readonly topic: string;
  readonly type: string;
  readonly group: string;
  readonly node: string;
  readonly device?: string;
  readonly payload: Decoded;
}

export interface HostMetric {
  readonly name: string;
  readonly alias: number;
  readonly datatype: string;
  value: Value;
}

export interface HostDevice {
  alive: boolean;
  births: number;
  readonly metrics: Map<string, HostMetric>;
}

export interface HostNode {
  alive: boolean;
  bdSeq: number | undefined;
  lastSeq: number | undefined;
  births: number;
  readonly deaths: number[];
  readonly aliases: Map<number, { device: string | undefined; name: string }>;
  readonly metrics: Map<string, HostMetric>;
  readonly devices: Map<string, HostDevice>;
}

export function parseSparkplugTopic(topic: string): Omit<Observed, 'payload' | 'topic'> | undefined {
  const p = topic.split('/');
  if (p[0] !== 'spBv1.0' || p.length < 4 || p[1] === 'STATE') return undefined;
  const [, group, type, node, device] = p as [string, string, string, string, string | undefined];
  return { group, type, node, ...(device !== undefined ? { device } : {}) };
}

export class SparkplugHost {
  readonly nodes = new Map<string, HostNode>();
  readonly violations: string[] = [];
  readonly log: Observed[] = [];

  node(node: string, group = 'outpost'): HostNode | undefined {
    return this.nodes.get(`${group}/${node}`);
  }

  /** Current value of a device metric by name. */
  value(node: string, device: string, name: string, group = 'outpost'): Value | undefined {
    return this.node(node, group)?.devices.get(device)?.metrics.get(name)?.value;
  }

  private bad(o: Observed, what: string): void {
    this.violations.push(`${o.type} ${o.node}${o.device ? `/${o.device}` : ''}: ${what}`);
  }

  handle(topic: string, bytes: Uint8Array): Observed | undefined {
    const t = parseSparkplugTopic(topic);
    if (!t) return undefined;
    if (t.type === 'NCMD' || t.type === 'DCMD') return { topic, ...t, payload: { metrics: [] } }; // host -> edge
    let payload: Decoded;
    try {
      payload = decodeSparkplug(bytes);
    } catch (err) {
      this.violations.push(`${topic}: undecodable (${(err as Error).message})`);
      return undefined;
    }
    const o: Observed = { topic, ...t, payload };
    this.log.push(o);
    const key = `${o.group}/${o.node}`;
    let n = this.nodes.get(key);
    if (!n) {
      n = {
        alive: false,
        bdSeq: undefined,
        lastSeq: undefined,
        births: 0,
        deaths: [],
        aliases: new Map(),
        metrics: new Map(),
        devices: new Map(),
      };
      this.nodes.set(key, n);
    }
    const p = o.payload;
    if (p.timestamp === undefined) this.bad(o, 'no payload timestamp');
    if (o.type === 'NDEATH') {
      if (p.seq !== undefined) this.bad(o, 'NDEATH carries a seq');
      if (p.metrics.length !== 1 || p.metrics[0]?.name !== 'bdSeq')
        this.bad(o, 'NDEATH is not exactly bdSeq');
      const bd = p.metrics[0]?.value;
      if (p.metrics[0]?.datatype !== 'Int64') this.bad(o, 'bdSeq is not Int64');
      if (typeof bd === 'number') {
        n.deaths.push(bd);
        if (n.alive && bd === n.bdSeq) {
          n.alive = false;
          for (const d of n.devices.values()) d.alive = false;
        }
      }
      return o;
    }
    if (p.seq === undefined) {
      this.bad(o, 'no seq');
      return o;
    }
    if (o.type === 'NBIRTH') {
      if (p.seq !== 0) this.bad(o, `NBIRTH seq ${p.seq}`);
      n.alive = true;
      n.births++;
      n.aliases.clear();
      n.metrics.clear();
      n.devices.clear();
      const bd = p.metrics.find((m) => m.name === 'bdSeq');
      if (bd?.datatype !== 'Int64' || typeof bd.value !== 'number') this.bad(o, 'no Int64 bdSeq');
      n.bdSeq = typeof bd?.value === 'number' ? bd.value : undefined;
      const rb = p.metrics.find((m) => m.name === 'Node Control/Rebirth');
      if (rb?.datatype !== 'Boolean' || rb.value !== false) this.bad(o, 'no Node Control/Rebirth = false');
      this.define(o, n, undefined, n.metrics);
      n.lastSeq = 0;
      return o;
    }
    if (!n.alive) this.bad(o, 'message from a node without NBIRTH');
    if (n.lastSeq !== undefined && p.seq !== (n.lastSeq + 1) % 256) {
      this.bad(o, `seq ${p.seq} after ${n.lastSeq}`);
    }
    n.lastSeq = p.seq;
    switch (o.type) {
      case 'DBIRTH': {
        const dev: HostDevice = {
          alive: true,
          births: (n.devices.get(o.device!)?.births ?? 0) + 1,
          metrics: new Map(),
        };
        for (const [a, v] of n.aliases) if (v.device === o.device) n.aliases.delete(a);
        n.devices.set(o.device!, dev);
        this.define(o, n, o.device, dev.metrics);
        return o;
      }
      case 'DDEATH': {
        const dev = n.devices.get(o.device!);
        if (!dev) this.bad(o, 'DDEATH of an unknown device');
        else dev.alive = false;
        return o;
      }
      case 'DDATA':
      case 'NDATA': {
        const dev = o.type === 'DDATA' ? n.devices.get(o.device!) : undefined;
        if (o.type === 'DDATA' && !dev?.alive) this.bad(o, 'DDATA of a device without DBIRTH');
        for (const m of p.metrics) {
          if (m.name !== undefined) this.bad(o, `data metric carries a name (${m.name})`);
          if (m.timestamp === undefined) this.bad(o, 'data metric without timestamp');
          const a = m.alias === undefined ? undefined : n.aliases.get(m.alias);
          if (!a || a.device !== o.device) {
            this.bad(o, `unknown alias ${m.alias}`);
            continue;
          }
          const target = o.type === 'DDATA' ? dev?.metrics.get(a.name) : n.metrics.get(a.name);
          if (target) target.value = m.value;
        }
        return o;
      }
      default:
        this.bad(o, `unexpected message type ${o.type}`);
        return o;
    }
  }

  private define(o: Observed, n: HostNode, device: string | undefined, into: Map<string, HostMetric>): void {
    for (const m of o.payload.metrics) {
      if (m.name === undefined || m.alias === undefined) {
        this.bad(o, 'birth metric without name and alias');
        continue;
      }
      if (m.datatype === undefined) this.bad(o, `birth metric ${m.name} without datatype`);
      if (m.timestamp === undefined) this.bad(o, `birth metric ${m.name} without timestamp`);
      const other = n.aliases.get(m.alias);
      if (other && (other.device !== device || other.name !== m.name)) {
        this.bad(o, `alias ${m.alias} of ${m.name} already used by ${other.device ?? ''}/${other.name}`);
      }
      n.aliases.set(m.alias, { device, name: m.name });
      into.set(m.name, { name: m.name, alias: m.alias, datatype: m.datatype ?? 'Unknown', value: m.value });
    }
  }
}
