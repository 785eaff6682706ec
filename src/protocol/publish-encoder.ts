import type { OutgoingPublish } from '../session/session.js';

/** The largest Remaining Length the four-byte encoding can carry [MQTT-2.2.3]. */
const MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Encodes an outgoing PUBLISH (spec 3.3) into one buffer. Outgoing PUBLISHes are the one packet
 * the broker writes per delivered message; mqtt-packet's generic writer builds each from several
 * buffers and concatenates them, a visible part of the CPU of draining a queue. Every other
 * packet still goes through mqtt-packet.
 */
export function encodePublish(packet: OutgoingPublish): Buffer {
  const topicLength = Buffer.byteLength(packet.topic);
  const remaining = 2 + topicLength + (packet.qos > 0 ? 2 : 0) + packet.payload.length;
  if (remaining > MAX_REMAINING_LENGTH) throw new RangeError(`PUBLISH of ${remaining} bytes exceeds the MQTT maximum`);
  const buffer = Buffer.allocUnsafe(1 + remainingLengthSize(remaining) + remaining);
  // Fixed header: type 3, DUP, QoS, RETAIN [MQTT-3.3.1].
  let offset = 0;
  buffer[offset++] = 0x30 | (packet.dup ? 0x08 : 0) | (packet.qos << 1) | (packet.retain ? 0x01 : 0);
  let length = remaining;
  do {
    let byte = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) byte |= 0x80;
    buffer[offset++] = byte;
  } while (length > 0);
  buffer.writeUInt16BE(topicLength, offset);
  offset += 2;
  offset += buffer.write(packet.topic, offset, 'utf8');
  // The packet identifier is present only for QoS 1 and 2 [MQTT-2.3.1-5].
  if (packet.qos > 0) {
    buffer.writeUInt16BE(packet.packetId!, offset);
    offset += 2;
  }
  packet.payload.copy(buffer, offset);
  return buffer;
}

function remainingLengthSize(length: number): number {
  return length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4;
}
