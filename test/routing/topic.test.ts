import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TopicTree, type Matched, type SharedGroup } from '../../src/routing/topic-tree.js';
import { isValidTopicFilter, isValidTopicName, parseSharedFilter, topicMatches } from '../../src/routing/topic.js';
import type { QoS } from '../../src/store/repository.js';
import { filterArb, levelArb, qosArb, topicArb } from './topic-arbitraries.js';

const clientArb = fc.constantFrom('c1', 'c2', 'c3', 'c4');

type Operation = { kind: 'add'; clientId: string; filter: string; qos: QoS } | { kind: 'remove'; clientId: string; filter: string };

const operationArb: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('add' as const), clientId: clientArb, filter: filterArb, qos: qosArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), clientId: clientArb, filter: filterArb }) },
);

/** The reference model: every live (client, filter) with its latest QoS, matched filter by filter. */
function referenceMatch(operations: Operation[], topic: string): Map<string, QoS> {
  const live = new Map<string, { clientId: string; filter: string; qos: QoS }>();
  for (const operation of operations) {
    const key = JSON.stringify([operation.clientId, operation.filter]);
    if (operation.kind === 'add') live.set(key, operation);
    else live.delete(key);
  }
  const result = new Map<string, QoS>();
  for (const { clientId, filter, qos } of live.values()) {
    if (!topicMatches(filter, topic)) continue;
    const known = result.get(clientId);
    if (known === undefined || qos > known) result.set(clientId, qos);
  }
  return result;
}

function treeOf(operations: Operation[]): TopicTree {
  const tree = new TopicTree();
  for (const operation of operations) {
    if (operation.kind === 'add') tree.add(operation.filter, operation.clientId, operation.qos);
    else tree.remove(operation.filter, operation.clientId);
  }
  return tree;
}

const sorted = (map: Map<string, Matched>) => [...map].sort(([a], [b]) => a.localeCompare(b));

