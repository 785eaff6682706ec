/**
 * Per-session queue limits. When a message would take a session's queue past either limit, the
 * newest message is refused for that session (the policy Mosquitto users know): what is already
 * queued keeps its order and nothing already promised is taken back. Each refusal is counted in
 * the session's `dropped`, which is stored and shown by broker-admin.
 */
export interface QueueLimits {
  /** Messages queued or in flight per session. */
  maxMessages: number;
  /** Payload bytes queued or in flight per session. */
  maxBytes: number;
}

export const DEFAULT_QUEUE_LIMITS: QueueLimits = {
  maxMessages: 1_000_000,
  maxBytes: 512 * 1024 * 1024,
};

export interface QueueStats {
  /** Entries in the session's outbound queue, in flight included. */
  messages: number;
  /** Their payload bytes. */
  bytes: number;
  /** Messages refused for this session because its queue was full, since it was created. */
  dropped: number;
}

export function emptyQueueStats(): QueueStats {
  return { messages: 0, bytes: 0, dropped: 0 };
}

/** Takes a message of `size` bytes into the counts if the limits allow; otherwise counts a drop. */
export function admit(stats: QueueStats, size: number, limits: QueueLimits): boolean {
  if (stats.messages + 1 > limits.maxMessages || stats.bytes + size > limits.maxBytes) {
    stats.dropped++;
    return false;
  }
  stats.messages++;
  stats.bytes += size;
  return true;
}

/** Takes `count` messages of `size` bytes in all out of the counts. */
export function release(stats: QueueStats, size: number, count = 1): void {
  stats.messages = Math.max(0, stats.messages - count);
  stats.bytes = Math.max(0, stats.bytes - size);
}
