/**
 * Limits a connection enforces against what a client sends, and the counters of what they refused.
 * The values come from BrokerOptions (validated there); the checks are here so every handler
 * applies them the same way.
 */

import type { ByteBudget } from '../session/byte-budget.js';

export interface TopicLimits {
  /** UTF-8 bytes of a topic name or filter. */
  maxTopicLength: number;
  /** Levels (`/`-separated parts) of a topic name or filter. */
  maxTopicLevels: number;
}

/** What one client may have waiting unsent while the broker-wide budget is over. */
export const UNSENT_SHARE = 64 * 1024;

/**
 * The packet one connection has underway, as the limits see it: its bytes counted in the broker's
 * budget, and its time (packet_timeout_ms) from its first byte, keepalive 0 or not. The clock
 * stops while the connection is not read: then it is the broker that holds the packet up.
 */
export class ArrivingPacket {
  readonly #budget: ByteBudget;
  readonly #timeoutMs: number;
  readonly #onTimeout: () => void;
  /** Bytes of the packet underway the parser holds, counted in the budget. */
  #held = 0;
  #timer: NodeJS.Timeout | undefined;
  #paused = false;

  constructor(budget: ByteBudget, timeoutMs: number, onTimeout: () => void) {
    this.#budget = budget;
    this.#timeoutMs = timeoutMs;
    this.#onTimeout = onTimeout;
  }

  /**
   * After a read: the parser holds `held` bytes, `underway` says whether a packet has begun and is
   * not complete, `newPacket` whether that is another one than before the read (one completed
   * meanwhile). false, having taken nothing, when its bytes would take the budget over.
   */
  update(held: number, underway: boolean, newPacket: boolean): boolean {
    const more = held - this.#held;
    if (more > 0 && !this.#budget.tryTake(more)) return false;
    if (more < 0) this.#budget.give(-more);
    this.#held = held;
    if (!underway) this.#stopClock();
    else if (newPacket || this.#timer === undefined) this.#startClock();
    return true;
  }

  /** The connection is not read for now. */
  pause(): void {
    this.#paused = true;
    this.#stopClock();
  }

  /** It is read again: a packet underway gets its whole time again. */
  resume(underway: boolean): void {
    this.#paused = false;
    if (underway) this.#startClock();
  }

  /** The connection is closed: its bytes go back to the budget. */
  release(): void {
    this.#stopClock();
    this.#budget.give(this.#held);
    this.#held = 0;
  }

  #startClock(): void {
    if (this.#paused) return;
    if (this.#timer) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#onTimeout();
    }, this.#timeoutMs);
  }

  #stopClock(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

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
  /** Messages not sent to an MQTT 5 client because their PUBLISH was over its Maximum Packet Size [MQTT-3.1.2-25]. */
  publishesOverClientMaximum: number;
}

export function newCounters(): BrokerCounters {
  return { connectionsRefused: 0, qos0Dropped: 0, packetsTooLarge: 0, publishesRefused: 0, publishesOverClientMaximum: 0 };
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
