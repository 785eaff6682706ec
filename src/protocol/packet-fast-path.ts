import type { IPubackPacket, IPubcompPacket, IPublishPacket, IPubrecPacket, Parser } from 'mqtt-packet';
import { TRAVELLING_PROPERTY_IDS } from './message-properties.js';
import type { Properties } from './strict-parser.js';

export type AckPacket = IPubackPacket | IPubrecPacket | IPubcompPacket;
export type FastPacket = AckPacket | IPublishPacket;

/** First byte of the client acknowledgements we read ourselves (type << 4, flags 0 [MQTT-2.2.2-1]). */
const ACK_COMMANDS: Record<number, AckPacket['cmd'] | undefined> = { 0x40: 'puback', 0x50: 'pubrec', 0x70: 'pubcomp' };

interface ParserState {
  _list: { length: number };
  _stateCounter: number;
  packet: { length: number };
  error: unknown;
}

/** mqtt-packet's parser state once a packet's remaining length is read and its body is awaited. */
const AWAITING_BODY = 2;

export interface FastPathOptions {
  /** Largest packet accepted, fixed header included; a bigger one is left to the parser, which refuses it. */
  maxPacketSize: number;
  /** PUBLISH too (once the CONNECT is accepted). */
  publishes: boolean;
  /** The client speaks MQTT 5: a PUBLISH has a property list after its packet id. */
  mqtt5: boolean;
  /** false once the connection is closed (by a packet read before): nothing more is read. */
  reading(): boolean;
}

/**
 * Reads a socket chunk's most common packets ourselves and hands the rest to mqtt-packet's parser
 * (strict-parser.ts), in their order: PUBACK, PUBREC and PUBCOMP (each four bytes), and PUBLISH
 * (an MQTT 5 one with its property list, see readProperties). The parser spends several times
 * the work of the packet itself on each: a state machine step per field, a Packet, views and a
 * sub-queue per packet, an event; a publisher at full speed sends little else, nor does a
 * subscriber draining its queue.
 *
 * It reads only at a packet boundary, while the parser holds nothing, and only packets that are
 * whole in the chunk and plainly valid: an ASCII topic without U+0000, a non-zero packet id, QoS
 * 0 to 2, a size within the limit, properties the parser would take as they are. Anything else,
 * a malformed or cut packet included, goes to the parser and its checks, so what is accepted, and
 * what closes the connection, is what the parser decides (a property test compares the two on
 * arbitrary bytes). When the parser holds the start
 * of a packet whose length it knows, it is given just the rest of that packet, and reading goes
 * on from there. Returns the bytes the parser holds afterwards, as `parse` does.
 *
 * A PUBLISH's payload is a view of the chunk, as the parser's is. The state read here is
 * mqtt-packet's internals: it is pinned to an exact version in package.json, and
 * test/deps/dependency-internals.test.ts checks it.
 */
export function readPackets(chunk: Buffer, parser: Parser, options: FastPathOptions, onPacket: (packet: FastPacket) => void): number {
  const state = parser as unknown as ParserState;
  let offset = 0;
  while (offset < chunk.length && options.reading()) {
    if (state._list.length !== 0 || state._stateCounter !== 0 || state.error) {
      // The parser holds part of a packet: give it the rest of that one packet if it knows how much
      // that is, else everything.
      const missing = state._stateCounter === AWAITING_BODY && !state.error ? state.packet.length - state._list.length : 0;
      if (missing <= 0 || missing >= chunk.length - offset) return parser.parse(offset === 0 ? chunk : chunk.subarray(offset));
      parser.parse(chunk.subarray(offset, offset + missing));
      offset += missing;
      continue;
    }
    const read = readOne(chunk, offset, options, onPacket);
    if (read === 0) return parser.parse(offset === 0 ? chunk : chunk.subarray(offset));
    offset += read;
  }
  return state._list.length;
}

