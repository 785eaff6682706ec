import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteQueue } from '../../src/protocol/byte-queue.js';

// bl as mqtt-packet resolves it: the list ByteQueue stands in for in the parser.
const requireFromMqttPacket = createRequire(createRequire(import.meta.url).resolve('mqtt-packet'));
const { BufferList } = requireFromMqttPacket('bl') as { BufferList: new () => BlList };

interface BlList {
  length: number;
  append(chunk: Buffer): unknown;
  consume(bytes: number): unknown;
  readUInt8(offset: number): number;
  readUInt16BE(offset: number): number;
  readUInt32BE(offset: number): number;
  slice(start?: number, end?: number): Buffer;
  toString(encoding?: BufferEncoding, start?: number, end?: number): string;
  shallowSlice(start?: number, end?: number): BlList;
}

type Operation =
  | { op: 'append'; bytes: number[] }
  | { op: 'consume'; count: number }
  | { op: 'readUInt8' | 'readUInt16BE' | 'readUInt32BE'; offset: number }
  | { op: 'slice'; start?: number; end?: number }
  | { op: 'toString'; start?: number; end?: number }
  | { op: 'shallowSlice'; start: number; end: number };

const operation: fc.Arbitrary<Operation> = fc.oneof(
  fc.record({ op: fc.constant('append' as const), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 9 }) }),
  fc.record({ op: fc.constant('consume' as const), count: fc.integer({ min: -2, max: 20 }) }),
  fc.record({ op: fc.constantFrom('readUInt8' as const, 'readUInt16BE' as const, 'readUInt32BE' as const), offset: fc.nat(30) }),
  fc.record({ op: fc.constant('slice' as const), start: fc.option(fc.nat(30), { nil: undefined }), end: fc.option(fc.nat(40), { nil: undefined }) }),
  fc.record({ op: fc.constant('toString' as const), start: fc.option(fc.nat(30), { nil: undefined }), end: fc.option(fc.nat(30), { nil: undefined }) }),
  fc.record({ op: fc.constant('shallowSlice' as const), start: fc.nat(20), end: fc.nat(30) }),
);

/** What an operation answers: its value, or that it threw (a read past the end throws in both). */
function outcome(read: () => unknown): unknown {
  try {
    const value = read();
    return Buffer.isBuffer(value) ? { bytes: [...value] } : { value };
  } catch (error) {
    return { threw: (error as Error).name };
  }
}

function apply(list: BlList | ByteQueue, step: Operation): unknown {
  switch (step.op) {
    case 'append':
      list.append(Buffer.from(step.bytes));
      return list.length;
    case 'consume':
      list.consume(step.count);
      return list.length;
    case 'readUInt8':
    case 'readUInt16BE':
    case 'readUInt32BE':
      return outcome(() => list[step.op](step.offset));
    case 'slice':
    case 'toString':
      // bl answers a start past the end with bytes from the end (Buffer#slice's negative end); the
      // parser never asks that.
      if (step.start !== undefined && step.end !== undefined && step.start > step.end) return 'not used this way';
      return step.op === 'slice' ? outcome(() => list.slice(step.start, step.end)) : outcome(() => list.toString('latin1', step.start, step.end));
    case 'shallowSlice': {
      if (step.start > step.end || step.end > list.length) return 'not used this way';
      const part = list.shallowSlice(step.start, step.end);
      return [part.length, [...part.slice()], outcome(() => part.readUInt16BE(0))];
    }
  }
}

describe('ByteQueue, the parser byte list', () => {
  it("answers every operation the parser uses, as the parser uses it, as bl's BufferList does, however bytes arrive and go", () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 60 }), (steps) => {
        const bl = new BufferList();
        const queue = new ByteQueue();
        for (const step of steps) expect(apply(queue, step), JSON.stringify(step)).toEqual(apply(bl, step));
      }),
      { numRuns: 2000 },
    );
  });

  it('gives views of what was appended, not copies, when the bytes lie in one chunk (payloads stay what the socket read)', () => {
    const chunk = Buffer.from('0123456789');
    const queue = new ByteQueue().append(chunk);
    const view = queue.slice(2, 5);
    chunk[3] = 0x41;
    expect(view.toString()).toBe('2A4');
  });
});
