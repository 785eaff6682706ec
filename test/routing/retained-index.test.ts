/**
 * The retained index: a tree by topic level holding each retained message's QoS and size (and a
 * memory-only message's payload). Its matches must be exactly those of topicMatches over every
 * retained topic, at a cost set by the branches a filter reaches, in slices.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAUSE, RetainedIndex, type RetainedMatch } from '../../src/routing/retained-index.js';
import { topicMatches } from '../../src/routing/topic.js';
import type { QoS } from '../../src/store/repository.js';
import { filterArb, qosArb, topicArb } from './topic-arbitraries.js';

type Operation =
  | { kind: 'set'; topic: string; qos: QoS; size: number }
  | { kind: 'delete'; topic: string }
  | { kind: 'set-ephemeral'; topic: string; payload: string }
  | { kind: 'delete-ephemeral'; topic: string };

const operationArb: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), topic: topicArb, qos: qosArb, size: fc.nat({ max: 1000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), topic: topicArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('set-ephemeral' as const), topic: topicArb, payload: fc.string({ minLength: 1, maxLength: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete-ephemeral' as const), topic: topicArb }) },
);

function apply(index: RetainedIndex, operation: Operation): void {
  if (operation.kind === 'set') index.setStored(operation.topic, operation.qos, operation.size);
  else if (operation.kind === 'delete') index.deleteStored(operation.topic);
  else if (operation.kind === 'set-ephemeral') index.setEphemeral(operation.topic, Buffer.from(operation.payload));
  else index.deleteEphemeral(operation.topic);
}

/** The reference: a map per kind, matched topic by topic with topicMatches; memory-only first. */
function reference(operations: Operation[], filter: string): Array<[string, QoS, number, string | undefined]> {
  const stored = new Map<string, [QoS, number]>();
  const ephemeral = new Map<string, string>();
  for (const operation of operations) {
    if (operation.kind === 'set') stored.set(operation.topic, [operation.qos, operation.size]);
    else if (operation.kind === 'delete') stored.delete(operation.topic);
    else if (operation.kind === 'set-ephemeral') ephemeral.set(operation.topic, operation.payload);
    else ephemeral.delete(operation.topic);
  }
  const topics = new Set([...stored.keys(), ...ephemeral.keys()]);
  return [...topics]
    .filter((topic) => topicMatches(filter, topic))
    .map((topic): [string, QoS, number, string | undefined] => {
      const payload = ephemeral.get(topic);
      if (payload !== undefined) return [topic, 0, Buffer.byteLength(payload), payload];
      const [qos, size] = stored.get(topic)!;
      return [topic, qos, size, undefined];
    })
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Every match of a filter, pauses left out, and how many pauses there were. */
function matchAll(index: RetainedIndex, filter: string): { matches: RetainedMatch[]; pauses: number } {
  const matches: RetainedMatch[] = [];
  let pauses = 0;
  for (const found of index.matches(filter)) {
    if (found === PAUSE) pauses++;
    else matches.push(found);
  }
  return { matches, pauses };
}

function summary(matches: RetainedMatch[]): Array<[string, QoS, number, string | undefined]> {
  return matches
    .map((match): [string, QoS, number, string | undefined] => [match.topic, match.qos, match.size, match.payload?.toString()])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

describe('RetainedIndex', () => {
  it('matches exactly the retained topics topicMatches matches, each once, after any sets and deletes [MQTT-4.7.1, MQTT-4.7.2-1]', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 40 }), fc.array(filterArb, { minLength: 1, maxLength: 5 }), (operations, filters) => {
        const index = new RetainedIndex();
        for (const operation of operations) apply(index, operation);
        for (const filter of filters) expect(summary(matchAll(index, filter).matches), filter).toEqual(reference(operations, filter));
        const stored = new Set<string>();
        for (const operation of operations) {
          if (operation.kind === 'set') stored.add(operation.topic);
          else if (operation.kind === 'delete') stored.delete(operation.topic);
        }
        expect(index.size).toBe(stored.size);
      }),
      { numRuns: 500 },
    );
  });

  it('a walk suspended at every step, with sets and deletes in between, finds only topics that match, each once', () => {
    fc.assert(
      fc.property(fc.array(operationArb, { maxLength: 30 }), filterArb, fc.array(operationArb, { maxLength: 30 }), (before, filter, during) => {
        const index = new RetainedIndex();
        for (const operation of before) apply(index, operation);
        const everSet = new Set(before.filter((operation) => operation.kind.startsWith('set')).map(({ topic }) => topic));
        const found: string[] = [];
        let next = 0;
        // A consumer awaits other work after every match (reading payloads): the tree changes meanwhile.
        for (const match of index.matches(filter)) {
          if (match !== PAUSE) found.push(match.topic);
          const operation = during[next++];
          if (operation === undefined) continue;
          apply(index, operation);
          if (operation.kind.startsWith('set')) everSet.add(operation.topic);
        }
        for (const topic of found) {
          expect(topicMatches(filter, topic), `${topic} for ${filter}`).toBe(true);
          expect(everSet.has(topic), `${topic} was retained at some point`).toBe(true);
        }
        expect(new Set(found).size, found.join(' ')).toBe(found.length);
      }),
      { numRuns: 1000 },
    );
  });

  it('a node merged with its only child while a walk is inside it keeps the topics the walk computes right', () => {
    const index = new RetainedIndex();
    index.setStored('a/b/d', 1, 1);
    index.setStored('a/b/c', 1, 1);
    const found: string[] = [];
    for (const match of index.matches('a/b/+')) {
      if (match === PAUSE) continue;
      found.push(match.topic);
      // b is left with one child and no message of its own: b and c become one node, b/c.
      if (match.topic === 'a/b/d') index.deleteStored('a/b/d');
    }
    expect(found).toEqual(['a/b/d', 'a/b/c']);
    expect(summary(matchAll(index, '#').matches)).toEqual([['a/b/c', 1, 1, undefined]]);
  });

  it('a memory-only message shadows the stored one of its topic and is QoS 0; deleting it shows the stored one again', () => {
    const index = new RetainedIndex();
    index.setStored('$SYS/broker/uptime', 1, 3);
    index.setEphemeral('$SYS/broker/uptime', Buffer.from('42 s'));
    expect(summary(matchAll(index, '$SYS/#').matches)).toEqual([['$SYS/broker/uptime', 0, 4, '42 s']]);
    expect(index.size).toBe(1);
    index.deleteEphemeral('$SYS/broker/uptime');
    expect(summary(matchAll(index, '$SYS/#').matches)).toEqual([['$SYS/broker/uptime', 1, 3, undefined]]);
    // '$' topics stay hidden from wildcards at the first level [MQTT-4.7.2-1].
    expect(matchAll(index, '#').matches).toEqual([]);
  });

  it('costs what the filter reaches, not what is retained: no pause for a filter whose branch is missing or narrow, one per slice for a wide one', () => {
    const index = new RetainedIndex();
    const count = 100_000;
    for (let n = 0; n < count; n++) index.setStored(`fleet/device-${n}/state`, 1, 10);
    expect(matchAll(index, 'fleet/device-77/state')).toMatchObject({ matches: [{ topic: 'fleet/device-77/state' }], pauses: 0 });
    expect(matchAll(index, 'other/+/state')).toEqual({ matches: [], pauses: 0 });
    expect(matchAll(index, '+/device-5/#')).toMatchObject({ matches: [{ topic: 'fleet/device-5/state' }], pauses: 0 });
    // A wide filter reaches every device: its work comes in slices, with pauses between them.
    const wide = matchAll(index, 'fleet/+/nothing');
    expect(wide.matches).toEqual([]);
    expect(wide.pauses).toBeGreaterThan(count / 2048);
    const all = matchAll(index, 'fleet/#');
    expect(all.matches).toHaveLength(count);
    expect(all.pauses).toBeGreaterThan(count / 2048);
  });

  it('a walk paused half-way sees the deletes made meanwhile', () => {
    const index = new RetainedIndex();
    for (let n = 0; n < 5000; n++) index.setStored(`t/${n}`, 0, 1);
    const found: string[] = [];
    let deleted = false;
    for (const match of index.matches('t/+')) {
      if (match === PAUSE) {
        if (!deleted) for (let n = 2500; n < 5000; n++) index.deleteStored(`t/${n}`);
        deleted = true;
        continue;
      }
      found.push(match.topic);
    }
    expect(deleted).toBe(true);
    expect(found).toEqual(Array.from({ length: 2500 }, (_, n) => `t/${n}`));
  });
});
