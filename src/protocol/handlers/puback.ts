import type { IPubackPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { flowAcknowledged } from './outbound-ack.js';

/** PUBACK for a QoS1 message we sent: the delivery is complete. */
export function handlePuback(connection: Connection, packet: IPubackPacket): void {
  flowAcknowledged(connection, 'puback', packet.messageId!).acknowledge(packet.messageId!);
}
