import type { OutgoingPublish } from '../session/session.js';
import { encodedMessageProperties } from './message-properties.js';

/** The largest Remaining Length the four-byte encoding can carry [MQTT-2.2.3]. */
const MAX_REMAINING_LENGTH = 268_435_455;

/** What an MQTT 5 PUBLISH carries besides the message: decided by the connection that writes it. */
export interface V5Publish {
  /** The Topic Alias to send [MQTT-3.3.2-7]; with `omitTopic`, the topic name is sent empty. */
  topicAlias?: number;
  omitTopic?: boolean;
  /** Now, in ms since the epoch: what remains of a Message Expiry Interval is counted from it. */
  now: number;
}

/** Property identifiers (MQTT 5.0, table 2-4) of what belongs to one delivery of a message. */
const MESSAGE_EXPIRY_INTERVAL = 0x02;
const SUBSCRIPTION_IDENTIFIER = 0x0b;
const TOPIC_ALIAS = 0x23;

const NO_IDS: number[] = [];

/**
 * Encodes an outgoing PUBLISH (spec 3.3) into one buffer: for MQTT 3.1/3.1.1 without `v5`, whose
 * PUBLISH has no properties (a message's properties are dropped for such a receiver), and for
 * MQTT 5 with its properties. Outgoing PUBLISHes are the one packet the broker writes per
 * delivered message; mqtt-packet's generic writer builds each from several buffers and
 * concatenates them, a visible part of the CPU of draining a queue. Every other packet still goes
 * through mqtt-packet.
 *
 * An MQTT 5 PUBLISH's property list is the message's own properties as they arrived (copied as
 * bytes), then what belongs to this delivery: what remains of the expiry interval
 * [MQTT-3.3.2-6], the topic alias, and the identifiers of the matching subscriptions [MQTT-3.3.4-3].
 */
export function encodePublish(packet: OutgoingPublish, v5?: V5Publish): Buffer {
  const topic = v5?.omitTopic ? '' : packet.topic;
  const topicLength = Buffer.byteLength(topic);
  const travelling = v5 ? encodedMessageProperties(packet.properties) : undefined;
  const expiresAt = v5 ? packet.properties?.expiresAt : undefined;
  const ids = v5 ? (packet.subscriptionIds ?? NO_IDS) : NO_IDS;
  let propertiesLength = 0;
  if (travelling !== undefined) {
    propertiesLength = travelling.length;
    if (expiresAt !== undefined) propertiesLength += 5;
    if (v5!.topicAlias !== undefined) propertiesLength += 3;
    for (const id of ids) propertiesLength += 1 + variableByteIntegerSize(id);
  }
  const propertiesField = travelling === undefined ? 0 : variableByteIntegerSize(propertiesLength) + propertiesLength;
  const remaining = 2 + topicLength + (packet.qos > 0 ? 2 : 0) + propertiesField + packet.payload.length;
  if (remaining > MAX_REMAINING_LENGTH) throw new RangeError(`PUBLISH of ${remaining} bytes exceeds the MQTT maximum`);
  const buffer = Buffer.allocUnsafe(1 + variableByteIntegerSize(remaining) + remaining);
  // Fixed header: type 3, DUP, QoS, RETAIN [MQTT-3.3.1].
  let offset = 0;
  buffer[offset++] = 0x30 | (packet.dup ? 0x08 : 0) | (packet.qos << 1) | (packet.retain ? 0x01 : 0);
  offset = writeVariableByteInteger(buffer, offset, remaining);
  buffer.writeUInt16BE(topicLength, offset);
  offset += 2;
  offset += buffer.write(topic, offset, 'utf8');
  // The packet identifier is present only for QoS 1 and 2 [MQTT-2.3.1-5].
  if (packet.qos > 0) {
    buffer.writeUInt16BE(packet.packetId!, offset);
    offset += 2;
  }
  if (travelling !== undefined) {
    offset = writeVariableByteInteger(buffer, offset, propertiesLength);
    offset += travelling.copy(buffer, offset);
    if (expiresAt !== undefined) {
      buffer[offset++] = MESSAGE_EXPIRY_INTERVAL;
      // Rounded up: a message with some time left never reads as already expired.
      buffer.writeUInt32BE(Math.max(0, Math.ceil((expiresAt - v5!.now) / 1000)), offset);
      offset += 4;
    }
    if (v5!.topicAlias !== undefined) {
      buffer[offset++] = TOPIC_ALIAS;
      buffer.writeUInt16BE(v5!.topicAlias, offset);
      offset += 2;
    }
    for (const id of ids) {
      buffer[offset++] = SUBSCRIPTION_IDENTIFIER;
      offset = writeVariableByteInteger(buffer, offset, id);
    }
  }
  packet.payload.copy(buffer, offset);
  return buffer;
}

export function variableByteIntegerSize(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

function writeVariableByteInteger(buffer: Buffer, offset: number, value: number): number {
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    buffer[offset++] = byte;
  } while (rest > 0);
  return offset;
}
