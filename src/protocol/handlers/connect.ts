import { randomUUID } from 'node:crypto';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { BRIDGE_CLIENT_ID_PREFIX, isBridgeClientId } from '../../session/bridge-client-id.js';
import { BrokerError, ErrorCodes, errorMessage, ProtocolViolation } from '../../errors.js';
import { LogCauses, summaryOf } from '../../log-summary.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { QoS } from '../../store/repository.js';
import type { Will } from '../broker-context.js';
import type { Connection, ProtocolVersion } from '../connection.js';
import { topicOverLimits } from '../limits.js';
import { messagePropertiesOf } from '../message-properties.js';
import { Reason, reasonOfV3Connack } from '../reason-codes.js';

/** Topic Alias Maximum, Receive Maximum: 65,535 is what their absence means, so it is not announced. */
const UNANNOUNCED = 65_535;

/**
 * CONNECT, as a pipeline of named steps: check the protocol → settle the client id → authenticate
 * → keep the will → start (or resume) the session → CONNACK → re-send what was in flight and drain
 * the queue.
 */
export async function handleConnect(connection: Connection, packet: IConnectPacket): Promise<void> {
  connection.beginConnect();

  const version = checkProtocol(connection, packet);
  if (version === undefined) return;
  const properties = packet.properties ?? {};
  connection.useProtocolVersion(version, properties);
  // A password needs a user name [MQTT-3.1.2-22] (MQTT 5 lets a password come alone).
  if (version !== 5 && packet.password !== undefined && packet.username === undefined) {
    throw new ProtocolViolation('password without user name');
  }
  if (version === 5) {
    // Enhanced authentication (AUTH) is not offered: a method asked for is refused [MQTT-4.12.0-1].
    if (properties.authenticationMethod !== undefined) {
      connection.refuse(Reason.BAD_AUTHENTICATION_METHOD, `authentication method ${JSON.stringify(properties.authenticationMethod)} is not supported`);
      return;
    }
    // Receive Maximum and Maximum Packet Size of 0 are Protocol Errors (MQTT 5.0 3.1.2.11.3, 3.1.2.11.4).
    if (properties.receiveMaximum === 0) throw new ProtocolViolation('Receive Maximum 0');
    if (properties.maximumPacketSize === 0) throw new ProtocolViolation('Maximum Packet Size 0');
  }

  // Clean Start (MQTT 5) or CleanSession (3.1.1): discard any session the client had.
  const cleanStart = packet.clean !== false;
  // MQTT 5: the Session Expiry Interval decides whether the session outlives the connection (0,
  // its default, says it does not; more, that it does [MQTT-3.1.2-23]); 3.1.1: CleanSession=0 keeps it.
  const expiry = version === 5 ? (properties.sessionExpiryInterval ?? 0) : cleanStart ? 0 : undefined;
  const settled = settleClientId(connection, packet.clientId, cleanStart, version);
  if (settled === undefined) return;
  const { clientId, assigned } = settled;

  const user = await authenticate(connection, packet);
  if (user === REFUSED) return;

  // Checked now (a bad will is a protocol violation), kept only once the session has started: a
  // CONNECT that is refused, or whose socket goes while it is handled, publishes no will.
  const will = willOf(connection, packet, clientId, user);
  if (will === REFUSED) return;
  connection.startKeepalive(packet.keepalive ?? 0);

  const { sessions, log } = connection.context;
  let started;
  try {
    started = await sessions.start(clientId, { cleanStart, expiry }, connection, user);
  } catch (error) {
    if (error instanceof BrokerError && error.code === ErrorCodes.SESSION_OWNED_BY_OTHER) {
      // Another user's session, live or stored: refused before anything of it is touched.
      connection.refuse(Reason.NOT_AUTHORIZED, error.message);
      return;
    }
    if (error instanceof BrokerError && error.code === ErrorCodes.SESSION_LIMIT_REACHED) {
      // The broker-wide max_sessions: nothing was touched; 0x03 (MQTT 5: 0x97), the service cannot take it now.
      connection.refuse(version === 5 ? Reason.QUOTA_EXCEEDED : Reason.SERVER_UNAVAILABLE, error.message);
      return;
    }
    summaryOf(log).error(LogCauses.STORE_FAILURE, {
      message: `client ${JSON.stringify(clientId)}: session could not start: ${errorMessage(error)}`,
      fields: { clientId, address: connection.remote },
      source: connection.sourceAddress,
    });
    connection.refuse(Reason.SERVER_UNAVAILABLE, 'session could not start');
    return;
  }
  const { session, link, sessionPresent } = started;
  if (!connection.accept(link, will, sessionPresent, version === 5 ? connackProperties(connection, assigned ? clientId : undefined) : undefined)) {
    // The socket went away while the session started; hand it straight back.
    await sessions.close(session, connection);
    return;
  }
  // Who, from where, with what: the fields say it (clientId, address, listener, protocolVersion, clean, user, keepalive).
  log.info(`client ${JSON.stringify(clientId)} connected`, connection.logFields({ sessionPresent }));
  await session.resume(link);
}

