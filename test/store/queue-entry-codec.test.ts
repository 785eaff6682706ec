import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decode, decodeRecord, encode, encodeRecord } from '../../src/store/codec.js';
import { isQueueEntryValue } from '../../src/store/key-layout.js';
import { decodeQueueEntry, decodeQueueEntryBody, readFields } from '../../src/store/queue-entry-codec.js';

const qos = fc.constantFrom(0, 1, 2);
const inline = fc.record({
  q: qos,
  r: fc.boolean(),
  t: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 300 })),
  p: fc.oneof(
    { weight: 9, arbitrary: fc.uint8Array({ maxLength: 300 }) },
    // Lengths at the edges of bin8, bin16 and bin32.
    { weight: 1, arbitrary: fc.constantFrom(255, 256, 65_535, 65_536).map((size) => new Uint8Array(size).fill(3)) },
  ),
  o: qos,
});
const shared = fc.record({ q: qos, r: fc.boolean(), m: fc.oneof(fc.nat(), fc.constantFrom(2 ** 32 - 1, 2 ** 32, 2 ** 40)), z: fc.nat() });
/** Values the broker writes, and other maps: missing or extra fields, other key lengths, other value types. */
const anyMap = fc.dictionary(fc.string({ minLength: 0, maxLength: 3 }), fc.oneof(fc.integer(), fc.boolean(), fc.string(), fc.uint8Array(), fc.double(), fc.constant(null)), {
  maxKeys: 6,
});
const stored = fc.oneof(inline, shared, anyMap, fc.tuple(inline, anyMap).map(([entry, extra]) => ({ ...extra, ...entry })));

/** A decoder's outcome, as a string cheap to compare even with large payloads: the value (bytes hashed), or that it threw. */
function outcome(read: () => unknown): string {
  try {
    return JSON.stringify(read(), (_, value: unknown) => (value instanceof Uint8Array ? `bytes ${value.length} ${createHash('sha1').update(value).digest('hex')}` : value));
  } catch (error) {
    return `threw ${(error as { code?: string }).code}`;
  }
}

const KEY = 'q\u0000client\u0000000000000001';

/** The fast path and the general decoder agree on the msgpack of an entry. */
function check(bytes: Buffer): void {
  expect(outcome(() => decodeQueueEntryBody(bytes, KEY))).toBe(outcome(() => decode(bytes, KEY, isQueueEntryValue)));
}

/** Damaged in one of three ways: cut short, one byte changed, one byte added. */
function damaged(bytes: Buffer, at: number, byte: number, damage: 'cut' | 'flip' | 'append'): Buffer {
  const index = at % bytes.length;
  if (damage === 'cut') return bytes.subarray(0, index);
  if (damage === 'append') return Buffer.concat([bytes, Buffer.from([byte])]);
  return Buffer.from(bytes.map((old, position) => (position === index ? byte : old)));
}

const damage = fc.constantFrom<'cut' | 'flip' | 'append'>('cut', 'flip', 'append');

describe('decodeQueueEntry', () => {
  it('reads every value the broker stores itself, without the general decoder', () => {
    fc.assert(
      fc.property(fc.oneof(inline, shared), (value) => {
        expect(readFields(encode(value))).toBeDefined();
      }),
      { numRuns: 300 },
    );
  });

  it('reads every stored value exactly as the general decoder does, or fails as it does', () => {
    fc.assert(fc.property(stored, (value) => check(encode(value))), { numRuns: 1000 });
  });

  it('agrees with the general decoder on damaged values: cut short, bytes changed, bytes added', () => {
    fc.assert(
      fc.property(fc.oneof(inline, shared), fc.nat(), fc.nat({ max: 255 }), damage, (value, at, byte, how) => check(damaged(encode(value), at, byte, how))),
      { numRuns: 2000 },
    );
  });

  it('reads a checked record as decodeRecord does', () => {
    fc.assert(
      fc.property(stored, (value) => {
        const record = encodeRecord(KEY, value);
        expect(outcome(() => decodeQueueEntry(record, KEY))).toBe(outcome(() => decodeRecord(record, KEY, isQueueEntryValue)));
      }),
      { numRuns: 500 },
    );
  });

  it('reports a checked record damaged anywhere, or read under another key, as STORE_CORRUPT_RECORD, never as an entry', () => {
    fc.assert(
      fc.property(fc.oneof(inline, shared), fc.nat(), fc.nat({ max: 255 }), damage, (value, at, byte, how) => {
        const record = encodeRecord(KEY, value);
        const changed = damaged(record, at, byte, how);
        fc.pre(!changed.equals(record));
        expect(outcome(() => decodeQueueEntry(changed, KEY))).toBe('threw BROKER_ERR_STORE_CORRUPT_RECORD');
      }),
      { numRuns: 2000 },
    );
    const record = encodeRecord(KEY, { q: 1, r: false, t: 'a', p: Buffer.from('x'), o: 1 });
    expect(outcome(() => decodeQueueEntry(record, 'q\u0000client\u0000000000000002'))).toBe('threw BROKER_ERR_STORE_CORRUPT_RECORD');
    expect(outcome(() => decodeQueueEntry(encode({ q: 1, r: false, t: 'a', p: Buffer.from('x'), o: 1 }), KEY))).toBe('threw BROKER_ERR_STORE_CORRUPT_RECORD');
  });
});
