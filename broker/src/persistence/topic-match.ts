/**
 * MQTT topic filter matching: a single-filter matcher used to filter retained messages, and a
 * small trie of subscriptions keyed by (filter, clientId) used by `subscriptionsByTopic` on every
 * QoS > 0 publish. Rules (MQTT 3.1.1 §4.7): `/` separates levels, empty levels are levels, `+`
 * matches exactly one level, `#` (last) matches the parent and any number of levels below, and a
 * filter starting with a wildcard never matches a topic starting with `$` [MQTT-4.7.2-1].
 *
 * Written here rather than importing qlobber, which is only a transitive dependency of aedes.
 */

/** Does the filter match the topic name? */
export function matchTopic(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * The literal levels before the first wildcard, for a range scan of an ordered topic index:
 * `wildcard` is false for a filter without wildcards (an exact lookup), and `prefix` is undefined
 * when the very first level is a wildcard (a full scan).
 */
export function literalPrefix(filter: string): { wildcard: boolean; prefix: string | undefined } {
  const levels = filter.split('/');
  const first = levels.findIndex((l) => l === '+' || l === '#');
  if (first === -1) return { wildcard: false, prefix: filter };
  if (first === 0) return { wildcard: true, prefix: undefined };
  return { wildcard: true, prefix: levels.slice(0, first).join('/') };
}

interface TrieNode<V> {
  children: Map<string, TrieNode<V>>;
  /** clientId → value, for the filter ending at this node. */
  values: Map<string, V> | undefined;
}

function node<V>(): TrieNode<V> {
  return { children: new Map(), values: undefined };
}

/**
 * Subscriptions by filter, at most one value per (filter, clientId). `match` lists values in the
 * order `#` children, exact filter, literal level, `+` level at each depth (the order aedes'
 * in-memory persistence yields, which the abstract suite pins).
 */
export class SubscriptionTrie<V> {
  readonly #root: TrieNode<V> = node();
  #count = 0;

  /** Number of (filter, clientId) entries. */
  get size(): number {
    return this.#count;
  }

  /** Adds or replaces the value for (filter, clientId). */
  set(filter: string, clientId: string, value: V): void {
    let n = this.#root;
    for (const level of filter.split('/')) {
      let child = n.children.get(level);
      if (child === undefined) {
        child = node();
        n.children.set(level, child);
      }
      n = child;
    }
    if (n.values === undefined) n.values = new Map();
    if (!n.values.has(clientId)) this.#count++;
    n.values.set(clientId, value);
  }

  /** Removes (filter, clientId); prunes emptied branches. Returns whether it was present. */
  delete(filter: string, clientId: string): boolean {
    const path: Array<[TrieNode<V>, string]> = [];
    let n = this.#root;
    for (const level of filter.split('/')) {
      const child = n.children.get(level);
      if (child === undefined) return false;
      path.push([n, level]);
      n = child;
    }
    if (n.values?.delete(clientId) !== true) return false;
    this.#count--;
    if (n.values.size === 0) n.values = undefined;
    for (let i = path.length - 1; i >= 0; i--) {
      const step = path[i];
      if (step === undefined) break;
      const [parent, level] = step;
      const child = parent.children.get(level);
      if (child === undefined || child.values !== undefined || child.children.size > 0) break;
      parent.children.delete(level);
    }
    return true;
  }

  /** Values of every filter matching the topic name. */
  match(topic: string): V[] {
    const out: V[] = [];
    // A method rather than a closure: this runs twice per QoS 1 publish (ADR 0008).
    this.#walk(this.#root, 0, topic.split('/'), topic.startsWith('$'), out);
    return out;
  }

  #walk(n: TrieNode<V>, depth: number, levels: readonly string[], dollar: boolean, out: V[]): void {
    const wildcardsAllowed = !(dollar && depth === 0);
    const hash = wildcardsAllowed ? n.children.get('#') : undefined;
    if (hash?.values !== undefined) for (const v of hash.values.values()) out.push(v);
    if (depth === levels.length) {
      if (n.values !== undefined) for (const v of n.values.values()) out.push(v);
      return;
    }
    const level = levels[depth] as string;
    const exact = level === '+' || level === '#' ? undefined : n.children.get(level);
    if (exact !== undefined) this.#walk(exact, depth + 1, levels, dollar, out);
    const plus = wildcardsAllowed ? n.children.get('+') : undefined;
    if (plus !== undefined) this.#walk(plus, depth + 1, levels, dollar, out);
  }
}
