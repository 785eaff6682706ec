import type { Connection } from '../connection.js';

/** PINGREQ gets PINGRESP [MQTT-3.12.4-1]. */
export async function handlePingreq(connection: Connection): Promise<void> {
  connection.send({ cmd: 'pingresp' });
}
