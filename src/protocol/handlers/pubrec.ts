import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { flowAcknowledged } from './outbound-ack.js';

/**
 * PUBREC for a QoS2 message we sent: stored as released, then PUBREL goes out. An MQTT 5 PUBREC
 * with a reason code of 0x80 or more refuses the message: the delivery ends there, without PUBREL
 * [MQTT-4.3.3-4].
 */
export function handlePubrec(connection: Connection, packet: IPubrecPacket): void {
  const packetId = packet.messageId!;
  const outbound = flowAcknowledged(connection, 'pubrec', packetId);
  if ((packet.reasonCode ?? 0) >= 0x80) outbound.refused(packetId);
  else outbound.received(packetId);
}
