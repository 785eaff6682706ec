import type { IPubcompPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { flowAcknowledged } from './outbound-ack.js';

/** PUBCOMP for a QoS2 message we sent: the delivery is complete. */
export function handlePubcomp(connection: Connection, packet: IPubcompPacket): void {
  flowAcknowledged(connection, 'pubcomp', packet.messageId!).completed(packet.messageId!);
}