/** Reads the packet at `offset` if it is one the fast path takes; its size, or 0 to leave it to the parser. */
function readOne(chunk: Buffer, offset: number, options: FastPathOptions, onPacket: (packet: FastPacket) => void): number {
  const first = chunk[offset]!;
  if ((first & 0xf0) === 0x30) return options.publishes ? readPublish(chunk, offset, options, onPacket) : 0;
  const cmd = ACK_COMMANDS[first];
  // Packet id 0 is not allowed [MQTT-2.3.1-1]: left to the parser, which closes the connection.
  if (cmd === undefined || offset + 4 > chunk.length || chunk[offset + 1] !== 2 || options.maxPacketSize < 4) return 0;
  const messageId = chunk.readUInt16BE(offset + 2);
  if (messageId === 0) return 0;
  onPacket({ cmd, messageId } as AckPacket);
  return 4;
}

function readPublish(chunk: Buffer, offset: number, { maxPacketSize, mqtt5 }: FastPathOptions, onPacket: (packet: FastPacket) => void): number {
  const first = chunk[offset]!;
  const qos = (first >> 1) & 3;
  if (qos === 3) return 0;
  // Remaining length: a variable byte integer of at most four bytes.
  let at = offset + 1;
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    if (at >= chunk.length || shift > 21) return 0;
    const byte = chunk[at++]!;
    length += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) break;
  }
  const end = at + length;
  if (end > chunk.length || end - offset > maxPacketSize) return 0;
  if (at + 2 > end) return 0;
  const topicStart = at + 2;
  const topicEnd = topicStart + chunk.readUInt16BE(at);
  if (topicEnd > end || !isPlainAscii(chunk, topicStart, topicEnd)) return 0;
  let payloadStart = topicEnd;
  let messageId: number | undefined;
  if (qos > 0) {
    if (topicEnd + 2 > end) return 0;
    messageId = chunk.readUInt16BE(topicEnd);
    if (messageId === 0) return 0;
    payloadStart += 2;
  }
  let properties: Properties | undefined;
  if (mqtt5) {
    const read = readProperties(chunk, payloadStart, end);
    if (read === undefined) return 0;
    payloadStart = read.end;
    properties = read.properties;
  }
  const packet = {
    cmd: 'publish',
    retain: (first & 0x01) !== 0,
    qos,
    dup: (first & 0x08) !== 0,
    length,
    topic: chunk.toString('latin1', topicStart, topicEnd),
    payload: chunk.subarray(payloadStart, end),
  } as IPublishPacket;
  if (messageId !== undefined) packet.messageId = messageId;
  // As mqtt-packet sets it: only when there is at least one.
  if (properties !== undefined && Object.getOwnPropertyNames(properties).length > 0) packet.properties = properties as IPublishPacket['properties'];
  onPacket(packet);
  return end - offset;
}

/** MQTT 5.0 table 2-4: the properties a PUBLISH may carry, and how each is read. */
const PUBLISH_PROPERTIES: Record<number, { name: string; type: 'flag' | 'int32' | 'string' | 'binary' | 'var' | 'int16' | 'pair' } | undefined> = {
  0x01: { name: 'payloadFormatIndicator', type: 'flag' },
  0x02: { name: 'messageExpiryInterval', type: 'int32' },
  0x03: { name: 'contentType', type: 'string' },
  0x08: { name: 'responseTopic', type: 'string' },
  0x09: { name: 'correlationData', type: 'binary' },
  // Not from a client [MQTT-3.3.4-6]: read as the parser does; the handler refuses it.
  0x0b: { name: 'subscriptionIdentifier', type: 'var' },
  0x23: { name: 'topicAlias', type: 'int16' },
  0x26: { name: 'userProperties', type: 'pair' },
};

/**
 * An MQTT 5 PUBLISH's property list from `at`, read as strict-parser.ts's parseProperties reads
 * it for a PUBLISH: the properties that travel with the message (TRAVELLING_PROPERTY_IDS) kept
 * as their bytes (messagePropertyBytes), their strings checked and not built; the Message Expiry
 * Interval, Topic Alias, Subscription Identifier and Payload Format Indicator as values. Anything
 * the parser would refuse, or would have to decode beyond ASCII, returns undefined: the parser
 * then reads the packet, and decides.
 */
