import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { PacketReader } from '../../bench/lib/mqtt-client.js';

const packetArb: fc.Arbitrary<Packet> = fc.oneof(
  fc
    .record({
      topic: fc.string({ minLength: 1, maxLength: 30 }).filter((topic) => !/[+#\u0000]/.test(topic)),
      // Up to a few hundred bytes, and a few sizes whose Remaining Length takes 2 or 3 bytes.
      payload: fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(127, 128, 16_383, 16_384, 70_000).map((size) => new Uint8Array(size).fill(9))),
      qos: fc.constantFrom(0, 1, 2),
      dup: fc.boolean(),
      retain: fc.boolean(),
      messageId: fc.integer({ min: 1, max: 65535 }),
    })
    .map(({ payload, qos, dup, messageId, ...rest }) => ({
      cmd: 'publish' as const,
      ...rest,
      payload: Buffer.from(payload),
      qos: qos as 0 | 1 | 2,
      dup: qos > 0 && dup,
      ...(qos > 0 ? { messageId } : {}),
    })),
  fc.integer({ min: 1, max: 65535 }).map((messageId) => ({ cmd: 'puback' as const, messageId })),
  fc.integer({ min: 1, max: 65535 }).map((messageId) => ({ cmd: 'pubrel' as const, messageId })),
  fc.constant({ cmd: 'pingresp' as const }),
  fc.boolean().map((sessionPresent) => ({ cmd: 'connack' as const, returnCode: 0, sessionPresent })),
);

/** What the bench needs of a packet: its kind and, for PUBLISH, every field. */
function summary(packet: Packet): unknown {
  if (packet.cmd !== 'publish') return { cmd: packet.cmd };
  const { topic, payload, qos, dup, retain, messageId } = packet;
  return { cmd: 'publish', topic, payload: Buffer.from(payload as Buffer).toString('hex'), qos, dup, retain, messageId: qos > 0 ? messageId : undefined };
}

describe('bench load client: PacketReader', () => {
  it('reads the packets mqtt-packet wrote, however the stream is cut into chunks', () => {
    fc.assert(
      fc.property(fc.array(packetArb, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (packets, cuts) => {
        const stream = Buffer.concat(packets.map((packet) => mqttPacket.generate(packet)));
        const read: Packet[] = [];
        const parser = mqttPacket.parser({ protocolVersion: 4 });
        parser.on('packet', (packet: Packet) => read.push(packet));
        const reader = new PacketReader(
          (packet) => read.push(packet),
          (frame) => parser.parse(frame),
          (error) => {
            throw error;
          },
        );
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        let from = 0;
        for (const point of [...points, stream.length]) {
          reader.push(stream.subarray(from, point));
          from = point;
        }
        expect(read.map(summary)).toEqual(packets.map(summary));
      }),
      { numRuns: 300 },
    );
  });

  it('reports a Remaining Length longer than four bytes as an error', () => {
    const errors: Error[] = [];
    const reader = new PacketReader(
      () => {},
      () => {},
      (error) => errors.push(error),
    );
    reader.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    expect(errors).toHaveLength(1);
  });
});
