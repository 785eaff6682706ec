import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Message, OutboundEntry, QoS, SessionRepository } from '../store/repository.js';
import { EntryWindow } from './entry-window.js';
import { Fifo } from './fifo.js';
import { MAX_PACKET_ID, packetIdOf } from './packet-ids.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  packetId?: number;
}

/** What a session needs from the connection it is linked to; the protocol layer implements it. */
export interface OutboundChannel {
  publish(packet: OutgoingPublish): void;
  pubrel(packetId: number): void;
  /** The session no longer belongs to this connection (taken over, dropped, store failure): close it. */
  end(reason: string): void;
}

export interface SessionLimits {
  /** PUBLISHes with QoS > 0 sent and not yet fully acknowledged, per session. */
  maxInflight: number;
  /** How many queued entries a connected session holds in memory; the rest stays in the store. */
  readWindow: number;
  /** Payload bytes of queued entries a connected session holds in memory (at least one entry is held). */
  readWindowBytes: number;
}

/** 'sending' until the sent watermark is stored; 'releasing' while PUBREC's transition is stored. */
type InflightState = 'sending' | 'sent' | 'releasing' | 'released';

interface Inflight {
  entry: OutboundEntry;
  packetId: number;
  state: InflightState;
}

/**
 * One client's session (spec 4.1). Outbound messages flow store → window in memory → inflight →
 * acknowledged. What must not be lost is stored before it is acted on: the sent watermark before
 * a PUBLISH goes out (so a redelivery carries DUP=1), PUBREC's release before PUBREL (so a
 * PUBLISH is never sent again after it). Packet ids come from seqs, so a redelivery after any
 * restart uses the original id [MQTT-4.4.0-1] without storing it.
 *
 * PUBACK and PUBCOMP free their slot at once and are stored in the background: were the broker to
 * die before that write, the only effect is a redelivery with DUP=1 (QoS1) or a re-sent PUBREL
 * (QoS2), both of which the protocol expects. Waiting would put an fsync between every two
 * messages of a session.
 *
 * A disconnected persistent session keeps nothing in memory but its subscriptions.
 */
export class Session {
  readonly clientId: string;
  /** CleanSession=1: lives as long as its connection, in the volatile repository. */
  readonly clean: boolean;
  readonly subscriptions = new Map<string, QoS>();
  /** The user name of the client that created the session (undefined: anonymous); ACL read checks use it. */
  readonly owner: string | undefined;
  readonly #repository: SessionRepository;
  readonly #limits: SessionLimits;
  readonly #log: Logger;

  #channel: OutboundChannel | undefined;
  /** Changes on every link/unlink, so a store write finishing late never acts for another connection. */
  #epoch = 0;
  #loading = false;
  /** By packet id. */
  readonly #inflight = new Map<number, Inflight>();
  /** The same in seq order, completed ones leaving the front lazily (see #packetIdFree). */
  readonly #inflightOrder = new Fifo<Inflight>();
  readonly #window = new EntryWindow();
  /** Highest seq taken from the store into memory; reads continue after it. */
  #lastSeq = 0;
  #storeHasMore = true;
  /**
   * Counts enqueue notifications. A store read compares it before and after: an entry stored while
   * the read ran may be missing from what it returned, so the store must be read again.
   */
  #enqueueCount = 0;
  #refilling = false;
  /** The sent watermark last submitted, and its write: PUBLISHes up to it may go once it is stored. */
  #markedThrough = 0;
  /** The sent watermark known to be stored: a burst up to it may go at once, if none is waiting. */
  #storedThrough = 0;
  /** Bursts waiting for their watermark's write; they go in order, so a later one waits too. */
  #waitingBursts = 0;
  /** Highest seq whose PUBLISH was handed to the connection. */
  #sentThrough = 0;
  #marking: Promise<void> = Promise.resolve();
  /** Inbound QoS2 packet ids received (or being stored) and not yet released by PUBREL. */
  readonly #inbound = new Set<number>();
  readonly #pendingWrites = new Set<Promise<unknown>>();
  /** Messages are being refused for this session because its queue is full. */
  #dropping = false;
  /** The #epoch whose connection a store failure ended (see #fail). */
  #failedEpoch = -1;
  /** Entries acknowledged in this tick: one write completes them all. */
  #completing: OutboundEntry[] = [];