function readProperties(chunk: Buffer, at: number, packetEnd: number): { properties: Properties; end: number } | undefined {
  const length = readVariableByteInteger(chunk, at, packetEnd);
  if (length === undefined) return undefined;
  let position = length.end;
  const end = position + length.value;
  if (end > packetEnd) return undefined;
  const properties: Properties = {};
  const runs: number[] = [];
  // Identifiers seen, as the parser counts them: bit (id % 32) of the first word below 32, of the second from 32.
  let seenBelow32 = 0;
  let seenFrom32 = 0;
  while (position < end) {
    const start = position;
    const id = chunk[position++]!;
    const known = PUBLISH_PROPERTIES[id];
    if (known === undefined) return undefined;
    if (known.type !== 'pair') {
      // At most once each (MQTT 5.0 2.2.2.2): a repeat is the parser's Protocol Error to report.
      const bit = 1 << (id & 31);
      if ((id < 32 ? seenBelow32 : seenFrom32) & bit) return undefined;
      if (id < 32) seenBelow32 |= bit;
      else seenFrom32 |= bit;
    }
    switch (known.type) {
      case 'flag': {
        if (position + 1 > end) return undefined;
        const flag = chunk[position++]!;
        if (flag > 1) return undefined;
        properties.payloadFormatIndicator = flag === 1;
        break;
      }
      case 'int32':
        if (position + 4 > end) return undefined;
        properties.messageExpiryInterval = chunk.readUInt32BE(position);
        position += 4;
        break;
      case 'int16':
        if (position + 2 > end) return undefined;
        properties.topicAlias = chunk.readUInt16BE(position);
        position += 2;
        break;
      case 'var': {
        const value = readVariableByteInteger(chunk, position, end);
        if (value === undefined) return undefined;
        properties.subscriptionIdentifier = value.value;
        position = value.end;
        break;
      }
      case 'string':
      case 'binary':
      case 'pair': {
        // Kept as bytes: checked, not built.
        const fields = known.type === 'pair' ? 2 : 1;
        for (let field = 0; field < fields; field++) {
          if (position + 2 > end) return undefined;
          const fieldEnd = position + 2 + chunk.readUInt16BE(position);
          if (fieldEnd > end || (known.type !== 'binary' && !isPlainAscii(chunk, position + 2, fieldEnd))) return undefined;
          position = fieldEnd;
        }
        break;
      }
    }
    if (TRAVELLING_PROPERTY_IDS.has(id)) {
      if (runs.length > 0 && runs[runs.length - 1] === start) runs[runs.length - 1] = position;
      else runs.push(start, position);
    }
  }
  if (runs.length > 0) {
    const pieces: Buffer[] = [];
    for (let index = 0; index < runs.length; index += 2) pieces.push(chunk.subarray(runs[index], runs[index + 1]));
    // Copied: a view would keep the whole chunk the socket read alive with the message.
    properties.messagePropertyBytes = pieces.length === 1 ? Buffer.from(pieces[0]!) : Buffer.concat(pieces);
  }
  return { properties, end };
}

/** A variable byte integer of at most four bytes at `at`, ending by `limit`; undefined if it does not. */
function readVariableByteInteger(chunk: Buffer, at: number, limit: number): { value: number; end: number } | undefined {
  let value = 0;
  for (let shift = 0; shift <= 21; shift += 7) {
    if (at >= limit) return undefined;
    const byte = chunk[at++]!;
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return { value, end: at };
  }
  return undefined;
}

/** Bytes 0x01–0x7F only: well-formed UTF-8 [MQTT-1.5.3-1] without U+0000 [MQTT-1.5.3-2]. */
function isPlainAscii(bytes: Buffer, start: number, end: number): boolean {
  for (let index = start; index < end; index++) {
    const byte = bytes[index]!;
    if (byte === 0 || byte > 0x7f) return false;
  }
  return true;
}