describe('topicMatches: examples from the specification (4.7)', () => {
  it.each([
    ['sport/tennis/player1/#', 'sport/tennis/player1', true],
    ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
    ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
    ['sport/#', 'sport', true], // '#' includes the parent level [MQTT-4.7.1-2]
    ['#', 'sport/tennis', true],
    ['#', '/', true],
    ['sport/tennis/+', 'sport/tennis/player1', true],
    ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
    ['sport/+', 'sport', false],
    ['sport/+', 'sport/', true],
    ['+/+', '/finance', true],
    ['/+', '/finance', true],
    ['+', '/finance', false],
    ['+', 'finance', true],
    ['finance', '/finance', false], // a leading '/' makes a distinct level
    ['ACCOUNTS', 'Accounts', false], // case sensitive [MQTT-4.7.3-4]
    ['Accounts payable', 'Accounts payable', true], // spaces are ordinary characters
    ['a//c', 'a//c', true],
    ['a/+/c', 'a//c', true],
  ])('%j matches %j: %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });

  it.each([
    ['#', '$SYS/monitor/Clients', false],
    ['+/monitor/Clients', '$SYS/monitor/Clients', false],
    ['$SYS/#', '$SYS/monitor/Clients', true],
    ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
    ['+', '$', false],
    ['#', '$', false],
    ['$', '$', true],
    ['a/#', 'a/$x', true], // '$' matters at the first level only
  ])("'$' topics: %j matches %j: %s [MQTT-4.7.2-1]", (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});

describe('validation', () => {
  it.each([
    ['#', true],
    ['sport/#', true],
    ['sport/tennis/#/ranking', false], // '#' must be last [MQTT-4.7.1-2]
    ['sport/tennis#', false], // and alone on its level
    ['+', true],
    ['+/tennis/#', true],
    ['sport/+/player1', true],
    ['sport+', false], // '+' must occupy a whole level [MQTT-4.7.1-3]
    ['/', true],
    ['', false], // at least one character [MQTT-4.7.3-1]
    ['a\u0000b', false], // no U+0000 [MQTT-4.7.3-2]
    ['a'.repeat(65535), true],
    ['é'.repeat(32768), false], // 65536 bytes: longer than an MQTT string can be
  ])('filter %j is valid: %s', (filter, expected) => {
    expect(isValidTopicFilter(filter)).toBe(expected);
  });

  it.each([
    ['sport/tennis', true],
    ['/', true],
    ['$SYS/x', true],
    ['a b/ü', true],
    ['', false], // [MQTT-4.7.3-1]
    ['a/+', false], // no wildcards in a topic name [MQTT-3.3.2-2]
    ['a/#', false],
    ['a+b', false],
    ['a\u0000', false], // [MQTT-4.7.3-2]
    ['a'.repeat(65535), true],
    ['é'.repeat(32768), false],
  ])('topic name %j is valid: %s', (topic, expected) => {
    expect(isValidTopicName(topic)).toBe(expected);
  });

  /** The rules of 4.7.1 restated level by level, as the reference for random strings. */
  function referenceFilterValid(filter: string): boolean {
    if (filter.length === 0 || filter.includes('\u0000')) return false;
    const levels = filter.split('/');
    return levels.every((level, index) => {
      if (level === '#') return index === levels.length - 1;
      if (level === '+') return true;
      return !level.includes('#') && !level.includes('+');
    });
  }

  const wildString = fc.array(fc.constantFrom('a', '/', '+', '#', '$', ' ', '\u0000'), { maxLength: 8 }).map((chars) => chars.join(''));

  it('accepts exactly the filters the level rules allow', () => {
    fc.assert(fc.property(wildString, (filter) => isValidTopicFilter(filter) === referenceFilterValid(filter)));
  });

  it('accepts exactly the non-empty topic names without wildcards or U+0000', () => {
    fc.assert(fc.property(wildString, (topic) => isValidTopicName(topic) === (topic.length > 0 && !/[+#\u0000]/.test(topic))));
  });

  it('generated filters are valid filters and generated topics valid names (generator sanity)', () => {
    fc.assert(fc.property(filterArb, topicArb, (filter, topic) => isValidTopicFilter(filter) && isValidTopicName(topic)));
  });

  it('a valid topic name is also a valid filter that matches exactly itself', () => {
    fc.assert(fc.property(topicArb, topicArb, (topic, other) => isValidTopicFilter(topic) && topicMatches(topic, other) === (topic === other)));
  });
});

describe('topicMatches properties', () => {
  it("never matches a '$' topic with a filter that starts with a wildcard [MQTT-4.7.2-1]", () => {
    fc.assert(
      fc.property(filterArb, topicArb, (filter, topic) => {
        fc.pre(filter.startsWith('+') || filter.startsWith('#'));
        return !topicMatches(filter, `$${topic}`);
      }),
    );
  });

  it("matches a topic with a filter made from it by replacing levels with '+' and cutting it off with '#'", () => {
    fc.assert(
      fc.property(
        fc.array(levelArb, { minLength: 1, maxLength: 6 }),
        fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
        fc.nat({ max: 6 }),
        (levels, wild, cut) => {
          const topic = levels.join('/');
          fc.pre(topic.length > 0);
          const kept = levels.slice(0, Math.min(cut, levels.length)).map((level, index) => (wild[index] ? '+' : level));
          const filter = [...kept, ...(cut < levels.length ? ['#'] : [])].join('/') || '#';
          const startsWild = filter.startsWith('+') || filter.startsWith('#');
          return topicMatches(filter, topic) === !(startsWild && topic.startsWith('$'));
        },
      ),
    );
  });
});

describe('TopicTree', () => {
  it('agrees with topicMatches over random subscriptions, unsubscriptions and topics, giving each client its highest QoS [MQTT-3.3.5-1]', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 30 }), fc.array(topicArb, { minLength: 1, maxLength: 10 }), (operations, topics) => {
        const tree = treeOf(operations);
        for (const topic of topics) expect(sorted(tree.match(topic))).toEqual(sorted(referenceMatch(operations, topic)));
      }),
      { numRuns: 500 },
    );
  });

  it('subscribers(), which keeps answers until the tree changes, answers as match() at every point of adds, removes and lookups', () => {
    // Routes with options too: No Local makes an answer depend on the publisher (origin) [MQTT-3.8.3-3].
    const routeArb = fc.oneof(qosArb, fc.record({ qos: qosArb, noLocal: fc.boolean(), identifier: fc.option(fc.integer({ min: 1, max: 9 }), { nil: undefined }) }));
    const stepArb = fc.oneof(
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('add' as const), clientId: clientArb, filter: filterArb, route: routeArb }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), clientId: clientArb, filter: filterArb }) },
      {
        weight: 4,
        // Mostly a few topics, so that lookups repeat.
        arbitrary: fc.record({ kind: fc.constant('lookup' as const), topic: fc.oneof(fc.constantFrom('a', 'a/b', 'b/c', '$SYS/a', 'a/b/c'), topicArb), origin: fc.option(clientArb, { nil: undefined }) }),
      },
    );
    let repeated = 0;
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 20, maxLength: 60 }), (steps) => {
        const tree = new TopicTree();
        const seen = new Set<string>();
        for (const step of steps) {
          if (step.kind === 'add') tree.add(step.filter, step.clientId, step.route);
          else if (step.kind === 'remove') tree.remove(step.filter, step.clientId);
          else {
            if (seen.has(step.topic)) repeated++;
            seen.add(step.topic);
            expect(sorted(new Map(tree.subscribers(step.topic, step.origin)))).toEqual(sorted(tree.match(step.topic, step.origin)));
          }
        }
      }),
      { numRuns: 1000 },
    );
    // Lookups of a topic already looked up, where a kept answer is used (or must not be).
    expect(repeated).toBeGreaterThan(1000);
  });

  it('subscribers() keeps an answer for a topic until the tree changes, and only an answer without options', () => {
    const tree = new TopicTree();
    tree.add('a/+', 'c1', 1);
    const first = tree.subscribers('a/b');
    expect(tree.subscribers('a/b')).toBe(first);
    tree.add('a/#', 'c2', 0);
    expect(tree.subscribers('a/b')).not.toBe(first);
    expect(sorted(new Map(tree.subscribers('a/b')))).toEqual([['c1', 1], ['c2', 0]]);
    tree.add('a/b', 'c3', { qos: 1, noLocal: true });
    expect(tree.subscribers('a/b', 'c3')).not.toBe(tree.subscribers('a/b', 'c3'));
    expect(tree.subscribers('a/b', 'c3').has('c3')).toBe(false);
    expect(tree.subscribers('a/b', 'c1').has('c3')).toBe(true);
  });

  it('subscribers() keeps a bounded number of answers, and none for a long topic (a client cannot make it hold more)', () => {
    const tree = new TopicTree();
    tree.add('x/#', 'c1', 1);
    const first = tree.subscribers('x/0');
    for (let index = 1; index <= 1024; index++) tree.subscribers(`x/${index}`);
    expect(tree.subscribers('x/0')).not.toBe(first);
    const long = `x/${'y'.repeat(300)}`;
    expect(tree.subscribers(long)).not.toBe(tree.subscribers(long));
  });

  it("never matches a '$' topic through a leading wildcard [MQTT-4.7.2-1]", () => {
    fc.assert(
      fc.property(fc.array(filterArb, { minLength: 1, maxLength: 10 }), topicArb, (filters, topic) => {
        const tree = new TopicTree();
        for (const filter of filters) {
          if (filter.startsWith('+') || filter.startsWith('#')) tree.add(filter, 'wild', 1);
        }
        return tree.match(`$${topic}`).size === 0;
      }),
    );
  });

  it('matches nothing once every subscription is removed again', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(clientArb, filterArb, qosArb), { maxLength: 20 }), topicArb, (subscriptions, topic) => {
        const tree = new TopicTree();
        for (const [clientId, filter, qos] of subscriptions) tree.add(filter, clientId, qos);
        for (const [clientId, filter] of subscriptions) tree.remove(filter, clientId);
        return tree.match(topic).size === 0;
      }),
    );
  });

  it('replaces the QoS of a client that subscribes to the same filter again [MQTT-3.8.4-3]', () => {
    const tree = new TopicTree();
    tree.add('a/+', 'c', 2);
    tree.add('a/+', 'c', 0);
    expect(sorted(tree.match('a/b'))).toEqual([['c', 0]]);
  });

  it('keeps other subscriptions when one is removed, and ignores removing what is not there', () => {
    const tree = new TopicTree();
    tree.add('a/#', 'c1', 1);
    tree.add('a/b', 'c2', 2);
    tree.add('a/b/c', 'c1', 0);
    tree.remove('a/b', 'c1'); // never subscribed
    tree.remove('x/y/z', 'c1'); // not even a branch
    tree.remove('a/b/c', 'c1');
    expect(sorted(tree.match('a/b'))).toEqual([
      ['c1', 1],
      ['c2', 2],
    ]);
    expect(sorted(tree.match('a/b/c'))).toEqual([['c1', 1]]);
    tree.remove('a/#', 'c1');
    expect(sorted(tree.match('a/b/c'))).toEqual([]);
    expect(sorted(tree.match('a/b'))).toEqual([['c2', 2]]);
  });

  it("matches 'sport/#' against 'sport' and '$SYS/#' against '$SYS' [MQTT-4.7.1-2]", () => {
    const tree = new TopicTree();
    tree.add('sport/#', 'fan', 1);
    tree.add('$SYS/#', 'admin', 1);
    tree.add('#', 'all', 0);
    expect(sorted(tree.match('sport'))).toEqual([
      ['all', 0],
      ['fan', 1],
    ]);
    expect(sorted(tree.match('$SYS'))).toEqual([['admin', 1]]);
  });
});

