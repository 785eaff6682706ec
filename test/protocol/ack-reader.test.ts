import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { readAcks } from '../../src/protocol/ack-reader.js';
import { createStrictParser } from '../../src/protocol/strict-parser.js';

/** What a connection does with a chunk: our ack reader first, the rest to the parser. */
function readWithAckReader(chunks: Buffer[]): string[] {
  const parser = createStrictParser();
  const seen: string[] = [];
  parser.on('packet', (packet: Packet) => seen.push(describePacket(packet)));
  parser.on('error', () => seen.push('error'));
  for (const chunk of chunks) {
    const parsed = readAcks(chunk, parser, (packet) => seen.push(describePacket(packet)));
    if (parsed < chunk.length) parser.parse(chunk.subarray(parsed));
  }
  return seen;
}

function readWithParserOnly(chunks: Buffer[]): string[] {
  const parser = createStrictParser();
  const seen: string[] = [];
  parser.on('packet', (packet: Packet) => seen.push(describePacket(packet)));
  parser.on('error', () => seen.push('error'));
  for (const chunk of chunks) parser.parse(chunk);
  return seen;
}

function describePacket(packet: Packet): string {
  const id = 'messageId' in packet ? packet.messageId : undefined;
  const topic = 'topic' in packet ? packet.topic : undefined;
  return [packet.cmd, id, topic].filter((part) => part !== undefined && part !== null).join(' ');
}

const packet: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ cmd: fc.constantFrom('puback', 'pubrec', 'pubcomp'), id: fc.integer({ min: 1, max: 65535 }) }).map(({ cmd, id }) => mqttPacket.generate({ cmd, messageId: id } as Packet)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 65535 }).map((id) => mqttPacket.generate({ cmd: 'pubrel', messageId: id })) },
  { weight: 1, arbitrary: fc.constant(mqttPacket.generate({ cmd: 'pingreq' })) },
  {
    weight: 1,
    arbitrary: fc
      .record({ topic: fc.constantFrom('a', 'b/c', 'x/y/z'), id: fc.integer({ min: 1, max: 65535 }), size: fc.integer({ min: 0, max: 300 }) })
      .map(({ topic, id, size }) => mqttPacket.generate({ cmd: 'publish', topic, qos: 1, messageId: id, payload: Buffer.alloc(size, 1), retain: false, dup: false })),
  },
  // A PUBACK with a wrong remaining length or reserved flags set: the parser's to judge [MQTT-2.2.2-2].
  { weight: 1, arbitrary: fc.constantFrom(Buffer.from([0x40, 3, 0, 1, 0]), Buffer.from([0x41, 2, 0, 1]), Buffer.from([0x40, 0]), Buffer.from([0x40, 2, 0, 0])) },
);

/** The same bytes cut at arbitrary places. */
const chunked = fc.array(packet, { minLength: 1, maxLength: 30 }).chain((packets) => {
  const bytes = Buffer.concat(packets);
  return fc
    .uniqueArray(fc.integer({ min: 1, max: Math.max(1, bytes.length - 1) }), { maxLength: 8 })
    .map((cuts) => {
      const points = [0, ...cuts.filter((cut) => cut < bytes.length).sort((a, b) => a - b), bytes.length];
      return points.slice(1).map((end, index) => bytes.subarray(points[index], end));
    });
});

describe('readAcks', () => {
  it('sees exactly the packets, in the order, the parser alone sees, however the bytes are cut into chunks', () => {
    fc.assert(
      fc.property(chunked, (chunks) => {
        // After a parser error a connection is closed; compare up to the first one.
        const expected = readWithParserOnly(chunks);
        const actual = readWithAckReader(chunks);
        const end = expected.indexOf('error');
        if (end === -1) expect(actual).toEqual(expected);
        else expect(actual.slice(0, end + 1)).toEqual(expected.slice(0, end + 1));
      }),
      { numRuns: 3000 },
    );
  });

  it('reads a run of acks at a packet boundary and stops at the first other byte', () => {
    const parser = createStrictParser();
    const acks: string[] = [];
    const chunk = Buffer.from([0x40, 2, 0, 1, 0x50, 2, 1, 0, 0x70, 2, 0xff, 0xff, 0xc0, 0, 0x40, 2, 0, 2]);
    expect(readAcks(chunk, parser, (packet) => acks.push(describePacket(packet)))).toBe(12);
    expect(acks).toEqual(['puback 1', 'pubrec 256', 'pubcomp 65535']);
  });

  it('leaves everything to the parser while it holds part of a packet', () => {
    const parser = createStrictParser();
    parser.parse(Buffer.from([0x40, 2, 0]));
    expect(readAcks(Buffer.from([1, 0x40, 2, 0, 2]), parser, () => expect.unreachable())).toBe(0);
  });
});