/** What the broker tells an MQTT 5 client about itself in CONNACK (3.2.2.3); defaults are left out. */
function connackProperties(connection: Connection, assignedClientId: string | undefined): IConnackPacket['properties'] {
  const { receiveMaximum, maxPacketSize, topicAliasMaximum, maxQos } = connection.context.options;
  return {
    ...(receiveMaximum < UNANNOUNCED ? { receiveMaximum } : {}),
    ...(maxQos < 2 ? { maximumQoS: maxQos } : {}),
    maximumPacketSize: maxPacketSize,
    ...(topicAliasMaximum > 0 ? { topicAliasMaximum } : {}),
    // A client that sent an empty client id is told the one it got [MQTT-3.1.3-7].
    ...(assignedClientId === undefined ? {} : { assignedClientIdentifier: assignedClientId }),
    // Shared subscriptions are available: the property's default (1) says so.
  };
}

function checkProtocol(connection: Connection, packet: IConnectPacket): ProtocolVersion | undefined {
  const { protocolId, protocolVersion } = packet;
  if (protocolId === 'MQTT' && protocolVersion === 4) return 4;
  if (protocolId === 'MQTT' && protocolVersion === 5) return 5;
  if (protocolId === 'MQIsdp' && protocolVersion === 3) return 3;
  // A level we do not speak is refused with 0x01 [MQTT-3.1.2-2].
  connection.refuse(Reason.UNSUPPORTED_PROTOCOL_VERSION, `protocol ${protocolId} level ${protocolVersion} is not supported`);
  return undefined;
}

function settleClientId(
  connection: Connection,
  requested: string,
  cleanStart: boolean,
  version: ProtocolVersion,
): { clientId: string; assigned: boolean } | undefined {
  if (requested.length === 0 && version === 3) {
    // MQTT 3.1 has no server-assigned ids: its client id is 1 to 23 characters, else 0x02. Longer
    // ids are accepted, as Mosquitto accepts them.
    connection.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id (MQTT 3.1 requires one)');
    return undefined;
  }
  if (requested.length === 0) {
    // 3.1.1: a zero-length id is only allowed with CleanSession=1 [MQTT-3.1.3-8]. MQTT 5: with
    // either Clean Start; the id assigned is returned in CONNACK [MQTT-3.1.3-6] [MQTT-3.1.3-7].
    if (!cleanStart && version === 4) {
      connection.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id with CleanSession=0');
      return undefined;
    }
    return { clientId: `auto-${randomUUID()}`, assigned: true };
  }
  if (isBridgeClientId(requested)) {
    // The local sessions of bridges: a client taking one over would steal a bridge's out queue.
    connection.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, `client ids starting with ${BRIDGE_CLIENT_ID_PREFIX} are reserved for bridges`);
    return undefined;
  }
  // No U+0000 here: the strict parser closes the connection first [MQTT-1.5.3-2].
  return { clientId: requested, assigned: false };
}

const REFUSED = Symbol('refused');

/**
 * Who the client is: a verified client certificate, a user name checked against the password
 * file, or anonymous (allowed on loopback listeners and where allow_anonymous is on). A refusal is
 * CONNACK 0x04 (bad user name or password) or 0x05 (not authorized) (MQTT 5: 0x86, 0x87) and the
 * close [MQTT-3.2.2-5].
 */
async function authenticate(connection: Connection, packet: IConnectPacket): Promise<string | undefined | typeof REFUSED> {
  const password = typeof packet.password === 'string' ? Buffer.from(packet.password) : packet.password;
  const result = await connection.context.access.authenticate(
    {
      username: packet.username,
      password,
      certificateUser: connection.certificateUser,
      abandoned: () => connection.isClosed,
      source: connection.sourceAddress,
    },
    connection.listener,
  );
  // The socket may have gone while the password was checked.
  if (connection.isClosed) return REFUSED;
  if (!result.accepted) {
    connection.refuse(reasonOfV3Connack(result.returnCode), result.reason);
    return REFUSED;
  }
  return result.user;
}

function willOf(connection: Connection, packet: IConnectPacket, clientId: string, user: string | undefined): Will | undefined | typeof REFUSED {
  const will = packet.will;
  if (!will) return undefined;
  if ((will.qos ?? 0) > 2) throw new ProtocolViolation('will QoS 3 [MQTT-3.1.2-14]');
  if (!isValidTopicName(will.topic)) throw new ProtocolViolation(`invalid will topic ${JSON.stringify(will.topic)}`);
  const overLimits = topicOverLimits(will.topic, connection.context.options);
  if (overLimits) throw new ProtocolViolation(`will refused: ${overLimits}`);
  const qos = (will.qos ?? 0) as QoS;
  if (qos > connection.context.options.maxQos) {
    // A will at a QoS above Maximum QoS is refused with 0x9B [MQTT-3.2.2-12].
    connection.refuse(Reason.QOS_NOT_SUPPORTED, `will QoS ${qos} is above the broker's maximum QoS`);
    return REFUSED;
  }
  const payload = typeof will.payload === 'string' ? Buffer.from(will.payload) : will.payload;
  const { willDelayInterval, messageExpiryInterval, ...willProperties } = will.properties ?? {};
  // The will's expiry counts from when it is published, not from now (Will.expirySeconds).
  const properties = messagePropertiesOf(willProperties, payload, 0);
  if (properties === 'payload-format-invalid') throw new ProtocolViolation('will payload is not UTF-8 though its Payload Format Indicator says so', Reason.PAYLOAD_FORMAT_INVALID);
  return {
    message: { topic: will.topic, payload, qos, ...(properties ? { properties } : {}) },
    retain: will.retain === true,
    ...(willDelayInterval ? { delaySeconds: willDelayInterval } : {}),
    ...(messageExpiryInterval === undefined ? {} : { expirySeconds: messageExpiryInterval }),
    clientId,
    user,
  };
}
