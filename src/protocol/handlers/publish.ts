import type { IPublishPacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { Connection } from '../connection.js';
import { topicOverLimits } from '../limits.js';

/**
 * PUBLISH from a client. The message is routed and stored at once; PUBACK/PUBREC follow only once
 * it is in every matching persistent session's queue (write-ahead), and in arrival order.
 */
export async function handlePublish(connection: Connection, packet: IPublishPacket): Promise<void> {
  const { topic, qos } = packet;
  if (!isValidTopicName(topic)) throw new ProtocolViolation(`invalid topic name ${JSON.stringify(topic)}`);
  const overLimits = topicOverLimits(topic, connection.context.options);
  if (overLimits) throw new ProtocolViolation(`PUBLISH refused: ${overLimits}`);
  // DUP must be 0 for QoS 0 [MQTT-3.3.1-2].
  if (qos === 0 && packet.dup) throw new ProtocolViolation('DUP set on a QoS 0 PUBLISH');
  const { session, inbound } = connection.requireLink();
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const message = { topic, payload, qos };
  const { distributor } = connection.context;
  const packetId = packet.messageId!;

  if (!connection.context.access.canPublish(session.clientId, session.owner, topic)) {
    refused(connection, topic);
    // 3.1.1 has no way to say no to a PUBLISH: it is acknowledged as usual and dropped [MQTT-3.3.5-2].
    // A PUBREL for it later finds no packet id held and still gets PUBCOMP.
    if (qos > 0) connection.reply(Promise.resolve(), () => connection.send({ cmd: qos === 1 ? 'puback' : 'pubrec', messageId: packetId }));
    return;
  }

  if (qos === 2 && !inbound.claim(packetId)) {
    // Already received and not released: acknowledge again, deliver nothing again [MQTT-4.3.3-2].
    connection.reply(Promise.resolve(), () => connection.send({ cmd: 'pubrec', messageId: packetId }));
    return;
  }
  const publication = distributor.route(message, {
    retain: packet.retain,
    ...(qos === 2 ? { inbound: { session, packetId } } : {}),
  });
  if (qos === 2) session.track(publication.stored);
  const acknowledgement = qos === 1 ? 'puback' : qos === 2 ? 'pubrec' : undefined;
  connection.reply(
    publication.stored,
    async () => {
      await publication.deliver();
      if (acknowledgement) connection.send({ cmd: acknowledgement, messageId: packetId });
    },
    () => {
      if (qos === 2) inbound.abandon(packetId);
    },
    payload.length,
  );
}

/** The topic last logged as refused per connection, and when: one warning per burst, not per message. */
const lastRefusal = new WeakMap<Connection, { topic: string; at: number }>();
const REFUSAL_LOG_INTERVAL_MS = 60_000;

function refused(connection: Connection, topic: string): void {
  connection.context.counters.publishesRefused++;
  const last = lastRefusal.get(connection);
  const now = Date.now();
  if (last && last.topic === topic && now - last.at < REFUSAL_LOG_INTERVAL_MS) return;
  lastRefusal.set(connection, { topic, at: now });
  connection.context.log.warn(`${connection.describe()}: PUBLISH on ${JSON.stringify(topic)} refused by the ACL (dropped, still acknowledged)`);
}
