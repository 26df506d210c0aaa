/**
 * What the Sparkplug edge nodes must remember across restarts, in one small JSON file:
 *
 * - the last bdSeq used by each edge node, so the next MQTT session (and its NDEATH will) uses the
 *   next one (0..255, wrapping) — a host application tells sessions apart by it;
 * - metric aliases by edge node and metric name, so a metric keeps its alias across rebirths and
 *   restarts (aliases are unique across an edge node's whole metric set, Sparkplug 3.0 §6.4.6).
 *
 *   { "v": 1, "nodes": { "<group>/<node>": { "bdSeq": 7, "next": 42,
 *                                              "aliases": { "/bdSeq": 1, "site-a/online": 3 } } } }
 *
 * Writes go to a temporary file, are fsynced, then renamed over the old one, so a crash leaves
 * either the old or the new file. An unreadable file is set aside (`.bad-<ms>`) and started afresh:
 * host applications then see new aliases in the next births, which they must accept anyway.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

interface NodeRecord {
  bdSeq: number | null;
  next: number;
  aliases: Record<string, number>;
}

interface FileShape {
  v: 1;
  nodes: Record<string, NodeRecord>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parse(text: string): FileShape {
  const data: unknown = JSON.parse(text);
  if (!isRecord(data) || data['v'] !== 1 || !isRecord(data['nodes'])) throw new Error('not a v1 state file');
  const nodes: Record<string, NodeRecord> = {};
  for (const [key, raw] of Object.entries(data['nodes'])) {
    if (!isRecord(raw) || !isRecord(raw['aliases'])) throw new Error(`node ${key}: bad record`);
    const bd = raw['bdSeq'];
    const next = raw['next'];
    if (bd !== null && !(Number.isInteger(bd) && (bd as number) >= 0 && (bd as number) <= 255)) {
      throw new Error(`node ${key}: bad bdSeq`);
    }
    if (!Number.isInteger(next) || (next as number) < 1) throw new Error(`node ${key}: bad next alias`);
    const aliases: Record<string, number> = {};
    for (const [name, a] of Object.entries(raw['aliases'])) {
      if (!Number.isInteger(a) || (a as number) < 1 || (a as number) >= (next as number)) {
        throw new Error(`node ${key}: bad alias for ${name}`);
      }
      aliases[name] = a as number;
    }
    nodes[key] = { bdSeq: bd as number | null, next: next as number, aliases };
  }
  return { v: 1, nodes };
}

export class SparkplugStateFile {
  private data: FileShape = { v: 1, nodes: {} };
  private dirty = false;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {
    if (!existsSync(path)) return;
    try {
      this.data = parse(readFileSync(path, 'utf8'));
    } catch (err) {
      const aside = `${path}.bad-${Date.now()}`;
      this.log.error(
        { file: path, aside, err: (err as Error).message },
        'Sparkplug state file unreadable; starting afresh',
      );
      try {
        renameSync(path, aside);
      } catch {
        // left in place; overwritten at the next save
      }
    }
  }

  private node(key: string): NodeRecord {
    let n = this.data.nodes[key];
    if (!n) {
      n = { bdSeq: null, next: 1, aliases: {} };
      this.data.nodes[key] = n;
    }
    return n;
  }

  /** The bdSeq of the edge node's next MQTT session (persisted before it is used). */
  nextBdSeq(key: string): number {
    const n = this.node(key);
    const bd = n.bdSeq === null ? 0 : (n.bdSeq + 1) % 256;
    n.bdSeq = bd;
    this.dirty = true;
    this.save();
    return bd;
  }

  /** The alias of `name` on edge node `key`; a new one is allocated (call `save()` before using it). */
  alias(key: string, name: string): number {
    const n = this.node(key);
    let a = n.aliases[name];
    if (a === undefined) {
      a = n.next++;
      n.aliases[name] = a;
      this.dirty = true;
    }
    return a;
  }

  /** Writes pending changes durably (no-op when nothing changed). */
  save(): void {
    if (!this.dirty) return;
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(this.data)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    this.dirty = false;
  }
}
