import type { OutboundEntry } from '../store/repository.js';
import { Fifo } from './fifo.js';

/** The queued entries a connected session holds in memory, oldest first, with the bytes of their payloads. */
export class EntryWindow {
  readonly #entries = new Fifo<OutboundEntry>();
  #bytes = 0;

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
    this.#bytes += entry.message.payload.length;
  }

  shift(): OutboundEntry | undefined {
    const entry = this.#entries.shift();
    if (entry) this.#bytes -= entry.message.payload.length;
    return entry;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }
}
