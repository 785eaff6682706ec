import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import { sessionOf } from '../dispatcher.js';

/** PUBREC for a QoS2 message we sent: stored as released, then PUBREL goes out. */
export async function handlePubrec(connection: Connection, packet: IPubrecPacket): Promise<void> {
  connection.background(sessionOf(connection).received(packet.messageId!));
}
