import type { ISubscribePacket } from 'mqtt-packet';
import { isValidTopicFilter } from '../../routing/topic.js';
import type { QoS, Subscription } from '../../store/repository.js';
import type { Connection } from '../connection.js';
import { sessionOf } from '../dispatcher.js';

const REJECTED = 0x80;

/**
 * SUBSCRIBE: valid filters are stored and routed, invalid ones get 0x80 [MQTT-3.9.3-2]; SUBACK
 * carries one code per filter in order [MQTT-3.8.4-5]; then retained messages follow with RETAIN=1
 * [MQTT-3.3.1-8]. A subscription to a filter already held replaces it [MQTT-3.8.4-3].
 * Filters the ACL does not let the session's owner subscribe to get 0x80 too.
 */
export async function handleSubscribe(connection: Connection, packet: ISubscribePacket): Promise<void> {
  const session = sessionOf(connection);
  const { sessions, distributor } = connection.context;
  // Earlier PUBLISHes are routed already; let their acks go first so replies stay in order.
  await connection.repliesSent();
  const granted: number[] = [];
  const accepted = new Map<string, QoS>();
  const { access } = connection.context;
  for (const { topic, qos } of packet.subscriptions) {
    if (isValidTopicFilter(topic) && access.canSubscribe(session.clientId, session.owner, topic)) {
      accepted.set(topic, qos);
      granted.push(qos);
    } else {
      granted.push(REJECTED);
    }
  }
  const subscriptions: Subscription[] = [...accepted].map(([filter, qos]) => ({ filter, qos }));
  if (subscriptions.length > 0) await sessions.subscribe(session, subscriptions);
  connection.send({ cmd: 'suback', messageId: packet.messageId!, granted });
  for (const { filter, qos } of subscriptions) await distributor.sendRetained(session, filter, qos);
}
