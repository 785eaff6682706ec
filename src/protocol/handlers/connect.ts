import { randomUUID } from 'node:crypto';
import type { IConnectPacket } from 'mqtt-packet';
import { NOT_AUTHORIZED, SERVER_UNAVAILABLE } from '../../auth/access-control.js';
import { BrokerError, ErrorCodes, errorMessage, ProtocolViolation } from '../../errors.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { QoS } from '../../store/repository.js';
import type { Connection, Will } from '../connection.js';
import { topicOverLimits } from '../limits.js';

/** CONNACK return codes (MQTT 3.1.1 table 3.1); the refusals of authentication come with it. */
const UNACCEPTABLE_PROTOCOL_VERSION = 1;
const IDENTIFIER_REJECTED = 2;

/**
 * CONNECT, as a pipeline of named steps: check the protocol → settle the client id → authenticate
 * → keep the will → start (or resume) the session → CONNACK → re-send what was in flight and drain
 * the queue.
 */
export async function handleConnect(connection: Connection, packet: IConnectPacket): Promise<void> {
  connection.beginConnect();

  const version = checkProtocol(connection, packet);
  if (version === undefined) return;
  connection.useProtocolVersion(version);
  // A password needs a user name [MQTT-3.1.2-22].
  if (packet.password !== undefined && packet.username === undefined) {
    throw new ProtocolViolation('password without user name');
  }

  const clean = packet.clean !== false;
  const clientId = settleClientId(connection, packet.clientId, clean, version);
  if (clientId === undefined) return;

  const user = await authenticate(connection, packet);
  if (user === REFUSED) return;

  // Checked now (a bad will is a protocol violation), kept only once the session has started: a
  // CONNECT that is refused, or whose socket goes while it is handled, publishes no will.
  const will = willOf(connection, packet, clientId, user);
  connection.startKeepalive(packet.keepalive ?? 0);

  const { sessions, log } = connection.context;
  let started;
  try {
    started = await sessions.start(clientId, clean, connection, user);
  } catch (error) {
    if (error instanceof BrokerError && error.code === ErrorCodes.SESSION_OWNED_BY_OTHER) {
      // Another user's session, live or stored: refused before anything of it is touched.
      connection.refuse(NOT_AUTHORIZED, error.message);
      return;
    }
    if (error instanceof BrokerError && error.code === ErrorCodes.SESSION_LIMIT_REACHED) {
      // The broker-wide max_sessions: nothing was touched; 0x03, the service cannot take it now.
      connection.refuse(SERVER_UNAVAILABLE, error.message);
      return;
    }
    log.error(`client ${JSON.stringify(clientId)}: session could not start: ${errorMessage(error)}`);
    connection.refuse(SERVER_UNAVAILABLE, 'session could not start');
    return;
  }
  const { session, link, sessionPresent } = started;
  if (!connection.accept(link, will, sessionPresent)) {
    // The socket went away while the session started; hand it straight back.
    await sessions.close(session, connection);
    return;
  }
  log.info(`client ${JSON.stringify(clientId)} connected from ${connection.remote} (clean=${clean}, present=${sessionPresent})`);
  await session.resume(link);
}

function checkProtocol(connection: Connection, packet: IConnectPacket): 3 | 4 | undefined {
  const { protocolId, protocolVersion } = packet;
  if (protocolId === 'MQTT' && protocolVersion === 4) return 4;
  if (protocolId === 'MQIsdp' && protocolVersion === 3) return 3;
  // A level we do not speak (MQTT 5 among them, for now) is refused with 0x01 [MQTT-3.1.2-2].
  connection.refuse(UNACCEPTABLE_PROTOCOL_VERSION, `protocol ${protocolId} level ${protocolVersion} is not supported`);
  return undefined;
}

function settleClientId(connection: Connection, requested: string, clean: boolean, version: 3 | 4): string | undefined {
  if (requested.length === 0 && version === 3) {
    // MQTT 3.1 has no server-assigned ids: its client id is 1 to 23 characters, else 0x02. Longer
    // ids are accepted, as Mosquitto accepts them.
    connection.refuse(IDENTIFIER_REJECTED, 'empty client id (MQTT 3.1 requires one)');
    return undefined;
  }
  if (requested.length === 0) {
    // A zero-length id is only allowed with CleanSession=1; the server assigns one [MQTT-3.1.3-6] [MQTT-3.1.3-8].
    if (!clean) {
      connection.refuse(IDENTIFIER_REJECTED, 'empty client id with CleanSession=0');
      return undefined;
    }
    return `auto-${randomUUID()}`;
  }
  // No U+0000 here: the strict parser closes the connection first [MQTT-1.5.3-2].
  return requested;
}

const REFUSED = Symbol('refused');

/**
 * Who the client is: a verified client certificate, a user name checked against the password
 * file, or anonymous (allowed on loopback listeners and where allow_anonymous is on). A refusal is
 * CONNACK 0x04 (bad user name or password) or 0x05 (not authorized) and the close [MQTT-3.2.2-5].
 */
async function authenticate(connection: Connection, packet: IConnectPacket): Promise<string | undefined | typeof REFUSED> {
  const password = typeof packet.password === 'string' ? Buffer.from(packet.password) : packet.password;
  const result = await connection.context.access.authenticate(
    { username: packet.username, password, certificateUser: connection.certificateUser, abandoned: () => connection.isClosed },
    connection.listener,
  );
  // The socket may have gone while the password was checked.
  if (connection.isClosed) return REFUSED;
  if (!result.accepted) {
    connection.refuse(result.returnCode, result.reason);
    return REFUSED;
  }
  return result.user;
}

function willOf(connection: Connection, packet: IConnectPacket, clientId: string, user: string | undefined): Will | undefined {
  const will = packet.will;
  if (!will) return undefined;
  if ((will.qos ?? 0) > 2) throw new ProtocolViolation('will QoS 3 [MQTT-3.1.2-14]');
  if (!isValidTopicName(will.topic)) throw new ProtocolViolation(`invalid will topic ${JSON.stringify(will.topic)}`);
  const overLimits = topicOverLimits(will.topic, connection.context.options);
  if (overLimits) throw new ProtocolViolation(`will refused: ${overLimits}`);
  const payload = typeof will.payload === 'string' ? Buffer.from(will.payload) : will.payload;
  return { message: { topic: will.topic, payload, qos: (will.qos ?? 0) as QoS }, retain: will.retain === true, clientId, user };
}
