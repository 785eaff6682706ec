import { randomUUID } from 'node:crypto';
import type { IConnectPacket } from 'mqtt-packet';
import { errorMessage, ProtocolViolation } from '../../errors.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { QoS } from '../../store/repository.js';
import type { Connection } from '../connection.js';

/** CONNACK return codes (MQTT 3.1.1 table 3.1). */
const ACCEPTED = 0;
const UNACCEPTABLE_PROTOCOL_VERSION = 1;
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;

/**
 * CONNECT, as a pipeline of named steps: check the protocol → settle the client id → keep the will
 * → start (or resume) the session → CONNACK → re-send what was in flight and drain the queue.
 */
export async function handleConnect(connection: Connection, packet: IConnectPacket): Promise<void> {
  // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
  if (connection.state !== 'awaiting-connect') throw new ProtocolViolation('second CONNECT');
  connection.state = 'connecting';

  const version = checkProtocol(connection, packet);
  if (version === undefined) return;
  connection.protocolVersion = version;
  // A password needs a user name [MQTT-3.1.2-22].
  if (packet.password !== undefined && packet.username === undefined) {
    throw new ProtocolViolation('password without user name');
  }

  const clean = packet.clean !== false;
  const clientId = settleClientId(connection, packet.clientId, clean);
  if (clientId === undefined) return;

  connection.will = willOf(packet);
  connection.startKeepalive(packet.keepalive ?? 0);

  const { sessions, log } = connection.context;
  let started;
  try {
    started = await sessions.start(clientId, clean, connection);
  } catch (error) {
    log.error(`client ${JSON.stringify(clientId)}: session could not start: ${errorMessage(error)}`);
    refuse(connection, SERVER_UNAVAILABLE, 'session could not start');
    return;
  }
  const { session, sessionPresent } = started;
  connection.session = session;
  if (connection.isClosed) {
    // The socket went away while the session started; hand it straight back.
    await sessions.close(session, connection);
    return;
  }
  connection.state = 'connected';
  connection.send({ cmd: 'connack', returnCode: ACCEPTED, sessionPresent });
  log.info(`client ${JSON.stringify(clientId)} connected from ${connection.remote} (clean=${clean}, present=${sessionPresent})`);
  await session.resume();
}

function checkProtocol(connection: Connection, packet: IConnectPacket): 3 | 4 | undefined {
  const { protocolId, protocolVersion } = packet;
  if (protocolId === 'MQTT' && protocolVersion === 4) return 4;
  if (protocolId === 'MQIsdp' && protocolVersion === 3) return 3;
  // A level we do not speak (MQTT 5 among them, for now) is refused with 0x01 [MQTT-3.1.2-2].
  refuse(connection, UNACCEPTABLE_PROTOCOL_VERSION, `protocol ${protocolId} level ${protocolVersion} is not supported`);
  return undefined;
}

function settleClientId(connection: Connection, requested: string, clean: boolean): string | undefined {
  if (requested.length === 0) {
    // A zero-length id is only allowed with CleanSession=1; the server assigns one [MQTT-3.1.3-6] [MQTT-3.1.3-8].
    if (!clean) {
      refuse(connection, IDENTIFIER_REJECTED, 'empty client id with CleanSession=0');
      return undefined;
    }
    return `auto-${randomUUID()}`;
  }
  // No U+0000 here: the strict parser closes the connection first [MQTT-1.5.3-2].
  return requested;
}

function willOf(packet: IConnectPacket): Connection['will'] {
  const will = packet.will;
  if (!will) return undefined;
  if ((will.qos ?? 0) > 2) throw new ProtocolViolation('will QoS 3 [MQTT-3.1.2-14]');
  if (!isValidTopicName(will.topic)) throw new ProtocolViolation(`invalid will topic ${JSON.stringify(will.topic)}`);
  const payload = typeof will.payload === 'string' ? Buffer.from(will.payload) : will.payload;
  return { message: { topic: will.topic, payload, qos: (will.qos ?? 0) as QoS }, retain: will.retain === true };
}

/** CONNACK with a refusal code, then close [MQTT-3.2.2-5]. */
function refuse(connection: Connection, returnCode: number, reason: string): void {
  connection.send({ cmd: 'connack', returnCode, sessionPresent: false });
  connection.context.log.warn(`${connection.describe()}: CONNECT refused: ${reason}`);
  connection.close(`CONNECT refused: ${reason}`);
}
