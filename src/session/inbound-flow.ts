/** The stored state of the flow's session, as the flow reaches it (Session is that door). */
export interface InboundStore {
  inboundPacketIds(): Promise<number[]>;
  releaseInbound(packetId: number): Promise<void>;
}

/**
 * The inbound QoS 2 packet ids of one connection of a session: received (or being stored) and not
 * yet released by PUBREL. Loaded from the store when the connection links, so a PUBLISH re-sent
 * after any restart is recognised [MQTT-4.3.3-2]; dropped with the connection.
 */
export class InboundFlow {
  readonly #session: InboundStore;
  readonly #unreleased = new Set<number>();

  constructor(session: InboundStore) {
    this.#session = session;
  }

  async start(): Promise<void> {
    for (const packetId of await this.#session.inboundPacketIds()) this.#unreleased.add(packetId);
  }

  /** Inbound QoS 2 packet ids not yet released: they count against MQTT 5's Receive Maximum. */
  get unreleased(): number {
    return this.#unreleased.size;
  }

  /** Whether a QoS 2 PUBLISH with this packet id is held, not yet released (a re-send, then). */
  holds(packetId: number): boolean {
    return this.#unreleased.has(packetId);
  }

  /**
   * Claims an inbound QoS2 packet id. false: it is already received and not released, so the
   * PUBLISH is a re-send to answer with PUBREC only, without delivering it again [MQTT-4.3.3-2].
   */
  claim(packetId: number): boolean {
    if (this.#unreleased.has(packetId)) return false;
    this.#unreleased.add(packetId);
    return true;
  }

  /** The inbound QoS2 PUBLISH could not be stored: forget the claim so a re-send is processed. */
  abandon(packetId: number): void {
    this.#unreleased.delete(packetId);
  }

  /** PUBREL: the packet id is released in the store; the caller answers PUBCOMP. */
  async release(packetId: number): Promise<void> {
    await this.#session.releaseInbound(packetId);
    this.#unreleased.delete(packetId);
  }
}
