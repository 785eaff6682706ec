import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { encodeAck, type AckCommand } from '../../src/protocol/ack-writer.js';

const commands: AckCommand[] = ['puback', 'pubrec', 'pubrel', 'pubcomp'];

function parseAll(bytes: Buffer, protocolVersion: 4 | 5): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: Packet[] = [];
  parser.on('packet', (packet) => packets.push(packet));
  parser.on('error', (error) => {
    throw error;
  });
  parser.parse(bytes);
  return packets;
}

describe('encodeAck', () => {
  it('writes the bytes mqtt-packet writes for PUBACK, PUBREC, PUBREL and PUBCOMP in 3.1.1 (spec 3.4–3.7)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...commands), fc.integer({ min: 1, max: 65535 }), (cmd, messageId) => {
        expect(encodeAck(cmd, messageId).equals(mqttPacket.generate({ cmd, messageId } as Packet))).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('MQTT 5: the same four bytes read as reason code 0, Success (Remaining Length 2 leaves reason code and properties out, 3.4.2.1)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...commands), fc.integer({ min: 1, max: 65535 }), (cmd, messageId) => {
        expect(parseAll(encodeAck(cmd, messageId), 5)).toEqual([expect.objectContaining({ cmd, messageId, reasonCode: 0, length: 2 })]);
      }),
      { numRuns: 1000 },
    );
  });

  it('sets PUBREL flags to 0010 [MQTT-3.6.1-1]', () => {
    expect(encodeAck('pubrel', 0x1234)).toEqual(Buffer.from([0x62, 2, 0x12, 0x34]));
  });
});
