/** The acknowledgements the broker writes for every message it receives or sends at QoS 1 and 2. */
export type AckCommand = 'puback' | 'pubrec' | 'pubrel' | 'pubcomp';

/** First byte of each (type << 4; PUBREL's flags are 0010 [MQTT-3.6.1-1], the others' 0 [MQTT-2.2.2-1]). */
const FIRST_BYTE: Record<AckCommand, number> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 };

/**
 * A successful acknowledgement of `packetId`: type, remaining length 2, packet id. The same four
 * bytes in every protocol version (MQTT 5 leaves out reason code 0 with no properties, 3.2.2.1.1),
 * so they are written here rather than through mqtt-packet's generic writer, which costs several
 * times more per acknowledgement (and in MQTT 5 mode builds an array per packet).
 */
export function encodeAck(cmd: AckCommand, packetId: number): Buffer {
  const bytes = Buffer.allocUnsafe(4);
  bytes[0] = FIRST_BYTE[cmd];
  bytes[1] = 2;
  bytes.writeUInt16BE(packetId, 2);
  return bytes;
}
