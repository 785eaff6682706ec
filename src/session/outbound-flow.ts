import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { LogCauses, summaryOf } from '../log-summary.js';
import type { Completion, Delivery, Message, MessageProperties, OutboundEntry, QoS, Release } from '../store/repository.js';
import { EntryWindow } from './entry-window.js';
import { Fifo } from './fifo.js';
import { MAX_PACKET_ID, packetIdOf } from './packet-ids.js';
import type { ByteBudget } from './byte-budget.js';

export interface OutgoingPublish {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  packetId?: number;
  /** MQTT 5 properties of the message; a connection of an earlier version leaves them out. */
  properties?: MessageProperties;
  /** Subscription Identifiers of the matching subscriptions [MQTT-3.3.4-3]. */
  subscriptionIds?: number[];
}

/** Why the session layer ends a connection: an MQTT 5 client is told, in its DISCONNECT's reason code. */
export type EndCause = 'taken-over' | 'session-ended' | 'shutting-down' | 'store-failure';

/** What a session needs from the connection it is linked to; the protocol layer implements it. */
export interface OutboundChannel {
  /**
   * Hands a PUBLISH to the connection. false: it was not sent because it is larger than the
   * client's Maximum Packet Size [MQTT-3.1.2-25]; the delivery is complete all the same. A
   * channel that never refuses one may return nothing.
   */
  publish(packet: OutgoingPublish): boolean | void;
  pubrel(packetId: number): void;
  /** The session no longer belongs to this connection (taken over, dropped, store failure): close it. */
  end(reason: string, cause?: EndCause): void;
  /**
   * Bytes the channel takes before it holds too much unsent (the client does not read what it is
   * sent): the flow sends no more than this, then waits for `whenDrained`, so what a client does
   * not read waits in the store, not in memory. A channel without it is never full.
   */
  readonly room?: number;
  /** Calls `resume` once, when the channel has taken most of what it holds. */
  whenDrained?(resume: () => void): void;
  /**
   * The client's Receive Maximum (MQTT 5): QoS 1 and 2 PUBLISHes it takes unacknowledged at once.
   * The flow keeps no more than the lower of it and max_inflight in flight [MQTT-3.3.4-9].
   */
  readonly receiveMaximum?: number | undefined;
}

export interface OutboundLimits {
  /** PUBLISHes with QoS > 0 sent and not yet fully acknowledged, per connection. */
  maxInflight: number;
  /** How many queued entries the flow holds in memory; the rest stays in the store. */
  readWindow: number;
  /** Payload bytes of queued entries the flow holds in memory (at least one entry is held). */
  readWindowBytes: number;
}

export interface OutboundOptions extends OutboundLimits {
  /** What all connected sessions' windows may hold together (max_total_read_window_bytes). */
  windowBudget?: ByteBudget;
  /**
   * Only with an ACL: whether the session may receive a message on `topic` now. Asked again when
   * a queued message is about to be sent, so a rule that changed since it was queued applies.
   */
  mayReceive?: (topic: string) => boolean;
}

/** The stored state of the flow's session, as the flow reaches it (Session is that door). */
export interface OutboundStore {
  readonly clientId: string;
  readQueue(afterSeq: number, limit: number, maxBytes?: number): Promise<OutboundEntry[]>;
  raiseDupMark(throughSeq: number): Promise<void>;
  setDupMark(throughSeq: number): Promise<void>;
  markReleased(releases: Release[], releasedThrough?: number): Promise<void>;
  complete(entries: Completion[]): Promise<void>;
  /** Makes the session's next link wait for `write`, submitted or not yet. */
  track<T>(write: Promise<T>): Promise<T>;
}

/** 'sending' until the DUP mark over it is stored; 'releasing' while PUBREC's transition is stored. */
type InflightState = 'sending' | 'sent' | 'releasing' | 'released';

/** What completing an entry needs; the message itself is let go once it is sent. */
type HeldEntry = Omit<OutboundEntry, 'message'> & { message?: OutboundEntry['message'] };

interface Inflight {
  entry: HeldEntry;
  packetId: number;
  state: InflightState;
}

