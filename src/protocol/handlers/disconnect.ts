import type { IDisconnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';

/**
 * DISCONNECT: the will is discarded [MQTT-3.14.4-3] (MQTT 5: unless the reason is 0x04, Disconnect
 * with Will Message) and the connection closed [MQTT-3.14.4-1], after the acknowledgements already
 * under way have gone out. An MQTT 5 client may change its Session Expiry Interval here, but not
 * from 0 [MQTT-3.14.2-2].
 */
export async function handleDisconnect(connection: Connection, packet: IDisconnectPacket): Promise<void> {
  const { session } = connection.requireLink();
  const { withWill } = connection.applyDisconnect(packet);
  // A new expiry is stored before the connection closes, as every session transition is: a broker
  // killed right after the close still keeps the session as long as the client asked.
  if (packet.properties?.sessionExpiryInterval !== undefined) await session.touch();
  await connection.repliesSent();
  connection.close('DISCONNECT', { graceful: !withWill });
}
