import type { IPublishPacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isValidTopicName } from '../../routing/topic.js';
import type { Publication, PublicationOutcome } from '../../session/distributor.js';
import type { InboundFlow } from '../../session/inbound-flow.js';
import type { Message, QoS } from '../../store/repository.js';
import type { Connection } from '../connection.js';
import { topicOverLimits } from '../limits.js';
import { messagePropertiesOf } from '../message-properties.js';
import { Reason, type ReasonCode } from '../reason-codes.js';
import { Reply } from '../reply-queue.js';

/**
 * PUBLISH from a client. The message is routed and stored at once; PUBACK/PUBREC follow only once
 * it is in every matching persistent session's queue (write-ahead), and in arrival order. An
 * MQTT 5 client learns from their reason code what became of it. Synchronous: what waits is
 * queued as a reply, so the packets behind it in the same socket read are handled at once, not
 * one microtask (and one promise) later each.
 */
export function handlePublish(connection: Connection, packet: IPublishPacket): void {
  const { qos } = packet;
  const properties = packet.properties;
  const mqtt5 = connection.mqtt5;
  // MQTT 5: a Topic Alias sets or stands for the topic [MQTT-3.3.2-12].
  const topic = mqtt5 ? mqtt5.resolveTopic(packet.topic, properties?.topicAlias) : packet.topic;
  if (!isValidTopicName(topic)) throw new ProtocolViolation(`invalid topic name ${JSON.stringify(topic)}`, Reason.TOPIC_NAME_INVALID);
  const overLimits = topicOverLimits(topic, connection.context.options);
  if (overLimits) throw new ProtocolViolation(`PUBLISH refused: ${overLimits}`, Reason.TOPIC_NAME_INVALID);
  // DUP must be 0 for QoS 0 [MQTT-3.3.1-2].
  if (qos === 0 && packet.dup) throw new ProtocolViolation('DUP set on a QoS 0 PUBLISH');
  // A client's PUBLISH carries no Subscription Identifier [MQTT-3.3.4-6].
  if (properties?.subscriptionIdentifier !== undefined) throw new ProtocolViolation('PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]');
  if (qos > connection.context.options.maxQos) {
    throw new ProtocolViolation(`PUBLISH at QoS ${qos}, above the broker's Maximum QoS [MQTT-3.2.2-11]`, Reason.QOS_NOT_SUPPORTED);
  }
  const { session, inbound } = connection.requireLink();
  const packetId = packet.messageId!;
  const duplicate = qos === 2 && inbound.holds(packetId);
  if (qos > 0 && !duplicate && connection.overReceiveMaximum(inbound.unreleased)) {
    throw new ProtocolViolation('more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum [MQTT-3.3.4-7] (MQTT 5.0 4.9)', Reason.RECEIVE_MAXIMUM_EXCEEDED);
  }
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  if (qos === 1) connection.qos1Received();

  const messageProperties = mqtt5 ? messagePropertiesOf(properties, payload, Date.now()) : undefined;
  if (messageProperties === 'payload-format-invalid') {
    // Not routed (MQTT 5.0 3.3.2.3.2: the receiver may check it); QoS 0 has nothing to say it with.
    acknowledgeInTurn(connection, qos, packetId, Reason.PAYLOAD_FORMAT_INVALID, 'the payload is not UTF-8, as its Payload Format Indicator says');
    return;
  }
  const message: Message = { topic, payload, qos };
  if (messageProperties) message.properties = messageProperties;
  const { distributor } = connection.context;

  if (!connection.context.access.canPublish(session.clientId, session.owner, topic)) {
    refused(connection, topic);
    // 3.1.1 has no way to say no to a PUBLISH: it is acknowledged as usual and dropped [MQTT-3.3.5-2];
    // MQTT 5 says 0x87. A PUBREL for it later finds no packet id held and still gets PUBCOMP.
    acknowledgeInTurn(connection, qos, packetId, Reason.NOT_AUTHORIZED, `not authorized to publish on ${JSON.stringify(topic)}`);
    return;
  }

  if (qos === 2 && !inbound.claim(packetId)) {
    // Already received and not released: acknowledge again, deliver nothing again [MQTT-4.3.3-2].
    acknowledgeInTurn(connection, qos, packetId, Reason.SUCCESS);
    return;
  }
  const publication = distributor.route(message, {
    retain: packet.retain,
    origin: session.clientId,
    ...(qos === 2 ? { inbound: { session, packetId } } : {}),
  });
  if (qos === 2) session.track(publication.stored);
  connection.replyWith(publication.stored, new PublishReply(connection, publication, inbound, qos, packetId, payload.length));
}

/**
 * What follows a routed PUBLISH once its durable write is done: the message goes to clean and QoS
 * 0 subscribers (Publication.deliver), then the publisher hears PUBACK or PUBREC with what became
 * of it. One object per message, in the connection's reply queue.
 */
class PublishReply extends Reply<void> {
  constructor(
    readonly connection: Connection,
    readonly publication: Publication,
    readonly inbound: InboundFlow,
    readonly qos: QoS,
    readonly packetId: number,
    heldBytes: number,
  ) {
    super(heldBytes);
  }

  /** Synchronous unless clean subscribers had to be written to: no promise per message then. */
  send(): void | Promise<void> {
    const outcome = this.publication.deliver();
    return outcome instanceof Promise ? outcome.then((settled) => this.#answer(settled)) : this.#answer(outcome);
  }

  /** Not stored: no acknowledgement; the packet id is free again (the connection closes). */
  override failed(): void {
    if (this.qos === 1) this.connection.qos1Acknowledged();
    if (this.qos === 2) this.inbound.abandon(this.packetId);
  }

  #answer(outcome: PublicationOutcome): void {
    const { connection, inbound, qos, packetId } = this;
    const reason = reasonOf(outcome);
    // A PUBREC of 0x80 or more ends the exchange: no PUBREL comes for that packet id [MQTT-4.3.3-4].
    if (qos === 2 && reason >= 0x80) connection.background(inbound.release(packetId));
    acknowledgePublish(connection, qos, packetId, reason);
  }
}

/**
 * A PUBLISH answered without being routed: its acknowledgement still waits in the reply queue for
 * those of the PUBLISHes before it. Apart from handlePublish, so that its closure is made only here.
 */
function acknowledgeInTurn(connection: Connection, qos: QoS, packetId: number, reason: ReasonCode, text?: string): void {
  connection.reply(Promise.resolve(), () => acknowledgePublish(connection, qos, packetId, reason, text));
}

/** PUBACK for QoS 1, PUBREC for QoS 2 (QoS 0 has none), with `reason` for an MQTT 5 client. */
function acknowledgePublish(connection: Connection, qos: QoS, packetId: number, reason: ReasonCode, text?: string): void {
  if (qos === 0) return;
  if (qos === 1) connection.qos1Acknowledged();
  connection.acknowledge(qos === 1 ? 'puback' : 'pubrec', packetId, reason, text);
}

function reasonOf(outcome: PublicationOutcome): ReasonCode {
  switch (outcome) {
    case 'no-subscribers':
      return Reason.NO_MATCHING_SUBSCRIBERS;
    case 'quota-exceeded':
      return Reason.QUOTA_EXCEEDED;
    default:
      return Reason.SUCCESS;
  }
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
