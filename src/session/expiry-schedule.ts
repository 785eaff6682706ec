/**
 * Deadlines by key, with one timer for the earliest of them rather than one per key: a broker may
 * hold a million disconnected sessions, each with a deadline. A min-heap keeps the earliest at hand;
 * a deadline that is moved or cancelled stays in the heap until it comes up and is then skipped
 * (its key's current deadline in #deadlines is the one that counts).
 */
export class ExpirySchedule {
  readonly #deadlines = new Map<string, number>();
  readonly #heap: Array<{ at: number; key: string }> = [];
  readonly #onDue: (keys: string[]) => void;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;

  /** `onDue` is called with the keys whose deadline has come, each once; they are unscheduled by then. */
  constructor(onDue: (keys: string[]) => void) {
    this.#onDue = onDue;
  }

  get size(): number {
    return this.#deadlines.size;
  }

  deadline(key: string): number | undefined {
    return this.#deadlines.get(key);
  }

  /** Sets (or moves) the deadline of `key`, in ms since the epoch. */
  set(key: string, at: number): void {
    this.#deadlines.set(key, at);
    this.#push({ at, key });
    if (at < this.#timerAt) this.#arm();
  }

  cancel(key: string): void {
    this.#deadlines.delete(key);
  }

  /** Stops the timer; nothing is due any more (the broker is stopping). */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#deadlines.clear();
    this.#heap.length = 0;
  }

  #arm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const next = this.#peek();
    if (next === undefined) return;
    this.#timerAt = next;
    // setTimeout takes at most 2^31-1 ms; a later deadline re-arms when that fires.
    const delay = Math.min(Math.max(0, next - Date.now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => this.#fire(), delay);
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    const due: string[] = [];
    for (let next = this.#peek(); next !== undefined && next <= now; next = this.#peek()) {
      const { key } = this.#pop()!;
      this.#deadlines.delete(key);
      due.push(key);
    }
    this.#arm();
    if (due.length > 0) this.#onDue(due);
  }

  /** The earliest live deadline, dropping stale heap entries on the way. */
  #peek(): number | undefined {
    while (this.#heap.length > 0) {
      const top = this.#heap[0]!;
      if (this.#deadlines.get(top.key) === top.at) return top.at;
      this.#pop();
    }
    return undefined;
  }

  #push(item: { at: number; key: string }): void {
    const heap = this.#heap;
    heap.push(item);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (heap[parent]!.at <= item.at) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = item;
  }

  #pop(): { at: number; key: string } | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left;
      if (heap[child]!.at >= last.at) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
    return top;
  }
}
