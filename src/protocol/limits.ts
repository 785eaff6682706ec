/**
 * Limits a connection enforces against what a client sends, and the counters of what they refused.
 * The values come from BrokerOptions (validated there); the checks are here so every handler
 * applies them the same way.
 */

export interface TopicLimits {
  /** UTF-8 bytes of a topic name or filter. */
  maxTopicLength: number;
  /** Levels (`/`-separated parts) of a topic name or filter. */
  maxTopicLevels: number;
}

/**
 * Bytes a client's socket may hold unsent before QoS 0 deliveries to it are dropped: a subscriber
 * that does not read cannot make the broker buffer QoS 0 without bound. QoS 1/2 need no such mark,
 * the inflight window bounds them and the rest waits in the store.
 */
export const QOS0_HIGH_WATER = 1024 * 1024;

/** Events counted across all connections since start (`Broker.counters`). */
export interface BrokerCounters {
  /** Sockets closed at once because max_connections were open. */
  connectionsRefused: number;
  /** QoS 0 deliveries dropped because the subscriber's socket was not draining. */
  qos0Dropped: number;
  /** Connections closed because a packet's remaining length exceeded max_packet_size. */
  packetsTooLarge: number;
  /** PUBLISHes (and wills) the ACL refused: dropped, still acknowledged. */
  publishesRefused: number;
}

export function newCounters(): BrokerCounters {
  return { connectionsRefused: 0, qos0Dropped: 0, packetsTooLarge: 0, publishesRefused: 0 };
}

/** Why a topic name or filter is over the limits, or undefined when it is within them. */
export function topicOverLimits(topic: string, limits: TopicLimits): string | undefined {
  // Cheap bounds first: a string of n UTF-16 units has between n and 3n UTF-8 bytes.
  if (topic.length > limits.maxTopicLength || (topic.length * 3 > limits.maxTopicLength && Buffer.byteLength(topic) > limits.maxTopicLength)) {
    return `topic is longer than max_topic_length (${limits.maxTopicLength} bytes)`;
  }
  let levels = 1;
  for (let index = topic.indexOf('/'); index !== -1; index = topic.indexOf('/', index + 1)) {
    if (++levels > limits.maxTopicLevels) return `topic has more than max_topic_levels (${limits.maxTopicLevels}) levels`;
  }
  return undefined;
}
