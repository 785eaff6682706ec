import type { IPubcompPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/** PUBCOMP for a QoS2 message we sent: the delivery is complete. */
export function handlePubcomp(connection: Connection, packet: IPubcompPacket): void {
  connection.requireLink().outbound.completed(packet.messageId!);
}
