/**
 * Bytes the whole broker holds for one purpose, against its limit: the payloads of queued
 * messages read into connected sessions' windows (max_total_read_window_bytes), the bytes written
 * to clients and not yet taken by the kernel (max_total_unsent_bytes), the bytes of packets still
 * arriving (max_unfinished_packet_bytes). The per-client bounds
 * (read_window_bytes, max_unsent_bytes) keep one client small; a budget keeps their sum bounded,
 * so that many clients together cannot make the broker hold more. What happens when one is spent
 * is its user's to say (entry-window.ts, connection.ts, limits.ts).
 */
export class ByteBudget {
  readonly max: number;
  #held = 0;

  constructor(max: number) {
    this.max = max;
  }

  get held(): number {
    return this.#held;
  }

  get available(): number {
    return this.max - this.#held;
  }

  get over(): boolean {
    return this.#held >= this.max;
  }

  take(bytes: number): void {
    this.#held += bytes;
  }

  /** Takes `bytes` more; false, taking nothing, when that would go over the limit. */
  tryTake(bytes: number): boolean {
    if (this.#held + bytes > this.max) return false;
    this.#held += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#held -= bytes;
  }
}
