/**
 * Payload bytes of queued messages held in memory by all connected sessions' read windows
 * (max_total_read_window_bytes). read_window_bytes bounds one session; this bounds them all
 * together, so many clients connecting sessions with long queues cannot make the broker read the
 * sum into memory: while it is spent, a window holds one entry at a time, the rest stays in the
 * store until there is room.
 */
export class WindowBudget {
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

  take(bytes: number): void {
    this.#held += bytes;
  }

  give(bytes: number): void {
    this.#held -= bytes;
  }
}