/**
 * The delivery engine of one connection of a session: outbound messages flow store → window in
 * memory → in flight → acknowledged. It is created when a connection links and dies when it
 * unlinks, so a store write that finishes late finds a closed flow and acts for nobody; the next
 * connection gets a flow of its own that starts from the store.
 *
 * What must not be lost is stored before it is acted on: the DUP mark before a PUBLISH goes out
 * (so a redelivery carries DUP=1), PUBREC's release before PUBREL (so the PUBLISH is never sent
 * again after it). Packet ids come from seqs, so a redelivery after any restart uses the original
 * id [MQTT-4.4.0-1] without storing it.
 *
 * PUBACK and PUBCOMP free their slot at once and are stored in the background: were the broker to
 * die before that write, the only effect is a redelivery with DUP=1 (QoS1) or a re-sent PUBREL
 * (QoS2), both of which the protocol expects. Waiting would put an fsync between every two
 * messages of a session.
 *
 * Three marks, each with one meaning: `#sentThrough`, the highest seq handed to the connection;
 * `#dupMarkSubmitted`, the DUP mark last written (ahead of sending); `#dupMarkStored`, the DUP mark
 * known to be durable, under which a PUBLISH may leave at once.
 */
export class OutboundFlow {
  readonly channel: OutboundChannel;
  readonly #session: OutboundStore;
  readonly #limits: OutboundOptions;
  readonly #log: Logger;
  /** A queued message was dropped because the ACL no longer lets the session read it (logged once per flow). */
  #refusedByAcl = false;
  #closed = false;
  /** A store failure ended the connection (reported once; see #fail). */
  #failed = false;
  /** Until `start` has read the store, nothing is sent, so CONNACK can go first. */
  #loading = true;
  /** By packet id. */
  readonly #inflight = new Map<number, Inflight>();
  /** The same in seq order, completed ones leaving the front lazily (see #packetIdFree). */
  readonly #inflightOrder = new Fifo<Inflight>();
  readonly #window: EntryWindow;
  /** The byte bound of the last store read: a read that reached it may have left more behind. */
  #readBytes = 0;
  /** Highest seq taken from the store into memory; reads continue after it. */
  #lastSeq = 0;
  #storeHasMore = true;
  /**
   * Counts enqueue notifications. A store read compares it before and after: an entry stored while
   * the read ran may be missing from what it returned, so the store must be read again.
   */
  #enqueueCount = 0;
  #refilling = false;
  #dupMarkSubmitted = 0;
  #dupMarkStored = 0;
  /** Bursts waiting for their DUP mark's write; they go in order, so a later one waits too. */
  #waitingBursts = 0;
  #sentThrough = 0;
  #dupMarkWrite: Promise<void> = Promise.resolve();
  /** Entries acknowledged in this tick: one write completes them all. */
  #completing: Completion[] = [];
  /** QoS 2 entries whose PUBREC arrived in this tick: one write releases them all. */
  #releasing: Inflight[] = [];
  /** Waiting for a full channel to drain (see OutboundChannel.room). */
  #awaitingDrain = false;
  /** Bytes of bursts waiting for their DUP mark: handed to the channel soon, not counted in its room yet. */
  #unreleasedBytes = 0;

