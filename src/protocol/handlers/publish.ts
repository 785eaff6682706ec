import type { IPublishPacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { Connection } from '../connection.js';
import { sessionOf } from '../dispatcher.js';

/**
 * PUBLISH from a client. The message is fanned out and stored first; PUBACK/PUBREC follow only
 * once it is in every matching persistent session's queue (write-ahead).
 */
export async function handlePublish(connection: Connection, packet: IPublishPacket): Promise<void> {
  const { topic, qos } = packet;
  if (!isValidTopicName(topic)) throw new ProtocolViolation(`invalid topic name ${JSON.stringify(topic)}`);
  // DUP must be 0 for QoS 0 [MQTT-3.3.1-2].
  if (qos === 0 && packet.dup) throw new ProtocolViolation('DUP set on a QoS 0 PUBLISH');
  const session = sessionOf(connection);
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const message = { topic, payload, qos };
  const { distributor } = connection.context;
  const packetId = packet.messageId!;

  if (qos === 0) {
    connection.reply(distributor.publish(message, { retain: packet.retain }), () => {});
  } else if (qos === 1) {
    connection.reply(distributor.publish(message, { retain: packet.retain }), () =>
      connection.send({ cmd: 'puback', messageId: packetId }),
    );
  } else if (!session.claimInbound(packetId)) {
    // Already received and not released: acknowledge again, deliver nothing again [MQTT-4.3.3-2].
    connection.reply(Promise.resolve(), () => connection.send({ cmd: 'pubrec', messageId: packetId }));
  } else {
    connection.reply(
      session.track(distributor.publish(message, { retain: packet.retain, inbound: { session, packetId } })),
      () => connection.send({ cmd: 'pubrec', messageId: packetId }),
      () => session.abandonInbound(packetId),
    );
  }
}
