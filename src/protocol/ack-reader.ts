import type { IPubackPacket, IPubcompPacket, IPubrecPacket, Parser } from 'mqtt-packet';

export type AckPacket = IPubackPacket | IPubrecPacket | IPubcompPacket;

/** First byte of the client acknowledgements we read ourselves (type << 4, flags 0 [MQTT-2.2.2-1]). */
const ACK_COMMANDS: Record<number, AckPacket['cmd'] | undefined> = { 0x40: 'puback', 0x50: 'pubrec', 0x70: 'pubcomp' };

interface ParserState {
  _list: { length: number };
  _stateCounter: number;
  error: unknown;
}

/**
 * Reads the PUBACK, PUBREC and PUBCOMP packets at the start of `chunk` (each four bytes: type,
 * remaining length 2, packet id) and returns where the rest begins, for the generic parser. A
 * subscriber draining its queue sends little else, and mqtt-packet's parser spends several times
 * the work of the acknowledgement itself on each one. Only used while the parser holds no partial
 * packet, so the bytes are known to start at a packet boundary; anything else, a malformed ack
 * included, is left to the parser and its checks. That state is mqtt-packet's internals: it is
 * pinned to an exact version in package.json, and test/deps/dependency-internals.test.ts checks it.
 */
export function readAcks(chunk: Buffer, parser: Parser, onAck: (packet: AckPacket) => void): number {
  const state = parser as unknown as ParserState;
  if (state._list.length !== 0 || state._stateCounter !== 0 || state.error) return 0;
  let offset = 0;
  while (offset + 4 <= chunk.length && chunk[offset + 1] === 2) {
    const cmd = ACK_COMMANDS[chunk[offset]!];
    const messageId = chunk.readUInt16BE(offset + 2);
    // Packet id 0 is not allowed [MQTT-2.3.1-1]: left to the parser, which closes the connection.
    if (cmd === undefined || messageId === 0) break;
    onAck({ cmd, messageId } as AckPacket);
    offset += 4;
  }
  return offset;
}
