import type { ISubscribePacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isValidTopicFilter } from '../../routing/topic.js';
import type { QoS, Subscription } from '../../store/repository.js';
import type { Connection } from '../connection.js';
import { topicOverLimits } from '../limits.js';

const REJECTED = 0x80;

/**
 * SUBSCRIBE: valid filters are stored and routed, invalid ones get 0x80 [MQTT-3.9.3-2]; SUBACK
 * carries one code per filter in order [MQTT-3.8.4-5]; then retained messages follow with RETAIN=1
 * [MQTT-3.3.1-8]. A subscription to a filter already held replaces it [MQTT-3.8.4-3].
 * Filters over max_topic_length/levels, and new filters beyond max_subscriptions_per_client
 * (replacing one held does not count), get 0x80 too, as do filters the ACL does not let the
 * session's owner subscribe to and new filters beyond the broker-wide subscription budget.
 */
export async function handleSubscribe(connection: Connection, packet: ISubscribePacket): Promise<void> {
  const { session } = connection.requireLink();
  // mqtt-packet passes a SUBSCRIBE holding just a packet id (found by the fuzz suite).
  if (packet.subscriptions.length === 0) throw new ProtocolViolation('SUBSCRIBE without topic filters [MQTT-3.8.3-3]');
  const { sessions, distributor } = connection.context;
  // Earlier PUBLISHes are routed already; let their acks go first so replies stay in order.
  await connection.repliesSent();
  const granted: number[] = [];
  const accepted = new Map<string, QoS>();
  const { options, access } = connection.context;
  let held = session.subscriptions.size;
  for (const { topic, qos } of packet.subscriptions) {
    const isNew = !session.subscriptions.has(topic) && !accepted.has(topic);
    if (
      isValidTopicFilter(topic) &&
      !topicOverLimits(topic, options) &&
      access.canSubscribe(session.clientId, session.owner, topic) &&
      (!isNew || held < options.maxSubscriptionsPerClient)
    ) {
      if (isNew) held++;
      accepted.set(topic, qos);
      granted.push(qos);
    } else {
      granted.push(REJECTED);
    }
  }
  let subscriptions: Subscription[] = [...accepted].map(([filter, qos]) => ({ filter, qos }));
  if (subscriptions.length > 0) {
    const subscribed = await sessions.subscribe(session, subscriptions, connection);
    // The session was taken over or discarded meanwhile; this connection is closed already.
    if (!subscribed) return;
    if (subscribed.accepted.length < subscriptions.length) {
      // The broker-wide subscription budget took only some: the others get 0x80 too.
      const stored = new Set(subscribed.accepted.map(({ filter }) => filter));
      packet.subscriptions.forEach(({ topic }, index) => {
        if (!stored.has(topic)) granted[index] = REJECTED;
      });
      subscriptions = subscribed.accepted;
    }
  }
  connection.send({ cmd: 'suback', messageId: packet.messageId!, granted });
  for (const { filter, qos } of subscriptions) await distributor.sendRetained(session, filter, qos);
}
