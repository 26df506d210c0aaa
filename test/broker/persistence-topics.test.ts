/**
 * MQTT 3.1.1 §4.7 topic matching used by the persistence (retained lookups and the offline
 * subscription trie), checked against the spec's examples and against each other.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { matchTopic } from '../../broker/src/persistence/index.js';
import { literalPrefix, SubscriptionTrie } from '../../broker/src/persistence/topic-match.js';

describe('matchTopic', () => {
  it.each([
    ['sport/tennis/player1/#', 'sport/tennis/player1', true], // [MQTT-4.7.1-2]: '#' includes the parent
    ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
    ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
    ['sport/#', 'sport', true],
    ['#', 'sport/tennis', true],
    ['sport/tennis/+', 'sport/tennis/player1', true],
    ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
    ['sport/+', 'sport', false],
    ['sport/+', 'sport/', true], // empty levels are levels
    ['+/+', '/finance', true],
    ['/+', '/finance', true],
    ['+', '/finance', false],
    ['#', '$SYS/uptime', false], // [MQTT-4.7.2-1]
    ['+/uptime', '$SYS/uptime', false],
    ['$SYS/#', '$SYS/uptime', true],
    ['$SYS/+', '$SYS/uptime', true],
    ['a/b', 'a/b', true],
    ['a/b', 'a/bc', false],
    ['a/+/c', 'a/b/c', true],
    ['a/+/c', 'a/b/d', false],
  ])('%s matches %s: %s', (filter, topic, expected) => {
    expect(matchTopic(filter, topic)).toBe(expected);
  });
});

describe('literalPrefix', () => {
  it('gives the literal levels before the first wildcard', () => {
    expect(literalPrefix('a/b')).toEqual({ wildcard: false, prefix: 'a/b' });
    expect(literalPrefix('a/b/+/c')).toEqual({ wildcard: true, prefix: 'a/b' });
    expect(literalPrefix('a/#')).toEqual({ wildcard: true, prefix: 'a' });
    expect(literalPrefix('#')).toEqual({ wildcard: true, prefix: undefined });
    expect(literalPrefix('/+')).toEqual({ wildcard: true, prefix: '' });
  });
});

describe('SubscriptionTrie', () => {
  it('keeps one value per (filter, client), counts them and prunes on delete', () => {
    const trie = new SubscriptionTrie<string>();
    trie.set('a/+', 'c1', 'v1');
    trie.set('a/+', 'c1', 'v1b');
    trie.set('a/+', 'c2', 'v2');
    trie.set('a/#', 'c1', 'v3');
    expect(trie.size).toBe(3);
    expect(trie.match('a/x')).toEqual(['v3', 'v1b', 'v2']);
    expect(trie.delete('a/+', 'c1')).toBe(true);
    expect(trie.delete('a/+', 'c1')).toBe(false);
    expect(trie.delete('nope/x', 'c1')).toBe(false);
    expect(trie.delete('a/+', 'c2')).toBe(true);
    expect(trie.delete('a/#', 'c1')).toBe(true);
    expect(trie.size).toBe(0);
    expect(trie.match('a/x')).toEqual([]);
  });

  it('agrees with matchTopic on random filters and topics', () => {
    const level = fc.constantFrom('a', 'b', '', '$x');
    const topic = fc.array(level, { minLength: 1, maxLength: 4 }).map((l) => l.join('/'));
    const filter = fc
      .tuple(fc.array(fc.constantFrom('a', 'b', '', '+', '$x'), { minLength: 1, maxLength: 4 }), fc.boolean())
      .map(([l, hash]) => (hash ? [...l, '#'] : l).join('/'));
    fc.assert(
      fc.property(fc.uniqueArray(filter, { maxLength: 8 }), topic, (filters, t) => {
        const trie = new SubscriptionTrie<string>();
        for (const f of filters) trie.set(f, 'c', f);
        const viaTrie = trie.match(t).sort();
        const direct = filters.filter((f) => matchTopic(f, t)).sort();
        expect(viaTrie).toEqual(direct);
      }),
      { numRuns: 500 },
    );
  });
});
