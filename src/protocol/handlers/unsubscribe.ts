import type { IUnsubscribePacket } from 'mqtt-packet';
import { ProtocolViolation } from '../../errors.js';
import { isValidTopicFilter } from '../../routing/topic.js';
import type { Connection } from '../connection.js';
import { Reason } from '../reason-codes.js';

/**
 * UNSUBSCRIBE: stored, unrouted, then UNSUBACK, even for filters not subscribed [MQTT-3.10.4-5];
 * MQTT 5 says per filter whether there was one (0x00) or not (0x11) [MQTT-3.11.3-1].
 */
export async function handleUnsubscribe(connection: Connection, packet: IUnsubscribePacket): Promise<void> {
  const { session } = connection.requireLink();
  const filters = packet.unsubscriptions;
  if (filters.length === 0) throw new ProtocolViolation('UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]');
  for (const filter of filters) {
    if (!isValidTopicFilter(filter)) throw new ProtocolViolation(`invalid topic filter ${JSON.stringify(filter)}`, Reason.TOPIC_FILTER_INVALID);
  }
  await connection.repliesSent();
  const held = filters.filter((filter) => session.subscriptions.has(filter));
  const granted = filters.map((filter) => (session.subscriptions.has(filter) ? Reason.SUCCESS : Reason.NO_SUBSCRIPTION_EXISTED));
  if (held.length > 0 && !(await connection.context.sessions.unsubscribe(session, held, connection))) return;
  // `granted` is MQTT 5 only; the 3.1.1 encoder ignores it.
  connection.send({ cmd: 'unsuback', messageId: packet.messageId!, granted });
}
