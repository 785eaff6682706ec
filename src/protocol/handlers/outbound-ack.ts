import { ProtocolViolation } from '../../errors.js';
import type { OutboundFlow } from '../../session/outbound-flow.js';
import type { Connection } from '../connection.js';

/**
 * The outbound flow an acknowledgement from the client is for. An acknowledgement of the wrong
 * type for the message in flight under its packet id (PUBREC or PUBCOMP for QoS 1, PUBACK for
 * QoS 2) is a protocol violation: the connection is closed [MQTT-4.8.0-1], and the message stays
 * queued, to be delivered again with DUP=1 [MQTT-4.4.0-1].
 */
export function flowAcknowledged(connection: Connection, ack: 'puback' | 'pubrec' | 'pubcomp', packetId: number): OutboundFlow {
  const { outbound } = connection.requireLink();
  if (!outbound.acceptsAck(packetId, ack)) {
    throw new ProtocolViolation(`${ack.toUpperCase()} for packet id ${packetId}, whose message in flight has the other QoS`);
  }
  return outbound;
}
