/**
 * When to try again, and when to say so. Exponential backoff with "equal jitter": the n-th wait
 * after a failure is between half and all of min·2ⁿ (at most max), so gateways that lost the same
 * upstream at once do not come back at once. A connection that came up starts over from min.
 */
export class Backoff {
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #failures = 0;

  constructor(minMs: number, maxMs: number, random: () => number = Math.random) {
    this.#minMs = minMs;
    this.#maxMs = maxMs;
    this.#random = random;
  }

  /** The wait before the next attempt, counting this failure. */
  next(): number {
    const ceiling = Math.min(this.#maxMs, this.#minMs * 2 ** Math.min(this.#failures, 40));
    this.#failures++;
    return Math.max(this.#minMs, Math.round(ceiling / 2 + (this.#random() * ceiling) / 2));
  }

  reset(): void {
    this.#failures = 0;
  }
}

/** How often a failure that keeps repeating is logged again. */
export const REPEAT_LOG_INTERVAL_MS = 60_000;

/**
 * Says each failure once, and while the same one keeps repeating, once a minute with the number
 * of attempts since: never once per attempt.
 */
export class FailureReport {
  #lastKind: string | undefined;
  #lastLoggedAt = 0;
  #repeats = 0;
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The line to log for this failure, or undefined to stay quiet. */
  failed(kind: string, message: string): string | undefined {
    const now = this.#now();
    if (kind !== this.#lastKind) {
      this.#lastKind = kind;
      this.#lastLoggedAt = now;
      this.#repeats = 0;
      return message;
    }
    this.#repeats++;
    if (now - this.#lastLoggedAt < REPEAT_LOG_INTERVAL_MS) return undefined;
    const repeats = this.#repeats;
    this.#lastLoggedAt = now;
    this.#repeats = 0;
    return `${message} (still failing: ${repeats} attempts since this was last logged)`;
  }

  /** Connected: the next failure is news again. */
  reset(): void {
    this.#lastKind = undefined;
    this.#repeats = 0;
  }
}
