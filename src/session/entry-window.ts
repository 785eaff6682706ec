import type { OutboundEntry } from '../store/repository.js';

/**
 * The queued entries a connected session holds in memory, oldest first, with the bytes of their
 * payloads. A queue, not an array shifted from the front: V8's Array#shift moves every element of
 * a long array (a window of thousands of entries made it the session's largest cost).
 */
export class EntryWindow {
  #entries: (OutboundEntry | undefined)[] = [];
  #head = 0;
  #bytes = 0;

  get length(): number {
    return this.#entries.length - this.#head;
  }

  /** Payload bytes of the entries held. */
  get bytes(): number {
    return this.#bytes;
  }

  get first(): OutboundEntry | undefined {
    return this.#entries[this.#head];
  }

  get last(): OutboundEntry | undefined {
    return this.length > 0 ? this.#entries[this.#entries.length - 1] : undefined;
  }

  push(entry: OutboundEntry): void {
    this.#entries.push(entry);
    this.#bytes += entry.message.payload.length;
  }

  shift(): OutboundEntry | undefined {
    if (this.#head >= this.#entries.length) return undefined;
    const entry = this.#entries[this.#head]!;
    // Let go of it now: the slot stays until the array is compacted.
    this.#entries[this.#head++] = undefined;
    this.#bytes -= entry.message.payload.length;
    if (this.#head === this.#entries.length) {
      this.clear();
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#entries.length) {
      // Copying the rest only once half the array is spent keeps each shift O(1) on average.
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
    return entry;
  }

  clear(): void {
    this.#entries = [];
    this.#head = 0;
    this.#bytes = 0;
  }
}
