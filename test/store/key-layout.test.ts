import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FORMAT_KEY, keys, parseKey, RETAINED_TOTALS_KEY, SYNC_MARK_KEY, type ParsedKey } from '../../src/store/key-layout.js';

/** Client ids, filters and topics as MQTT allows them: any UTF-8 but U+0000 [MQTT-1.5.3-2]. */
const mqttString = fc.string({ unit: 'grapheme', maxLength: 20 }).filter((text) => !text.includes('\u0000'));
const seq = fc.integer({ min: 1, max: 2 ** 48 - 1 });
const packetId = fc.integer({ min: 1, max: 65535 });

/** Every kind of key the layout builds, with what parseKey must find in it. */
const built = (key: string, parts: ParsedKey): [string, ParsedKey] => [key, parts];
const builtKey: fc.Arbitrary<[string, ParsedKey]> = fc.oneof(
  mqttString.map((clientId) => built(keys.session(clientId), { kind: 'session', clientId })),
  fc.tuple(mqttString, mqttString).map(([clientId, filter]) => built(keys.subscription(clientId, filter), { kind: 'subscription', clientId, filter })),
  fc.tuple(mqttString, seq).map(([clientId, n]) => built(keys.queueEntry(clientId, n), { kind: 'queue-entry', clientId, seq: n })),
  mqttString.map((clientId) => built(keys.queueStats(clientId), { kind: 'queue-stats', clientId })),
  mqttString.map((clientId) => built(keys.dupMark(clientId), { kind: 'dup-mark', clientId })),
  fc.tuple(mqttString, seq).map(([clientId, n]) => built(keys.release(clientId, n), { kind: 'release', clientId, seq: n })),
  fc.tuple(mqttString, packetId).map(([clientId, id]) => built(keys.inbound(clientId, id), { kind: 'inbound', clientId, packetId: id })),
  seq.map((messageId) => built(keys.body(messageId), { kind: 'body', messageId })),
  seq.map((messageId) => built(keys.refCount(messageId), { kind: 'ref-count', messageId })),
  mqttString.map((topic) => built(keys.retained(topic), { kind: 'retained', topic })),
  mqttString.map((topic) => built(keys.retainedIndex(topic), { kind: 'retained-index', topic })),
);

describe('key layout: parseKey is the inverse of keys.*', () => {
  it('takes every key the layout builds back apart into exactly its parts', () => {
    fc.assert(
      fc.property(builtKey, ([key, parts]) => {
        expect(parseKey(key)).toEqual(parts);
      }),
    );
  });

  it('isQueueStatsKey, isDupMarkKey and isRefCountKey pick out exactly the keys of those kinds', () => {
    fc.assert(
      fc.property(builtKey, ([key, parts]) => {
        expect(keys.isQueueStatsKey(key)).toBe(parts.kind === 'queue-stats');
        expect(keys.isDupMarkKey(key)).toBe(parts.kind === 'dup-mark');
        expect(keys.isRefCountKey(key)).toBe(parts.kind === 'ref-count');
      }),
    );
    for (const singleton of [FORMAT_KEY, SYNC_MARK_KEY, RETAINED_TOTALS_KEY]) {
      expect(keys.isQueueStatsKey(singleton) || keys.isDupMarkKey(singleton) || keys.isRefCountKey(singleton)).toBe(false);
    }
  });

  it('knows the three singleton keys', () => {
    expect(parseKey(FORMAT_KEY)).toEqual({ kind: 'format' });
    expect(parseKey(SYNC_MARK_KEY)).toEqual({ kind: 'sync-mark' });
    expect(parseKey(RETAINED_TOTALS_KEY)).toEqual({ kind: 'retained-totals' });
  });

  it('never throws, and calls a key unknown exactly when it does not start with one of our kinds and a NUL', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (key) => {
        const parsed = parseKey(key);
        const singleton = key === FORMAT_KEY || key === SYNC_MARK_KEY || key === RETAINED_TOTALS_KEY;
        const ours = singleton || (/^[bcfimnqrstw]$/.test(key[0] ?? '') && key[1] === '\u0000');
        expect(parsed.kind === 'unknown').toBe(!ours);
      }),
    );
  });

  it('calls a key of one of our kinds with parts that do not fit it malformed, saying what fits', () => {
    expect(parseKey('q\u0000client\u0000123')).toEqual({ kind: 'malformed', expected: 'q\\0<client>\\0<12 hex digits>' });
    expect(parseKey('b\u0000client-without-filter')).toEqual({ kind: 'malformed', expected: 'b\\0<client>\\0<filter>' });
    expect(parseKey('i\u0000c\u000000zz')).toMatchObject({ kind: 'malformed' });
    expect(parseKey('w\u0000a\u0000b')).toMatchObject({ kind: 'malformed' });
    expect(parseKey('m\u0000notahexnumber')).toMatchObject({ kind: 'malformed' });
  });
});
