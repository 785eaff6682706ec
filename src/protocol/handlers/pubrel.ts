import type { IPubrelPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/** PUBREL: release the inbound QoS2 packet id, then PUBCOMP, also for an id we no longer hold [MQTT-4.3.3-2]. */
export async function handlePubrel(connection: Connection, packet: IPubrelPacket): Promise<void> {
  const packetId = packet.messageId!;
  connection.reply(connection.requireLink().inbound.release(packetId), () =>
    connection.send({ cmd: 'pubcomp', messageId: packetId }),
  );
}
