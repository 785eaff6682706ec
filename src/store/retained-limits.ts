/**
 * The limits on retained messages, across the whole broker. Payloads live on disk; what every
 * retained message costs in memory is its entry in the retained index (topic levels, QoS, size),
 * so the count bounds the memory, now and at every restart, and the bytes bound the disk.
 *
 * A retained message that would take the totals past either limit is refused: it is not retained,
 * and the topic's previous retained message is discarded as well, as the spec has the server do
 * for a QoS 0 retained message it chooses not to keep [MQTT-3.3.1-7]: a future subscriber then
 * gets no retained message on that topic rather than one older than the last one published.
 * The message itself is delivered to the current subscribers and acknowledged as usual. Clearing
 * (an empty retained payload, or broker-admin) always works. Refusals are counted in the store.
 */
export interface RetainedLimits {
  /** Retained messages in the store. */
  maxMessages: number;
  /** Their payload bytes. */
  maxBytes: number;
}

/**
 * Sized for a Raspberry Pi: the index of 100,000 retained messages takes some tens of MiB in
 * memory (README, memory budget), which a 512 MiB board can carry at every restart; 256 MiB of
 * payloads fit beside the system on the smallest card a Pi boots from, with room for LevelDB to
 * rewrite them while it compacts.
 */
export const DEFAULT_RETAINED_LIMITS: RetainedLimits = {
  maxMessages: 100_000,
  maxBytes: 256 * 1024 * 1024,
};

export interface RetainedStats {
  /** Retained messages stored. */
  messages: number;
  /** Their payload bytes. */
  bytes: number;
  /** Retained messages refused at the limits since the store was created. */
  refused: number;
}

export function emptyRetainedStats(): RetainedStats {
  return { messages: 0, bytes: 0, refused: 0 };
}

/**
 * A retained message of `size` bytes on a topic whose current one has `previous` bytes (undefined:
 * none): the previous one leaves the totals either way; the new one enters them if the limits
 * allow, else it is counted as refused. true: keep the new one.
 */
export function admitRetained(stats: RetainedStats, previous: number | undefined, size: number, limits: RetainedLimits): boolean {
  if (previous !== undefined) removeRetained(stats, previous);
  if (stats.messages + 1 > limits.maxMessages || stats.bytes + size > limits.maxBytes) {
    stats.refused++;
    return false;
  }
  stats.messages++;
  stats.bytes += size;
  return true;
}

/** A retained message of `size` bytes leaves the totals. */
export function removeRetained(stats: RetainedStats, size: number): void {
  stats.messages = Math.max(0, stats.messages - 1);
  stats.bytes = Math.max(0, stats.bytes - size);
}
