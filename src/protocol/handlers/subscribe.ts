import type { ISubscribePacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isSharedFilter, isValidTopicFilter, parseSharedFilter } from '../../routing/topic.js';
import type { QoS, Subscription } from '../../store/repository.js';
import type { Connection } from '../connection.js';
import { topicOverLimits } from '../limits.js';
import { Reason, type ReasonCode } from '../reason-codes.js';

/** 3.1.1's one refusal code in SUBACK. */
const REJECTED = 0x80;

/**
 * SUBSCRIBE: valid filters are stored and routed, invalid ones get 0x80 [MQTT-3.9.3-2]; SUBACK
 * carries one code per filter in order [MQTT-3.8.4-5]; then retained messages follow with RETAIN=1
 * [MQTT-3.3.1-8]. A subscription to a filter already held replaces it [MQTT-3.8.4-3].
 * Filters over max_topic_length/levels, and new filters beyond max_subscriptions_per_client
 * (replacing one held does not count), get 0x80 too, as do filters the ACL does not let the
 * session's owner subscribe to and new filters beyond the broker-wide subscription budget.
 * MQTT 5 says which of these it was (0x8F, 0x97, 0x87), keeps the subscription options and
 * identifier with the subscription, and sends retained messages as Retain Handling asks.
 */
export async function handleSubscribe(connection: Connection, packet: ISubscribePacket): Promise<void> {
  const { session } = connection.requireLink();
  // mqtt-packet passes a SUBSCRIBE holding just a packet id (found by the fuzz suite).
  if (packet.subscriptions.length === 0) throw new ProtocolViolation('SUBSCRIBE without topic filters [MQTT-3.8.3-3]');
  const identifier = packet.properties?.subscriptionIdentifier as number | undefined;
  if (identifier === 0) throw new ProtocolViolation('Subscription Identifier 0 (MQTT 5.0 3.8.2.1.2)');
  const v5 = connection.protocolVersion === 5;
  const { sessions, distributor } = connection.context;
  // Earlier PUBLISHes are routed already; let their acks go first so replies stay in order.
  await connection.repliesSent();
  const granted: number[] = [];
  const accepted = new Map<string, Subscription>();
  const { options, access } = connection.context;
  let held = session.subscriptions.size;
  const refuse = (reason: ReasonCode) => granted.push(v5 ? reason : REJECTED);
  for (const { topic, qos, nl, rap, rh } of packet.subscriptions) {
    const isNew = !session.subscriptions.has(topic) && !accepted.has(topic);
    // A shared subscription `$share/{group}/{filter}`: the ACL judges its filter, as for any other.
    const shared = parseSharedFilter(topic);
    // No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4] (3.1.1 has no No Local;
    // its bridge bit sets it, and for a shared subscription is ignored).
    if (v5 && nl && isSharedFilter(topic)) throw new ProtocolViolation('No Local on a shared subscription [MQTT-3.8.3-4]');
    if (!isValidTopicFilter(topic) || topicOverLimits(topic, options) || (isSharedFilter(topic) && !shared)) {
      refuse(Reason.TOPIC_FILTER_INVALID);
    } else if (!access.canSubscribe(session.clientId, session.owner, shared?.filter ?? topic)) {
      refuse(Reason.NOT_AUTHORIZED);
    } else if (isNew && held >= options.maxSubscriptionsPerClient) {
      refuse(Reason.QUOTA_EXCEEDED);
    } else {
      if (isNew) held++;
      // Granted at most the broker's Maximum QoS, whatever was asked [MQTT-3.2.2-10].
      const grantedQos = Math.min(qos, options.maxQos) as QoS;
      const subscription: Subscription = { filter: topic, qos: grantedQos };
      // 3.1.1 clients with the bridge bit get No Local and Retain As Published (mqtt-packet sets them, as Mosquitto does).
      if (nl && !shared) subscription.noLocal = true;
      if (rap) subscription.retainAsPublished = true;
      if (rh) subscription.retainHandling = rh as 1 | 2;
      if (identifier !== undefined) subscription.identifier = identifier;
      accepted.set(topic, subscription);
      granted.push(grantedQos);
    }
  }
  // Whether each accepted filter was new before this SUBSCRIBE (Retain Handling 1).
  const existed = new Set([...accepted.keys()].filter((filter) => session.subscriptions.has(filter)));
  let subscriptions = [...accepted.values()];
  if (subscriptions.length > 0) {
    const subscribed = await sessions.subscribe(session, subscriptions, connection);
    // The session was taken over or discarded meanwhile; this connection is closed already.
    if (!subscribed) return;
    if (subscribed.accepted.length < subscriptions.length) {
      // The broker-wide subscription budget took only some: the others are refused too.
      const stored = new Set(subscribed.accepted.map(({ filter }) => filter));
      packet.subscriptions.forEach(({ topic }, index) => {
        if (!stored.has(topic) && granted[index]! < REJECTED) granted[index] = v5 ? Reason.QUOTA_EXCEEDED : REJECTED;
      });
      subscriptions = subscribed.accepted;
    }
  }
  connection.send({ cmd: 'suback', messageId: packet.messageId!, granted });
  for (const subscription of subscriptions) {
    // Retained messages are sent for a new non-shared subscription only (MQTT 5.0 3.3.1.3, 4.8.2).
    if (isSharedFilter(subscription.filter)) continue;
    // Retain Handling: 0 send retained messages, 1 only for a new subscription, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
    const handling = subscription.retainHandling ?? 0;
    if (handling === 2 || (handling === 1 && existed.has(subscription.filter))) continue;
    await distributor.sendRetained(session, subscription.filter, subscription.qos, subscription.identifier);
  }
}
