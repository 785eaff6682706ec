import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { flowAcknowledged } from './outbound-ack.js';

/** PUBREC for a QoS2 message we sent: stored as released, then PUBREL goes out. */
export function handlePubrec(connection: Connection, packet: IPubrecPacket): void {
  connection.background(flowAcknowledged(connection, 'pubrec', packet.messageId!).received(packet.messageId!));
}
