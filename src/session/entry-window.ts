import type { OutboundEntry } from '../store/repository.js';
import { Fifo } from './fifo.js';
import type { ByteBudget } from './byte-budget.js';

/**
 * The queued entries a connected session holds in memory, oldest first, with the bytes of their
 * payloads, counted in the broker-wide budget (when given) while they are held.
 */
export class EntryWindow {
  readonly #entries = new Fifo<OutboundEntry>();
  readonly #budget: ByteBudget | undefined;
  #bytes = 0;

  constructor(budget?: ByteBudget) {
    this.#budget = budget;
  }

  get length(): number {
    return this.#entries.length;
  }

  /** Payload bytes of the entries held. */
  get bytes(): number {
    return this.#bytes;
  }

  get first(): OutboundEntry | undefined {
    return this.#entries.first;
  }

  get last(): OutboundEntry | undefined {
    return this.#entries.last;
  }

  push(entry: OutboundEntry): void {
    this.#entries.push(entry);
    const size = entry.message.payload.length;
    this.#bytes += size;
    this.#budget?.take(size);
  }

  shift(): OutboundEntry | undefined {
    const entry = this.#entries.shift();
    if (entry) {
      const size = entry.message.payload.length;
      this.#bytes -= size;
      this.#budget?.give(size);
    }
    return entry;
  }

  clear(): void {
    this.#entries.clear();
    this.#budget?.give(this.#bytes);
    this.#bytes = 0;
  }
}