describe('TopicTree node count (what the subscription budget counts)', () => {
  /** Distinct level paths of the filters still held: one node each. */
  function expectedNodes(operations: Operation[]): number {
    const live = new Map<string, string>();
    for (const operation of operations) {
      const key = JSON.stringify([operation.clientId, operation.filter]);
      if (operation.kind === 'add') live.set(key, operation.filter);
      else live.delete(key);
    }
    const paths = new Set<string>();
    for (const filter of live.values()) {
      const levels = filter.split('/');
      for (let depth = 1; depth <= levels.length; depth++) paths.add(JSON.stringify(levels.slice(0, depth)));
    }
    return paths.size;
  }

  it('is the number of distinct level paths held, after any adds and removes (removes prune)', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 40 }), (operations) => {
        expect(treeOf(operations).nodes).toBe(expectedNodes(operations));
      }),
    );
  });

  it('a plan says exactly the bytes adding those filters then adds, filters that share nodes counted once', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 30 }), fc.array(filterArb, { maxLength: 6 }), (operations, filters) => {
        const tree = treeOf(operations);
        const plan = tree.plan();
        const predicted = filters.reduce((sum, filter) => sum + plan.add(filter), 0);
        const before = tree.bytes;
        for (const filter of filters) tree.add(filter, 'new-client', 1);
        expect(tree.bytes - before).toBe(predicted);
      }),
    );
  });

  it('counts bytes back down to zero when everything is removed', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 30 }), (operations) => {
        const tree = treeOf(operations);
        for (const operation of operations) tree.remove(operation.filter, operation.clientId);
        expect([tree.nodes, tree.bytes]).toEqual([0, 0]);
      }),
    );
  });
});

