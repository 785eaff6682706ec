import type { IPubackPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/** PUBACK for a QoS1 message we sent: the delivery is complete. */
export function handlePuback(connection: Connection, packet: IPubackPacket): void {
  connection.requireLink().outbound.acknowledge(packet.messageId!);
}
