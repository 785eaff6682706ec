import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkedRecord, decode, decodeRecord, encode, encodeRecord, recordBody } from '../../src/store/codec.js';
import { flatMapSize } from '../../src/store/flat-map-encoder.js';
import { isQueueEntryValue } from '../../src/store/key-layout.js';
import { decodeQueueEntry, readFields } from '../../src/store/queue-entry-codec.js';

const KEY = 'q\u0000client\u0000000000000001';
const isAnything = (value: unknown): value is unknown => true;

/**
 * A flat map (and one nested in it) as a string cheap to compare, its byte arrays hashed: msgpackr
 * reads a Uint8Array back as a Buffer, and a Buffer's toJSON would run before a replacer could see
 * it. -0 reads back as 0, from msgpackr's encoding as from ours.
 */
function shown(value: unknown): string {
  if (typeof value !== 'object' || value === null) return JSON.stringify(value);
  const fields = Object.entries(value).map(([name, field]): [string, unknown] => [
    name,
    field instanceof Uint8Array
      ? `bytes ${field.length} ${createHash('sha1').update(field).digest('hex')}`
      : typeof field === 'number'
        ? `number ${String(field)}`
        : typeof field === 'object' && field !== null
          ? shown(field)
          : field,
  ]);
  return JSON.stringify(fields);
}

const ascii = (maxLength: number) => fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((code) => String.fromCharCode(code)), maxLength });
/** Lengths at the edges of each header size: fixstr / str 8 / str 16, bin 8 / bin 16 / bin 32, and the integer widths. */
const edgeString = fc.constantFrom(31, 32, 255, 256, 65_535).map((length) => 'a'.repeat(length));
const edgeBytes = fc.constantFrom(0, 255, 256, 65_535, 65_536).map((length) => new Uint8Array(length).fill(7));
const edgeNumber = fc.constantFrom(0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 2 ** 32 - 1);

/** What the encoder takes: names ASCII and short, values numbers, booleans, ASCII strings, byte arrays. */
const flatValue = fc.oneof(
  fc.nat(),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  edgeNumber,
  // Written as float 64, as msgpackr writes them: timestamps, negative and fractional numbers.
  fc.constantFrom(2 ** 32, Date.now(), 2 ** 53 - 1, -1, -(2 ** 31), 0.5, -0.25),
  fc.double({ noNaN: true }),
  fc.boolean(),
  ascii(300),
  edgeString,
  fc.uint8Array({ maxLength: 300 }),
  edgeBytes,
  fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)),
);
const innerMap = fc.dictionary(ascii(31), flatValue, { maxKeys: 15, noNullPrototype: true });
/** One level of nesting: a queue entry's message properties. */
const flatMap = fc.dictionary(ascii(31), fc.oneof({ weight: 5, arbitrary: flatValue }, { weight: 1, arbitrary: innerMap }), { maxKeys: 15, noNullPrototype: true });

/** Values it must leave to msgpackr. */
const notFlat = fc.oneof(
  fc.dictionary(ascii(3), flatValue, { minKeys: 16, maxKeys: 18, noNullPrototype: true }),
  fc.record({ x: fc.record({ u: fc.constant([['k', 'v']]) }) }),
  fc.record({ x: fc.record({ y: fc.record({ z: fc.constant(1) }) }) }),
  fc.record({ t: fc.string({ unit: 'binary', minLength: 1 }).filter((text) => /[^\u0000-\u007f]/.test(text)) }),
  fc.record({ g: fc.array(ascii(5), { minLength: 1 }) }),
  fc.record({ u: fc.constant(undefined), n: fc.constant(null) }),
  fc.constant({ ['é']: 1 }),
  fc.constant({ ['n'.repeat(32)]: 1 }),
  fc.constant({ t: 'a'.repeat(65_536) }),
  fc.constant({ w: new Uint16Array(2) }),
  fc.constant(new Map([['q', 1]])),
  fc.nat(),
  fc.constant('text'),
);

describe('flat map encoder', () => {
  it('writes every flat map so that msgpackr and readFields read it back as itself, in the size it counted', () => {
    fc.assert(
      fc.property(flatMap, (value) => {
        const size = flatMapSize(value);
        expect(size).toBeGreaterThan(0);
        const record = encodeRecord(KEY, value);
        expect(record.length).toBe(5 + size);
        const body = Buffer.from(recordBody(record, KEY));
        expect(shown(decode(body, KEY, isAnything))).toBe(shown(value));
        // readFields reads flat maps of one-letter names only (queue entries without properties),
        // and declines anything else, for the general decoder.
        const readable = Object.entries(value).every(([name, field]) => name.length === 1 && (typeof field !== 'object' || field instanceof Uint8Array));
        expect(shown(readFields(body))).toBe(readable ? shown(value) : shown(undefined));
      }),
      { numRuns: 1000 },
    );
  });

  it('leaves every other value to msgpackr, whose record reads back the same', () => {
    fc.assert(
      fc.property(notFlat, (value) => {
        expect(flatMapSize(value)).toBe(-1);
        expect(encodeRecord(KEY, value).equals(checkedRecord(KEY, encode(value)))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('reads back the queue entries the broker writes, through the fast path and the general decoder alike', () => {
    const inline = { q: 1, r: false, t: 'bench/q', p: Buffer.from('payload'), o: 1 };
    const shared = { q: 2, r: true, m: 70_000, z: 300 };
    for (const entry of [inline, shared]) {
      const record = encodeRecord(KEY, entry);
      expect(flatMapSize(entry)).toBeGreaterThan(0);
      expect(shown(decodeQueueEntry(record, KEY))).toBe(shown(entry));
      expect(shown(decodeRecord(record, KEY, isQueueEntryValue))).toBe(shown(entry));
    }
  });
});
