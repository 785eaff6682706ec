import type { IDisconnectPacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import type { Connection } from '../connection.js';
import { Reason } from '../reason-codes.js';

/**
 * DISCONNECT: the will is discarded [MQTT-3.14.4-3] (MQTT 5: unless the reason is 0x04, Disconnect
 * with Will Message) and the connection closed [MQTT-3.14.4-1], after the acknowledgements already
 * under way have gone out. An MQTT 5 client may change its Session Expiry Interval here, but not
 * from 0 [MQTT-3.14.2-2].
 */
export async function handleDisconnect(connection: Connection, packet: IDisconnectPacket): Promise<void> {
  const expiry = packet.properties?.sessionExpiryInterval;
  if (expiry !== undefined) {
    const { session } = connection.requireLink();
    if (session.expiry === 0 && expiry !== 0) {
      throw new ProtocolViolation('DISCONNECT sets a Session Expiry Interval where CONNECT had 0 [MQTT-3.14.2-2]');
    }
    session.expiry = expiry;
    // Stored before the connection closes, as every session transition is: a broker killed right
    // after the close still keeps the session as long as the client asked.
    await session.touch();
  }
  const withWill = connection.protocolVersion === 5 && packet.reasonCode === Reason.DISCONNECT_WITH_WILL;
  if (!withWill) connection.discardWill();
  await connection.repliesSent();
  connection.close('DISCONNECT', { graceful: !withWill });
}