describe('TopicTree shared groups ($share/{group}/{filter}, MQTT 5.0 4.8.2)', () => {
  const sharedArb = fc.tuple(fc.constantFrom('g1', 'g2'), filterArb).map(([group, filter]) => `$share/${group}/${filter}`);
  const anyFilterArb = fc.oneof(filterArb, sharedArb);
  const mixedArb: fc.Arbitrary<Operation> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('add' as const), clientId: clientArb, filter: anyFilterArb, qos: qosArb }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), clientId: clientArb, filter: anyFilterArb }) },
  );

  it('parses the ShareName and filter, and refuses a ShareName with wildcards or without a filter [MQTT-4.8.2-1] [MQTT-4.8.2-2]', () => {
    expect(parseSharedFilter('$share/g/a/+/#')).toEqual({ group: 'g', filter: 'a/+/#' });
    expect(parseSharedFilter('$share/g//')).toEqual({ group: 'g', filter: '/' });
    for (const invalid of ['$share/g', '$share//a', '$share/g+/a', '$share/#/a', '$share/g/a/#/b', '$share/g/']) expect(parseSharedFilter(invalid)).toBeUndefined();
    expect(parseSharedFilter('$shared/g/a')).toBeUndefined();
  });

  it('matches the groups whose filter matches, each with its members; ordinary subscribers are as without them', () => {
    fc.assert(
      fc.property(fc.array(mixedArb, { maxLength: 40 }), topicArb, (operations, topic) => {
        const tree = treeOf(operations);
        const groups: SharedGroup[] = [];
        const matched = tree.match(topic, undefined, groups);
        const live = new Map<string, Set<string>>();
        for (const operation of operations) {
          if (!operation.filter.startsWith('$share/')) continue;
          const members = live.get(operation.filter) ?? new Set<string>();
          if (operation.kind === 'add') members.add(operation.clientId);
          else members.delete(operation.clientId);
          live.set(operation.filter, members);
        }
        const expected = [...live].filter(([filter, members]) => members.size > 0 && topicMatches(parseSharedFilter(filter)!.filter, topic));
        expect(groups.map((group) => [group.key, [...group.candidates()].sort()]).sort()).toEqual(expected.map(([key, members]) => [key, [...members].sort()]).sort());
        const ordinary = operations.filter((operation) => !operation.filter.startsWith('$share/'));
        expect(sorted(matched)).toEqual([...referenceMatch(ordinary, topic)].sort(([a], [b]) => a.localeCompare(b)));
      }),
    );
  });

  it('a plan says exactly the bytes shared filters add (nodes and new groups), and removing everything counts back to zero', () => {
    fc.assert(
      fc.property(fc.array(mixedArb, { maxLength: 30 }), fc.array(anyFilterArb, { maxLength: 6 }), (operations, filters) => {
        const tree = treeOf(operations);
        const plan = tree.plan();
        const predicted = filters.reduce((sum, filter) => sum + plan.add(filter), 0);
        const before = tree.bytes;
        for (const filter of filters) tree.add(filter, 'new-client', 1);
        expect(tree.bytes - before).toBe(predicted);
        for (const filter of filters) tree.remove(filter, 'new-client');
        for (const operation of operations) tree.remove(operation.filter, operation.clientId);
        expect([tree.nodes, tree.bytes, tree.groups]).toEqual([0, 0, 0]);
      }),
    );
  });

  it('round robin goes on after the member chosen last, and a member leaving keeps the next one\'s turn', () => {
    const tree = new TopicTree();
    for (const clientId of ['a', 'b', 'c']) tree.add('$share/g/t', clientId, 1);
    const group = tree.group('$share/g/t')!;
    expect([...group.candidates()]).toEqual(['a', 'b', 'c']);
    group.chose('b');
    expect([...group.candidates()]).toEqual(['c', 'a', 'b']);
    tree.remove('$share/g/t', 'a');
    expect([...group.candidates()]).toEqual(['c', 'b']);
    tree.remove('$share/g/t', 'c');
    expect([...group.candidates()]).toEqual(['b']);
    tree.remove('$share/g/t', 'b');
    expect(tree.group('$share/g/t')).toBeUndefined();
  });
});
