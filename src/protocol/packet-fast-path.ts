import type { IPubackPacket, IPubcompPacket, IPublishPacket, IPubrecPacket, Parser } from 'mqtt-packet';

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
  /** PUBLISH too: only for MQTT 3.1 and 3.1.1, whose PUBLISH carries no properties. */
  publishes: boolean;
  /** false once the connection is closed (by a packet read before): nothing more is read. */
  reading(): boolean;
}

/**
 * Reads a socket chunk's most common packets ourselves and hands the rest to mqtt-packet's parser
 * (strict-parser.ts), in their order: PUBACK, PUBREC and PUBCOMP (each four bytes), and for MQTT
 * 3.1 and 3.1.1 PUBLISH. The parser spends several times the work of the packet itself on each:
 * a state machine step per field, a Packet, views and a sub-queue per packet, an event; a
 * publisher at full speed sends little else, nor does a subscriber draining its queue.
 *
 * It reads only at a packet boundary, while the parser holds nothing, and only packets that are
 * whole in the chunk and plainly valid: an ASCII topic without U+0000, a non-zero packet id, QoS
 * 0 to 2, a size within the limit. Anything else, a malformed or cut packet included, goes to the
 * parser and its checks, so what is accepted, and what closes the connection, is what the parser
 * decides (a property test compares the two on arbitrary bytes). When the parser holds the start
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
  if ((first & 0xf0) === 0x30) return options.publishes ? readPublish(chunk, offset, options.maxPacketSize, onPacket) : 0;
  const cmd = ACK_COMMANDS[first];
  // Packet id 0 is not allowed [MQTT-2.3.1-1]: left to the parser, which closes the connection.
  if (cmd === undefined || offset + 4 > chunk.length || chunk[offset + 1] !== 2 || options.maxPacketSize < 4) return 0;
  const messageId = chunk.readUInt16BE(offset + 2);
  if (messageId === 0) return 0;
  onPacket({ cmd, messageId } as AckPacket);
  return 4;
}

function readPublish(chunk: Buffer, offset: number, maxPacketSize: number, onPacket: (packet: FastPacket) => void): number {
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
  onPacket(packet);
  return end - offset;
}

/** Bytes 0x01–0x7F only: well-formed UTF-8 [MQTT-1.5.3-1] without U+0000 [MQTT-1.5.3-2]. */
function isPlainAscii(bytes: Buffer, start: number, end: number): boolean {
  for (let index = start; index < end; index++) {
    const byte = bytes[index]!;
    if (byte === 0 || byte > 0x7f) return false;
  }
  return true;
}
