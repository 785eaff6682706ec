/** Packet identifiers for outbound QoS1/2 PUBLISHes: 1..65535, never one still in flight [MQTT-2.3.1-2]. */
export class PacketIds {
  readonly #inUse = new Set<number>();
  #next = 1;

  /** Marks an id restored from the store as in use. */
  reserve(id: number): void {
    this.#inUse.add(id);
    if (id >= this.#next) this.#next = id === 65535 ? 1 : id + 1;
  }

  allocate(): number {
    if (this.#inUse.size >= 65535) throw new Error('all 65535 packet identifiers are in flight');
    while (this.#inUse.has(this.#next)) this.#next = this.#next === 65535 ? 1 : this.#next + 1;
    const id = this.#next;
    this.#inUse.add(id);
    this.#next = id === 65535 ? 1 : id + 1;
    return id;
  }

  release(id: number): void {
    this.#inUse.delete(id);
  }

  clear(): void {
    this.#inUse.clear();
  }
}
