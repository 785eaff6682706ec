import type { OutgoingPublish } from '../session/session.js';
import type { MessageProperties } from '../store/repository.js';

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

/** Property identifiers (MQTT 5.0, table 2-4) of the properties a PUBLISH from the broker carries. */
const PAYLOAD_FORMAT_INDICATOR = 0x01;
const MESSAGE_EXPIRY_INTERVAL = 0x02;
const CONTENT_TYPE = 0x03;
const RESPONSE_TOPIC = 0x08;
const CORRELATION_DATA = 0x09;
const SUBSCRIPTION_IDENTIFIER = 0x0b;
const TOPIC_ALIAS = 0x23;
const USER_PROPERTY = 0x26;

/**
 * Encodes an outgoing PUBLISH (spec 3.3) into one buffer: for MQTT 3.1/3.1.1 without `v5`, whose
 * PUBLISH has no properties (a message's properties are dropped for such a receiver), and for
 * MQTT 5 with its properties. Outgoing PUBLISHes are the one packet the broker writes per
 * delivered message; mqtt-packet's generic writer builds each from several buffers and
 * concatenates them, a visible part of the CPU of draining a queue. Every other packet still goes
 * through mqtt-packet.
 */
export function encodePublish(packet: OutgoingPublish, v5?: V5Publish): Buffer {
  const topic = v5?.omitTopic ? '' : packet.topic;
  const topicLength = Buffer.byteLength(topic);
  const properties = v5 ? propertyBytes(packet, v5) : undefined;
  const propertiesLength = properties === undefined ? 0 : variableByteIntegerSize(properties.length) + properties.length;
  const remaining = 2 + topicLength + (packet.qos > 0 ? 2 : 0) + propertiesLength + packet.payload.length;
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
  if (properties !== undefined) {
    offset = writeVariableByteInteger(buffer, offset, properties.length);
    offset += properties.copy(buffer, offset);
  }
  packet.payload.copy(buffer, offset);
  return buffer;
}

/**
 * The property list of an MQTT 5 PUBLISH: the message's own properties as they arrived (encoded
 * once per message and kept, since a fan-out writes them many times), then what belongs to this
 * delivery: what remains of the expiry interval [MQTT-3.3.2-6], the topic alias, and the
 * identifiers of the matching subscriptions [MQTT-3.3.4-3].
 */
function propertyBytes(packet: OutgoingPublish, v5: V5Publish): Buffer {
  const { properties, subscriptionIds } = packet;
  const fixed = properties === undefined ? EMPTY : messagePropertyBytes(properties);
  const expiresAt = properties?.expiresAt;
  const ids = subscriptionIds ?? NO_IDS;
  let size = fixed.length;
  if (expiresAt !== undefined) size += 5;
  if (v5.topicAlias !== undefined) size += 3;
  for (const id of ids) size += 1 + variableByteIntegerSize(id);
  if (size === fixed.length) return fixed;
  const buffer = Buffer.allocUnsafe(size);
  let offset = fixed.copy(buffer, 0);
  if (expiresAt !== undefined) {
    buffer[offset++] = MESSAGE_EXPIRY_INTERVAL;
    // Rounded up: a message with some time left never reads as already expired.
    buffer.writeUInt32BE(Math.max(0, Math.ceil((expiresAt - v5.now) / 1000)), offset);
    offset += 4;
  }
  if (v5.topicAlias !== undefined) {
    buffer[offset++] = TOPIC_ALIAS;
    buffer.writeUInt16BE(v5.topicAlias, offset);
    offset += 2;
  }
  for (const id of ids) {
    buffer[offset++] = SUBSCRIPTION_IDENTIFIER;
    offset = writeVariableByteInteger(buffer, offset, id);
  }
  return buffer;
}

const EMPTY = Buffer.alloc(0);
const NO_IDS: number[] = [];
const encoded = new WeakMap<MessageProperties, Buffer>();

/**
 * The properties that travel with the message unchanged, in a fixed order; User Properties in
 * theirs. Sized first, then written into one buffer.
 */
function messagePropertyBytes(properties: MessageProperties): Buffer {
  let bytes = encoded.get(properties);
  if (bytes !== undefined) return bytes;
  const { payloadFormat, contentType, responseTopic, correlationData, userProperties } = properties;
  let size = payloadFormat === undefined ? 0 : 2;
  if (contentType !== undefined) size += 3 + Buffer.byteLength(contentType);
  if (responseTopic !== undefined) size += 3 + Buffer.byteLength(responseTopic);
  if (correlationData !== undefined) size += 3 + correlationData.length;
  for (const [key, value] of userProperties ?? []) size += 5 + Buffer.byteLength(key) + Buffer.byteLength(value);
  bytes = Buffer.allocUnsafe(size);
  let offset = 0;
  if (payloadFormat !== undefined) {
    bytes[offset++] = PAYLOAD_FORMAT_INDICATOR;
    bytes[offset++] = payloadFormat;
  }
  if (contentType !== undefined) offset = writeString(bytes, writeId(bytes, offset, CONTENT_TYPE), contentType);
  if (responseTopic !== undefined) offset = writeString(bytes, writeId(bytes, offset, RESPONSE_TOPIC), responseTopic);
  if (correlationData !== undefined) {
    offset = writeId(bytes, offset, CORRELATION_DATA);
    bytes.writeUInt16BE(correlationData.length, offset);
    offset += 2 + correlationData.copy(bytes, offset + 2);
  }
  for (const [key, value] of userProperties ?? []) offset = writeString(bytes, writeString(bytes, writeId(bytes, offset, USER_PROPERTY), key), value);
  encoded.set(properties, bytes);
  return bytes;
}

function writeId(buffer: Buffer, offset: number, id: number): number {
  buffer[offset] = id;
  return offset + 1;
}

/** A UTF-8 string with its two-byte length [MQTT-1.5.3]. */
function writeString(buffer: Buffer, offset: number, value: string): number {
  const length = buffer.write(value, offset + 2, 'utf8');
  buffer.writeUInt16BE(length, offset);
  return offset + 2 + length;
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
