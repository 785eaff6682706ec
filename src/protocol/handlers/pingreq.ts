import type { Connection } from '../connection.js';

/** PINGREQ gets PINGRESP [MQTT-3.12.4-1]. */
export function handlePingreq(connection: Connection): void {
  connection.send({ cmd: 'pingresp' });
}
