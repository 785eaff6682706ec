import type { Connection } from '../connection.js';

/**
 * DISCONNECT: the will is discarded [MQTT-3.14.4-3] and the connection closed [MQTT-3.14.4-1],
 * after the acknowledgements already under way have gone out.
 */
export async function handleDisconnect(connection: Connection): Promise<void> {
  connection.discardWill();
  await connection.repliesSent();
  connection.close('DISCONNECT', { graceful: true });
}
