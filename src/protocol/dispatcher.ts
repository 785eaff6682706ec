import type { Packet } from 'mqtt-packet';
import { ProtocolViolation } from '../errors.js';
import type { Connection } from './connection.js';
import { handleConnect } from './handlers/connect.js';
import { handleDisconnect } from './handlers/disconnect.js';
import { handlePingreq } from './handlers/pingreq.js';
import { handlePuback } from './handlers/puback.js';
import { handlePubcomp } from './handlers/pubcomp.js';
import { handlePublish } from './handlers/publish.js';
import { handlePubrec } from './handlers/pubrec.js';
import { handlePubrel } from './handlers/pubrel.js';
import { handleSubscribe } from './handlers/subscribe.js';
import { handleUnsubscribe } from './handlers/unsubscribe.js';

/**
 * Routes one packet to its handler; a ProtocolViolation thrown by any handler closes the
 * connection. Handlers with nothing to wait for are synchronous and return nothing.
 */
export function dispatch(connection: Connection, packet: Packet): void | Promise<void> {
  if (packet.cmd === 'connect') return handleConnect(connection, packet);
  // The first packet from a client must be CONNECT [MQTT-3.1.0-1].
  if (!connection.isConnected) {
    throw new ProtocolViolation(`${packet.cmd.toUpperCase()} before CONNECT`);
  }
  switch (packet.cmd) {
    case 'publish':
      return handlePublish(connection, packet);
    case 'puback':
      return handlePuback(connection, packet);
    case 'pubrec':
      return handlePubrec(connection, packet);
    case 'pubrel':
      return handlePubrel(connection, packet);
    case 'pubcomp':
      return handlePubcomp(connection, packet);
    case 'subscribe':
      return handleSubscribe(connection, packet);
    case 'unsubscribe':
      return handleUnsubscribe(connection, packet);
    case 'pingreq':
      return handlePingreq(connection);
    case 'disconnect':
      return handleDisconnect(connection, packet);
    default:
      // CONNACK, SUBACK, UNSUBACK and PINGRESP only ever travel from server to client; AUTH is not
      // offered (a CONNECT asking for it was refused), so one arriving is a Protocol Error (MQTT 5.0 4.12).
      throw new ProtocolViolation(`a client may not send ${packet.cmd.toUpperCase()}`);
  }
}
