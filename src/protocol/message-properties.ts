import type { MessageProperties } from '../store/repository.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** What the broker reads of a PUBLISH's or a will's properties, as the strict parser reports them (strict-parser.ts: Properties). */
export interface ArrivingProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  /** The bytes of the properties that travel with the message (TRAVELLING_PROPERTY_IDS). */
  messagePropertyBytes?: Buffer;
}

/** Property identifiers (MQTT 5.0, table 2-4) of the properties that travel with a message unchanged. */
const PAYLOAD_FORMAT_INDICATOR = 0x01;
const CONTENT_TYPE = 0x03;
const RESPONSE_TOPIC = 0x08;
const CORRELATION_DATA = 0x09;
const USER_PROPERTY = 0x26;

/** The identifiers above: what the strict parser keeps as `messagePropertyBytes` of a PUBLISH or a will. */
export const TRAVELLING_PROPERTY_IDS: ReadonlySet<number> = new Set([PAYLOAD_FORMAT_INDICATOR, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA, USER_PROPERTY]);

/**
 * The properties the broker keeps with a message that arrived with `properties` (a PUBLISH's, or a
 * will's), or undefined when it has none worth keeping. The Message Expiry Interval becomes a
 * deadline counted from `now` [MQTT-3.3.2-6]. The others are kept as the bytes they arrived in
 * (the strict parser's `messagePropertyBytes`): a PUBLISH to a receiver copies them, the store
 * keeps them as one value, and nothing is decoded or encoded again per message.
 * 'payload-format-invalid': the Payload Format Indicator says UTF-8 and the payload is not (the
 * broker checks it, as MQTT 5.0 3.3.2.3.2 allows, so that no receiver is handed text that is not).
 */
export function messagePropertiesOf(
  properties: ArrivingProperties | undefined,
  payload: Buffer,
  now: number,
): MessageProperties | undefined | 'payload-format-invalid' {
  if (properties === undefined) return undefined;
  const { payloadFormatIndicator, messageExpiryInterval, messagePropertyBytes: encoded } = properties;
  if (payloadFormatIndicator && !isUtf8(payload)) return 'payload-format-invalid';
  if (messageExpiryInterval === undefined) return encoded === undefined ? undefined : { encoded };
  const expiresAt = now + messageExpiryInterval * 1000;
  return encoded === undefined ? { expiresAt } : { expiresAt, encoded };
}

const EMPTY = Buffer.alloc(0);
const encodedByName = new WeakMap<MessageProperties, Buffer>();

/**
 * The properties that travel with the message unchanged, as a PUBLISH carries them: the bytes they
 * arrived in, or for properties kept by name, encoded once (in a fixed order; User Properties in
 * theirs) and remembered, since a fan-out writes them many times.
 */
export function encodedMessageProperties(properties: MessageProperties | undefined): Buffer {
  if (properties === undefined) return EMPTY;
  if (properties.encoded !== undefined) return properties.encoded;
  let bytes = encodedByName.get(properties);
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
  encodedByName.set(properties, bytes);
  return bytes;
}

/**
 * The properties by name, whichever way they are kept: what broker-admin shows. The encoded
 * bytes were checked by the strict parser when they arrived (and by their record's checksum since),
 * so they are read without checks; a byte the reader does not expect ends the reading.
 */
export function namedMessageProperties(properties: MessageProperties): MessageProperties {
  const { encoded, ...named } = properties;
  if (encoded === undefined) return named;
  let offset = 0;
  const readString = (): string => {
    const length = encoded.readUInt16BE(offset);
    offset += 2 + length;
    return encoded.toString('utf8', offset - length, offset);
  };
  while (offset < encoded.length) {
    const id = encoded[offset++];
    if (id === PAYLOAD_FORMAT_INDICATOR) {
      named.payloadFormat = encoded[offset++] === 1 ? 1 : 0;
    } else if (id === CONTENT_TYPE) {
      named.contentType = readString();
    } else if (id === RESPONSE_TOPIC) {
      named.responseTopic = readString();
    } else if (id === CORRELATION_DATA) {
      const length = encoded.readUInt16BE(offset);
      named.correlationData = Buffer.from(encoded.subarray(offset + 2, offset + 2 + length));
      offset += 2 + length;
    } else if (id === USER_PROPERTY) {
      const key = readString();
      (named.userProperties ??= []).push([key, readString()]);
    } else {
      break;
    }
  }
  return named;
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

function isUtf8(payload: Buffer): boolean {
  try {
    strictUtf8.decode(payload);
    return true;
  } catch {
    return false;
  }
}