  constructor(
    clientId: string,
    clean: boolean,
    repository: SessionRepository,
    limits: SessionLimits,
    log: Logger,
    owner?: string,
  ) {
    this.clientId = clientId;
    this.clean = clean;
    this.owner = owner;
    this.#repository = repository;
    this.#limits = limits;
    this.#log = log;
  }

  get repository(): SessionRepository {
    return this.#repository;
  }

  get connected(): boolean {
    return this.#channel !== undefined;
  }

  get channel(): OutboundChannel | undefined {
    return this.#channel;
  }

  /** Links a connection; nothing is sent until `resume`, so CONNACK can go first. */
  link(channel: OutboundChannel): void {
    this.#channel = channel;
    this.#epoch++;
    this.#loading = true;
  }

  /**
   * Unlinks the connection. A persistent session drops its in-memory queue; the store keeps it.
   * The sent watermark, written ahead for the whole window, comes back down to what was really
   * sent, so the next connection gets DUP=1 only on real redeliveries.
   */
  unlink(channel: OutboundChannel): boolean {
    if (this.#channel !== channel) return false;
    if (this.#markedThrough > this.#sentThrough) {
      void this.#track(this.#repository.resetSent(this.clientId, this.#sentThrough)).catch((error) => this.#fail(error));
    }
    this.#sentThrough = 0;
    this.#channel = undefined;
    this.#epoch++;
    this.#inflight.clear();
    this.#inflightOrder.clear();
    this.#window.clear();
    this.#inbound.clear();
    this.#lastSeq = 0;
    this.#storeHasMore = true;
    this.#markedThrough = 0;
    this.#storedThrough = 0;
    this.#waitingBursts = 0;
    return true;
  }

  /**
   * Loads the session's inflight and the first window of its queue, re-sends what was in flight in
   * its original order [MQTT-4.6.0-1] with its original packet ids [MQTT-4.4.0-1] (PUBLISH with
   * DUP=1 [MQTT-3.3.1-1], or PUBREL once PUBREC had arrived), then continues with the queue.
   */
  async resume(): Promise<void> {
    const epoch = this.#epoch;
    // Transitions of the previous connection must land before the store is read back.
    await Promise.allSettled([...this.#pendingWrites]);
    const enqueueCount = this.#enqueueCount;
    const inbound = await this.#repository.loadInbound(this.clientId);
    const entries = await this.#readWindow(0);
    if (epoch !== this.#epoch) return;
    for (const id of inbound) this.#inbound.add(id);
    const resend: Inflight[] = [];
    for (const entry of entries) {
      this.#lastSeq = entry.seq;
      if (entry.state === 'queued') {
        this.#window.push(entry);
      } else {
        const inflight: Inflight = { entry, packetId: entry.packetId ?? packetIdOf(entry.seq), state: entry.state };
        this.#inflight.set(inflight.packetId, inflight);
        this.#inflightOrder.push(inflight);
        this.#markedThrough = entry.seq;
        this.#storedThrough = entry.seq;
        this.#sentThrough = entry.seq;
        resend.push(inflight);
      }
    }
    this.#storeHasMore = this.#enqueueCount !== enqueueCount || this.#filled(entries);
    this.#loading = false;
    for (const inflight of resend) {
      if (inflight.state === 'released') this.#channel?.pubrel(inflight.packetId);
      else this.#channel?.publish(toPacket(inflight, true));
    }
    this.#pump();
  }

  /** The store refused a message for this session: its queue is full. Logged once per episode. */
  dropped(): void {
    if (this.#dropping) return;
    this.#dropping = true;
    this.#log.warn(
      `session ${JSON.stringify(this.clientId)}: queue full, new messages for it are dropped and counted (broker-admin shows the count)`,
    );
  }

  /**
   * Whether an entry queued now would go straight out: connected, nothing waiting before it, room
   * in flight. The distributor then stores it already marked sent (Delivery.sent), so sending it
   * needs no write of its own. Also true means everything before it is in flight already, which
   * is what makes raising the watermark to it correct.
   */
  get readyToSend(): boolean {
    return (
      this.#channel !== undefined &&
      !this.#loading &&
      !this.#storeHasMore &&
      !this.#refilling &&
      this.#window.length === 0 &&
      this.#inflight.size < this.#limits.maxInflight
    );
  }

  /** A stored transition queued an entry for this session; `markedSent`: stored with the watermark raised to it. */
  enqueued(seq: number, message: Message, qos: QoS, retain: boolean, markedSent = false): void {
    this.#dropping = false;
    if (!this.#channel) return;
    if (markedSent) {
      // Stored with the entry (the caller's write has completed).
      if (seq > this.#markedThrough) this.#markedThrough = seq;
      if (seq > this.#storedThrough) this.#storedThrough = seq;
    }
    this.#enqueueCount++;
    if (this.#loading || this.#storeHasMore || this.#windowFull() || seq <= this.#lastSeq) {
      // It is in the store; the next read picks it up in order.
      this.#storeHasMore = true;
    } else {
      this.#window.push({ seq, message, qos, retain, state: 'queued' });
      this.#lastSeq = seq;
    }
    this.#pump();
  }

  /** A QoS 0 delivery: nothing to store, sent only if connected [MQTT-4.3.1]. */
  sendDirect(message: Message, retain: boolean): void {
    this.#channel?.publish({ topic: message.topic, payload: message.payload, qos: 0, retain, dup: false });
  }

  /**
   * PUBACK: the QoS1 delivery is complete [MQTT-4.3.2]. Unknown ids are ignored. The completion is
   * stored behind (see the class comment); if that write fails, the connection is ended.
   */
  acknowledge(packetId: number): void {
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.entry.qos !== 1 || inflight.state !== 'sent') return;
    this.#finish(inflight);
  }

  /** PUBREC: store that the QoS2 message arrived, then PUBREL [MQTT-4.3.3-1]. */
  async received(packetId: number): Promise<void> {
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.entry.qos !== 2) return;
    if (inflight.state === 'released') {
      this.#channel?.pubrel(packetId);
      return;
    }
    if (inflight.state !== 'sent') return;
    inflight.state = 'releasing';
    const epoch = this.#epoch;
    await this.#track(this.#repository.markReleased(this.clientId, inflight.entry.seq, packetId));
    if (epoch !== this.#epoch) return;
    inflight.state = 'released';
    this.#channel?.pubrel(packetId);
  }

  /** PUBCOMP: the QoS2 delivery is complete; stored like a PUBACK's. */
  completed(packetId: number): void {
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.state !== 'released') return;
    this.#finish(inflight);
  }

  /**
   * Claims an inbound QoS2 packet id. false: it is already received and not released, so the
   * PUBLISH is a re-send to answer with PUBREC only, without delivering it again [MQTT-4.3.3-2].
   */
  claimInbound(packetId: number): boolean {
    if (this.#inbound.has(packetId)) return false;
    this.#inbound.add(packetId);
    return true;
  }

  /** The inbound QoS2 PUBLISH could not be stored: forget the claim so a re-send is processed. */
  abandonInbound(packetId: number): void {
    this.#inbound.delete(packetId);
  }

  /** PUBREL: the packet id is released; the caller answers PUBCOMP. */
  async releaseInbound(packetId: number): Promise<void> {
    await this.#track(this.#repository.releaseInbound(this.clientId, packetId));
    this.#inbound.delete(packetId);
  }

  /**
   * Registers a transition of this session that someone else submitted (an inbound QoS2 PUBLISH),
   * so a resume waits for it before reading the store back.
   */
  track<T>(write: Promise<T>): Promise<T> {
    return this.#track(write);
  }

  /** Frees the slot now and stores the completion behind it (see the class comment). */
  #finish(inflight: Inflight): void {
    this.#inflight.delete(inflight.packetId);
    this.#complete(inflight.entry);
    this.#pump();
  }

  /**
   * Stores a completion together with every other one of this tick: the acknowledgements of one
   * socket read become one transition instead of one store job each. A failed write ends the
   * connection; the entries are still queued in the store and go out again, with DUP=1.
   */
  #complete(entry: OutboundEntry): void {
    // Each entry once: it has just left #inflight (or the window), so the store may trust it.
    this.#completing.push(entry);
    if (this.#completing.length > 1) return;
    const epoch = this.#epoch;
    void this.#track(
      new Promise<void>((resolve) => process.nextTick(resolve)).then(() => {
        const entries = this.#completing;
        this.#completing = [];
        return this.#repository.complete(this.clientId, ...entries);
      }),
    ).catch((error: unknown) => {
      // A later connection reads the store after this write settled: it sees the entries as queued.
      if (epoch === this.#epoch) this.#fail(error);
    });
  }

  /**
   * Moves queued entries into flight while the window allows: one watermark write for the whole
   * burst, then the PUBLISHes, in seq order.
   */
  #pump(): void {
    if (!this.#channel || this.#loading) return;
    const burst: Inflight[] = [];
    while (this.#inflight.size < this.#limits.maxInflight) {
      const entry = this.#window.first;
      if (!entry || !this.#packetIdFree(entry.seq)) break;
      this.#window.shift();
      if (entry.qos === 0) {
        this.sendDirect(entry.message, entry.retain);
        this.#complete(entry);
        continue;
      }
      const inflight: Inflight = { entry, packetId: packetIdOf(entry.seq), state: 'sending' };
      this.#inflight.set(inflight.packetId, inflight);
      this.#inflightOrder.push(inflight);
      burst.push(inflight);
    }
    // Refill before the window runs dry, so the store read overlaps with sending.
    if (this.#storeHasMore && !this.#refilling && this.#windowHalfEmpty()) void this.#refill();
    if (burst.length > 0) this.#send(burst);
  }

  /**
   * Packet ids repeat every 65535 seqs: an entry may go out only while no entry in flight has the
   * same id, i.e. while it is less than 65535 seqs after the oldest one in flight.
   */
  #packetIdFree(seq: number): boolean {
    // Not the Map's first value: with entries deleted from its front, finding that scans past them.
    let oldest = this.#inflightOrder.first;
    while (oldest !== undefined && this.#inflight.get(oldest.packetId) !== oldest) {
      this.#inflightOrder.shift();
      oldest = this.#inflightOrder.first;
    }
    return oldest === undefined || seq - oldest.entry.seq < MAX_PACKET_ID;
  }

  /**
   * Sends a burst once the sent watermark covers it. The watermark is written ahead for the whole
   * window in memory, not just the burst, so a session draining its queue waits for one fsync per
   * window rather than one per burst. `unlink` lowers it again; only after a crash do entries of
   * that window that had not gone out yet arrive with DUP=1, which a receiver must accept.
   */
  #send(burst: Inflight[]): void {
    const epoch = this.#epoch;
    const last = burst[burst.length - 1]!.entry.seq;
    if (last > this.#markedThrough) this.#markWindow(burst);
    if (this.#waitingBursts === 0 && last <= this.#storedThrough) {
      this.#release(burst);
      return;
    }
    this.#waitingBursts++;
    this.#marking.then(
      () => {
        if (epoch !== this.#epoch) return;
        this.#waitingBursts--;
        this.#release(burst);
      },
      (error) => this.#fail(error),
    );
  }

  /** Hands a burst whose watermark is stored to the connection. */
  #release(burst: Inflight[]): void {
    for (const inflight of burst) {
      inflight.state = 'sent';
      this.#sentThrough = inflight.entry.seq;
      this.#channel?.publish(toPacket(inflight, false));
    }
  }

  /** Writes the sent watermark ahead over the burst going out and the whole window behind it. */
  #markWindow(burst: Inflight[] = []): void {
    const through = Math.max(burst[burst.length - 1]?.entry.seq ?? 0, this.#window.last?.seq ?? 0);
    if (through <= this.#markedThrough) return;
    this.#markedThrough = through;
    const epoch = this.#epoch;
    this.#marking = this.#track(this.#repository.markSent(this.clientId, through));
    // Registered before any burst waits on it, so it runs before they are released.
    this.#marking.then(
      () => {
        if (epoch === this.#epoch && through > this.#storedThrough) this.#storedThrough = through;
      },
      () => {}, // the bursts waiting on it report the failure
    );
  }

  async #refill(): Promise<void> {
    if (this.#refilling) return;
    this.#refilling = true;
    const epoch = this.#epoch;
    const enqueueCount = this.#enqueueCount;
    let entries: OutboundEntry[];
    try {
      entries = await this.#readWindow(this.#lastSeq);
    } catch (error) {
      this.#refilling = false;
      if (epoch === this.#epoch) this.#fail(error);
      return;
    }
    this.#refilling = false;
    if (epoch === this.#epoch) {
      for (const entry of entries) {
        this.#lastSeq = entry.seq;
        // Entries after the window were never in memory, so never sent: 'sent' here only means a
        // publish raised the watermark over them for a send that did not happen in this order.
        if (entry.state !== 'released') this.#window.push(entry);
      }
      this.#storeHasMore = this.#enqueueCount !== enqueueCount || this.#filled(entries);
      // Mark the new window sent now, so its fsync overlaps with sending what is already in flight.
      if (this.#channel) this.#markWindow();
    }
    // Also after a relink: a refill the new connection skipped while this one ran is due now.
    this.#pump();
  }

  /** Reads the next window's worth of entries after `afterSeq` from the store. */
  #readWindow(afterSeq: number): Promise<OutboundEntry[]> {
    return this.#repository.readOutbound(this.clientId, afterSeq, this.#limits.readWindow, this.#limits.readWindowBytes);
  }

  /** Whether a read stopped at a window limit, so the store may hold more after it. */
  #filled(entries: OutboundEntry[]): boolean {
    if (entries.length >= this.#limits.readWindow) return true;
    let bytes = 0;
    for (const entry of entries) bytes += entry.message.payload.length;
    return bytes >= this.#limits.readWindowBytes;
  }

  #windowFull(): boolean {
    return this.#window.length >= this.#limits.readWindow || this.#window.bytes >= this.#limits.readWindowBytes;
  }

  #windowHalfEmpty(): boolean {
    return this.#window.length < this.#limits.readWindow / 2 && this.#window.bytes < this.#limits.readWindowBytes / 2;
  }

  #track<T>(write: Promise<T>): Promise<T> {
    this.#pendingWrites.add(write);
    const untrack = () => this.#pendingWrites.delete(write);
    write.then(untrack, untrack);
    return write;
  }

  /**
   * A store operation failed. The store still holds a consistent state (each transition is atomic);
   * ending the connection makes the client reconnect and the session reload from it.
   */
  #fail(error: unknown): void {
    // Once per connection: the writes queued behind a failed one fail too (and the watermark reset
    // at unlink), and the store reports the failure itself (WriteFailures).
    const channel = this.#channel;
    if (!channel || this.#failedEpoch === this.#epoch) return;
    this.#failedEpoch = this.#epoch;
    const message = errorMessage(error);
    this.#log.error(`session ${JSON.stringify(this.clientId)}: ${message}; closing its connection`);
    channel.end(`store failure: ${message}`);
  }
}

function toPacket({ entry, packetId }: Inflight, dup: boolean): OutgoingPublish {
  return {
    topic: entry.message.topic,
    payload: entry.message.payload,
    qos: entry.qos,
    retain: entry.retain,
    dup,
    packetId,
  };
}
