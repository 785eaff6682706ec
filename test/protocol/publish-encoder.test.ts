import fc from 'fast-check';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { encodePublish } from '../../src/protocol/publish-encoder.js';
import type { OutgoingPublish } from '../../src/session/session.js';

const outgoing: fc.Arbitrary<OutgoingPublish> = fc
  .record({
    topic: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((topic) => !/[+#\u0000]/.test(topic)),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Payload sizes around the one-, two- and three-byte Remaining Length boundaries.
      fc.constantFrom(120, 125, 127, 128, 16_370, 16_380, 16_383, 16_384, 20_000).map((size) => new Uint8Array(size).fill(7)),
    ),
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    dup: fc.boolean(),
    packetId: fc.integer({ min: 1, max: 65535 }),
  })
  .map(({ payload, qos, dup, packetId, ...rest }) => ({
    ...rest,
    payload: Buffer.from(payload),
    qos: qos as 0 | 1 | 2,
    // DUP is 0 and there is no packet identifier at QoS 0 [MQTT-3.3.1-2] [MQTT-2.3.1-5].
    dup: qos === 0 ? false : dup,
    ...(qos === 0 ? {} : { packetId }),
  }));

function parseOne(bytes: Buffer): IPublishPacket {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: IPublishPacket[] = [];
  parser.on('packet', (packet) => packets.push(packet as IPublishPacket));
  parser.on('error', (error) => {
    throw error;
  });
  parser.parse(bytes);
  expect(packets).toHaveLength(1);
  return packets[0]!;
}

describe('encodePublish', () => {
  it('writes the same bytes as mqtt-packet for any topic, payload, QoS, DUP and RETAIN (spec 3.3)', () => {
    fc.assert(
      fc.property(outgoing, (packet) => {
        const expected = mqttPacket.generate({
          cmd: 'publish',
          topic: packet.topic,
          payload: packet.payload,
          qos: packet.qos,
          retain: packet.retain,
          dup: packet.dup,
          ...(packet.packetId === undefined ? {} : { messageId: packet.packetId }),
        });
        expect(encodePublish(packet).equals(expected)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('reads back through a parser as the packet it was given', () => {
    fc.assert(
      fc.property(outgoing, (packet) => {
        const parsed = parseOne(encodePublish(packet));
        expect(parsed).toMatchObject({ cmd: 'publish', topic: packet.topic, qos: packet.qos, retain: packet.retain, dup: packet.dup });
        expect(Buffer.from(parsed.payload).equals(packet.payload)).toBe(true);
        expect(parsed.messageId).toBe(packet.packetId);
      }),
      { numRuns: 500 },
    );
  });
});