  constructor(session: OutboundStore, channel: OutboundChannel, limits: OutboundOptions, log: Logger) {
    this.#session = session;
    this.channel = channel;
    this.#limits = limits;
    this.#window = new EntryWindow(limits.windowBudget);
    this.#log = log;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Loads what was in flight and the first window of the queue, re-sends what was in flight in its
   * original order [MQTT-4.6.0-1] with its original packet ids [MQTT-4.4.0-1] (PUBLISH with DUP=1
   * [MQTT-3.3.1-1], or PUBREL once PUBREC had arrived), then continues with the queue.
   */
  async start(): Promise<void> {
    const enqueueCount = this.#enqueueCount;
    const entries = await this.#readWindow(0);
    if (this.#closed) return;
    const resend: Inflight[] = [];
    for (const entry of entries) {
      this.#lastSeq = entry.seq;
      if (entry.state === 'queued') {
        this.#window.push(entry);
      } else if (entry.state === 'dup' && !this.#readable(entry)) {
        // Sent before, unacknowledged, and no longer readable: not sent again.
        this.#complete(entry);
      } else {
        const inflight: Inflight = { entry, packetId: entry.packetId ?? packetIdOf(entry.seq), state: entry.state === 'dup' ? 'sent' : 'released' };
        this.#inflight.set(inflight.packetId, inflight);
        this.#inflightOrder.push(inflight);
        this.#dupMarkSubmitted = entry.seq;
        this.#dupMarkStored = entry.seq;
        this.#sentThrough = entry.seq;
        resend.push(inflight);
      }
    }
    this.#storeHasMore = this.#enqueueCount !== enqueueCount || this.#filled(entries);
    this.#loading = false;
    const unsent: Inflight[] = [];
    for (const inflight of resend) {
      if (inflight.state === 'released') this.channel.pubrel(inflight.packetId);
      else if (this.channel.publish(toPacket(inflight, true)) === false) unsent.push(inflight);
    }
    this.#finishUnsent(unsent);
    this.#pump();
  }

  /**
   * The connection is gone. The DUP mark, written ahead for the whole window, comes back down to
   * what was really sent, so the next connection gets DUP=1 only on real redeliveries.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Its bytes go back to the broker-wide budget (a read under way finds the flow closed).
    this.#window.clear();
    if (this.#dupMarkSubmitted > this.#sentThrough) {
      // Nothing to report a failure to any more; the store stays consistent either way.
      this.#session.setDupMark(this.#sentThrough).catch(() => {});
    }
  }

  /**
   * Whether an entry queued now would go straight out: nothing waiting before it, room in flight.
   * The distributor then stores it with the DUP mark raised over it (Delivery.raiseDupMark), so
   * sending it needs no write of its own. Also true means everything before it is in flight
   * already, which is what makes raising the mark to it correct.
   */
  get readyToSend(): boolean {
    return (
      !this.#closed &&
      !this.#loading &&
      (this.channel.room === undefined || this.channel.room - this.#unreleasedBytes > 0) &&
      !this.#storeHasMore &&
      !this.#refilling &&
      this.#window.length === 0 &&
      this.#inflight.size < this.#limits.maxInflight
    );
  }

  /** A stored transition queued an entry for this session, as `delivery` said. */
  enqueued(seq: number, message: Message, delivery: Delivery): void {
    if (this.#closed) return;
    if (delivery.raiseDupMark) {
      // Stored with the entry (the caller's write has completed).
      if (seq > this.#dupMarkSubmitted) this.#dupMarkSubmitted = seq;
      if (seq > this.#dupMarkStored) this.#dupMarkStored = seq;
    }
    this.#enqueueCount++;
    if (this.#loading || this.#storeHasMore || this.#windowFull() || seq <= this.#lastSeq) {
      // It is in the store; the next read picks it up in order.
      this.#storeHasMore = true;
    } else {
      const entry: OutboundEntry = { seq, message, qos: delivery.qos, retain: delivery.retain, state: 'queued' };
      if (delivery.subscriptionIds) entry.subscriptionIds = delivery.subscriptionIds;
      if (delivery.stored !== undefined) entry.stored = delivery.stored;
      this.#window.push(entry);
      this.#lastSeq = seq;
    }
    this.#pump();
  }

  /** A QoS 0 delivery: nothing to store, sent only while connected [MQTT-4.3.1]. */
  sendDirect(message: Message, retain: boolean, subscriptionIds?: number[]): void {
    if (this.#closed || isExpired(message)) return;
    const packet: OutgoingPublish = { topic: message.topic, payload: message.payload, qos: 0, retain, dup: false };
    if (message.properties) packet.properties = message.properties;
    if (subscriptionIds) packet.subscriptionIds = subscriptionIds;
    this.channel.publish(packet);
  }

  /**
   * Whether `ack` may answer what is in flight under `packetId`: PUBACK only a QoS 1 message,
   * PUBREC and PUBCOMP only a QoS 2 one. An id with nothing sent under it is not judged: it may
   * acknowledge a message completed already, which the protocol allows to arrive twice.
   */
  acceptsAck(packetId: number, ack: 'puback' | 'pubrec' | 'pubcomp'): boolean {
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.state === 'sending') return true;
    return inflight.entry.qos === (ack === 'puback' ? 1 : 2);
  }

  /**
   * PUBACK: the QoS1 delivery is complete [MQTT-4.3.2]. Unknown ids are ignored. The completion is
   * stored behind (see the class comment); if that write fails, the connection is ended. Once the
   * flow is closed, acknowledgements (this one, PUBCOMP's, a refusing PUBREC's) store nothing: the
   * store trusts the entries handed back (see `received`), and the next connection's flow may hold
   * the same entries; it delivers them again, with DUP=1.
   */
  acknowledge(packetId: number): void {
    if (this.#closed) return;
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.entry.qos !== 1 || inflight.state !== 'sent') return;
    this.#finish(inflight);
  }

  /**
   * PUBREC: store that the QoS2 message arrived, then PUBREL [MQTT-4.3.3-1]. The PUBRECs of one
   * tick are stored as one transition, as completions are. Nothing is stored once the flow is
   * closed: the store trusts the entries handed back to be still queued, which only holds while
   * this flow is the session's (a discard unlinks it first). The client's next connection gets
   * the PUBLISH again and answers it with PUBREC again. A failed write ends the connection.
   */
  received(packetId: number): void {
    if (this.#closed) return;
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.entry.qos !== 2) return;
    if (inflight.state === 'released') {
      this.channel.pubrel(packetId);
      return;
    }
    if (inflight.state !== 'sent') return;
    inflight.state = 'releasing';
    this.#releasing.push(inflight);
    if (this.#releasing.length > 1) return;
    this.#storeAtTickEnd(async () => {
      const releasing = this.#releasing;
      this.#releasing = [];
      if (this.#closed) return;
      // An Inflight is a Release as it is (its entry and packet id): no copy per PUBREC.
      await this.#session.markReleased(releasing, this.#releasedThrough());
      if (this.#closed) return;
      for (const released of releasing) {
        released.state = 'released';
        this.channel.pubrel(released.packetId);
      }
    });
  }

  /**
   * The highest seq at or below which every QoS 2 entry still in flight has its PUBREC, stored or
   * being stored (markReleased's releasedThrough): the store then keeps one mark instead of a
   * record per PUBREC. Entries leave flight in seq order, and the ones before the oldest in flight
   * are completed (or being completed), so flight is all there is to look at; the window holds
   * only entries after it. PUBRECs come in order as a rule, so the look stops soon: at the first
   * QoS 2 entry still waiting for its PUBREC.
   */
  #releasedThrough(): number {
    let through = 0;
    for (const inflight of this.#inflightOrder) {
      if (this.#inflight.get(inflight.packetId) !== inflight || inflight.entry.qos !== 2) continue;
      if (inflight.state === 'sending' || inflight.state === 'sent') break;
      through = inflight.entry.seq;
    }
    return through;
  }

  /** An MQTT 5 PUBREC with an error reason: the client refused the QoS 2 message, which is complete unreleased. */
  refused(packetId: number): void {
    if (this.#closed) return;
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.entry.qos !== 2 || inflight.state !== 'sent') return;
    this.#finish(inflight);
  }

  /** PUBCOMP: the QoS2 delivery is complete; stored like a PUBACK's. */
  completed(packetId: number): void {
    if (this.#closed) return;
    const inflight = this.#inflight.get(packetId);
    if (!inflight || inflight.state !== 'released') return;
    this.#finish(inflight);
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
  #complete(entry: Completion): void {
    // Each entry once: it has just left #inflight (or the window), so the store may trust it.
    this.#completing.push(entry);
    if (this.#completing.length > 1) return;
    this.#storeAtTickEnd(() => {
      const entries = this.#completing;
      this.#completing = [];
      return this.#session.complete(entries);
    });
  }

  /**
   * Runs `write` once this tick's acknowledgements are all in (the PUBACKs, PUBRECs or PUBCOMPs of
   * one socket read become one transition). Tracked from now, not from the submit: a later
   * connection reads the store only after it settled, so it sees those entries as they are. A
   * failed write ends the connection.
   */
  #storeAtTickEnd(write: () => Promise<void>): void {
    const tracked = new Promise<void>((resolve) => process.nextTick(resolve)).then(write);
    this.#session.track(tracked).catch((error: unknown) => this.#fail(error));
  }

  /**
   * Moves queued entries into flight while the window allows: one DUP mark write for the whole
   * burst, then the PUBLISHes, in seq order.
   */
  #pump(): void {
    if (this.#closed || this.#loading || this.#awaitingDrain) return;
    let room = (this.channel.room ?? Infinity) - this.#unreleasedBytes;
    const burst: Inflight[] = [];
    let burstBytes = 0;
    while (this.#inflight.size < this.#limits.maxInflight) {
      const entry = this.#window.first;
      // Expired before its delivery began: deleted, never sent [MQTT-3.3.2-5].
      if (entry && (!this.#readable(entry) || isExpired(entry.message))) {
        this.#window.shift();
        this.#complete(entry);
        continue;
      }
      if (!entry || !this.#packetIdFree(entry.seq)) break;
      if (room <= 0) {
        this.#awaitDrain();
        break;
      }
      room -= publishSize(entry);
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
      burstBytes += publishSize(entry);
    }
    // Refill before the window runs dry, so the store read overlaps with sending.
    if (this.#storeHasMore && !this.#refilling && this.#windowWantsMore()) void this.#refill();
    if (burst.length > 0) this.#send(burst, burstBytes);
  }

  /** The channel is full: go on once it has taken most of it. */
  #awaitDrain(): void {
    const whenDrained = this.channel.whenDrained;
    if (this.#awaitingDrain || !whenDrained) return;
    this.#awaitingDrain = true;
    whenDrained.call(this.channel, () => {
      this.#awaitingDrain = false;
      this.#pump();
    });
  }

  /**
   * Whether the ACL still lets the session read the entry's topic. One that it no longer does is
   * completed unsent, as Mosquitto drops it: the rules in force when a message goes out decide.
   */
  #readable(entry: OutboundEntry): boolean {
    const mayReceive = this.#limits.mayReceive;
    if (mayReceive === undefined || mayReceive(entry.message.topic)) return true;
    if (!this.#refusedByAcl) {
      this.#refusedByAcl = true;
      this.#log.warn(
        `session ${JSON.stringify(this.#session.clientId)}: queued messages on ${JSON.stringify(entry.message.topic)} (and any others it may no longer read) are dropped: the ACL no longer allows it to read them`,
      );
    }
    return false;
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
   * Sends a burst once the DUP mark covers it. The mark is written ahead for the whole window in
   * memory, not just the burst, so a session draining its queue waits for one fsync per window
   * rather than one per burst. `close` lowers it again; only after a crash do entries of that
   * window that had not gone out yet arrive with DUP=1, which a receiver must accept.
   */
  #send(burst: Inflight[], bytes: number): void {
    const last = burst[burst.length - 1]!.entry.seq;
    if (last > this.#dupMarkSubmitted) this.#markWindow(burst);
    if (this.#waitingBursts === 0 && last <= this.#dupMarkStored) {
      this.#release(burst);
      return;
    }
    this.#waitingBursts++;
    this.#unreleasedBytes += bytes;
    this.#dupMarkWrite.then(
      () => {
        this.#waitingBursts--;
        this.#unreleasedBytes -= bytes;
        this.#release(burst);
      },
      (error) => this.#fail(error),
    );
  }

  /** Hands a burst whose DUP mark is stored to the connection. */
  #release(burst: Inflight[]): void {
    if (this.#closed) return;
    const unsent: Inflight[] = [];
    for (const inflight of burst) {
      inflight.state = 'sent';
      this.#sentThrough = inflight.entry.seq;
      if (this.channel.publish(toPacket(inflight, false)) === false) unsent.push(inflight);
      // Never sent again by this flow (a redelivery is the next connection's, read from the
      // store): a client that does not acknowledge holds no payloads in memory.
      // Cleared, not deleted: `delete` would turn the entry into a slow dictionary-mode object.
      inflight.entry.message = undefined;
    }
    this.#finishUnsent(unsent);
  }

  /**
   * Messages the connection did not send because their PUBLISH is over the client's Maximum
   * Packet Size: completed as if acknowledged, never sent [MQTT-3.1.2-25]. After the burst, so
   * what they free does not send later entries ahead of the rest of it.
   */
  #finishUnsent(unsent: Inflight[]): void {
    for (const inflight of unsent) {
      if (this.#inflight.get(inflight.packetId) === inflight) this.#finish(inflight);
    }
  }

  /** Writes the DUP mark ahead over the burst going out and the whole window behind it. */
  #markWindow(burst: Inflight[] = []): void {
    const through = Math.max(burst[burst.length - 1]?.entry.seq ?? 0, this.#window.last?.seq ?? 0);
    if (through <= this.#dupMarkSubmitted) return;
    this.#dupMarkSubmitted = through;
    this.#dupMarkWrite = this.#session.raiseDupMark(through);
    // Registered before any burst waits on it, so it runs before they are released.
    this.#dupMarkWrite.then(
      () => {
        if (through > this.#dupMarkStored) this.#dupMarkStored = through;
      },
      () => {}, // the bursts waiting on it report the failure
    );
  }

  async #refill(): Promise<void> {
    this.#refilling = true;
    const enqueueCount = this.#enqueueCount;
    let entries: OutboundEntry[];
    try {
      entries = await this.#readWindow(this.#lastSeq);
    } catch (error) {
      this.#refilling = false;
      this.#fail(error);
      return;
    }
    this.#refilling = false;
    if (this.#closed) return;
    for (const entry of entries) {
      this.#lastSeq = entry.seq;
      // Entries after the window were never in memory, so never sent: 'dup' here only means a
      // publish raised the DUP mark over them for a send that did not happen in this order.
      if (entry.state !== 'released') this.#window.push(entry);
    }
    this.#storeHasMore = this.#enqueueCount !== enqueueCount || this.#filled(entries);
    // Mark the new window now, so its fsync overlaps with sending what is already in flight.
    this.#markWindow();
    this.#pump();
  }

  /**
   * Reads the next window's worth of entries after `afterSeq` from the store: no more bytes than
   * read_window_bytes, nor than the broker-wide budget has left (at least one entry, whatever its
   * size, so every session makes progress).
   */
  async #readWindow(afterSeq: number): Promise<OutboundEntry[]> {
    const budget = this.#limits.windowBudget;
    if (!budget) {
      this.#readBytes = this.#limits.readWindowBytes;
      return this.#session.readQueue(afterSeq, this.#limits.readWindow, this.#readBytes);
    }
    // Held while the read runs, so reads of several sessions at once cannot all take what is left;
    // the entries that come are counted as they enter the window.
    const reserved = Math.max(0, Math.min(this.#limits.readWindowBytes, budget.available));
    this.#readBytes = Math.max(1, reserved);
    budget.take(reserved);
    try {
      return await this.#session.readQueue(afterSeq, this.#limits.readWindow, this.#readBytes);
    } finally {
      budget.give(reserved);
    }
  }

  /** Whether a read stopped at a window limit, so the store may hold more after it. */
  #filled(entries: OutboundEntry[]): boolean {
    if (entries.length >= this.#limits.readWindow) return true;
    let bytes = 0;
    for (const entry of entries) bytes += entry.message.payload.length;
    return bytes >= this.#readBytes;
  }

  #windowFull(): boolean {
    const budget = this.#limits.windowBudget;
    return (
      this.#window.length >= this.#limits.readWindow ||
      this.#window.bytes >= this.#limits.readWindowBytes ||
      (budget !== undefined && budget.available <= 0 && this.#window.length > 0)
    );
  }

  /**
   * Whether to read more now: the window is half empty, and the broker-wide budget has room (or the
   * window is empty: every session gets at least one entry at a time).
   */
  #windowWantsMore(): boolean {
    if (this.#window.length >= this.#limits.readWindow / 2 || this.#window.bytes >= this.#limits.readWindowBytes / 2) return false;
    const budget = this.#limits.windowBudget;
    return budget === undefined || budget.available > 0 || this.#window.length === 0;
  }

  /**
   * A store operation failed. The store still holds a consistent state (each transition is atomic);
   * ending the connection makes the client reconnect and the session reload from it. Once per
   * flow: the writes queued behind a failed one fail too, and the store reports the failure itself
   * (WriteFailures).
   */
  #fail(error: unknown): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    const message = errorMessage(error);
    const { clientId } = this.#session;
    summaryOf(this.#log).error(LogCauses.STORE_FAILURE, { message: `session ${JSON.stringify(clientId)}: ${message}; closing its connection`, fields: { clientId } });
    this.channel.end(`store failure: ${message}`, 'store-failure');
  }
}

/** About what the PUBLISH of an entry takes on the wire: payload, topic and headers. */
function publishSize(entry: OutboundEntry): number {
  return entry.message.payload.length + entry.message.topic.length + 8;
}

/** The PUBLISH of an entry not sent by this flow yet (it still holds its message). */
function toPacket({ entry, packetId }: Inflight, dup: boolean): OutgoingPublish {
  const message = entry.message!;
  const packet: OutgoingPublish = {
    topic: message.topic,
    payload: message.payload,
    qos: entry.qos,
    retain: entry.retain,
    dup,
    packetId,
  };
  if (message.properties) packet.properties = message.properties;
  if (entry.subscriptionIds) packet.subscriptionIds = entry.subscriptionIds;
  return packet;
}

/** A message past its Message Expiry Interval is never delivered [MQTT-3.3.2-5]. */
export function isExpired(message: Message, now = Date.now()): boolean {
  const expiresAt = message.properties?.expiresAt;
  return expiresAt !== undefined && expiresAt <= now;
}
