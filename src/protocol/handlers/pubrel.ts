import type { IPubrelPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { Reason } from '../reason-codes.js';

/**
 * PUBREL: release the inbound QoS2 packet id, then PUBCOMP, also for an id we no longer hold
 * [MQTT-4.3.3-2]. MQTT 5 tells the client which it was: 0x92 Packet Identifier not found for an id
 * not held (a PUBREL re-sent after its PUBCOMP was lost, say) (MQTT 5.0 3.7.2.1). Synchronous, as
 * PUBLISH's handler: the PUBCOMP waits in the reply queue, not the packets behind it.
 */
export function handlePubrel(connection: Connection, packet: IPubrelPacket): void {
  const packetId = packet.messageId!;
  const { inbound } = connection.requireLink();
  const held = inbound.holds(packetId);
  connection.reply(inbound.release(packetId), () =>
    connection.acknowledge('pubcomp', packetId, held ? Reason.SUCCESS : Reason.PACKET_IDENTIFIER_NOT_FOUND),
  );
}
